// Package server composes berth-controlplane: PKI, etcd (embedded or
// external), kube-apiserver, kube-controller-manager and kube-scheduler in
// one process, the IAM token webhook, the access-policy RBAC reconciler and
// the EKS management API.
package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/deploy/addons"
)

// Config is the command line of berth-controlplane serve.
type Config struct {
	DataDir     string
	ClusterName string
	// Listen is the apiserver's host:port.
	Listen string
	// AdvertiseAddress is the IP the kubernetes Service points at (default:
	// the listen IP, or the host's first non-loopback IP when listening on
	// loopback, since a Service endpoint cannot be a loopback address).
	AdvertiseAddress string
	EKSListen        string
	// EKSCredentialsFile holds the keys EKS API signatures are checked
	// against (default: the AWS shared-credentials file).
	EKSCredentialsFile string
	MetricsAddr        string

	// EtcdServers selects an external etcd cluster; empty embeds one.
	EtcdServers                           []string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EtcdClientAddr and EtcdPeerAddr are the embedded member's loopback ports.
	EtcdClientAddr, EtcdPeerAddr string

	Region             string
	AuthenticationMode string
	// BootstrapCreatorAdmin gives the identity that started the cluster an
	// access entry with AmazonEKSClusterAdminPolicy, as EKS does by default.
	BootstrapCreatorAdmin bool
	CreatorARN            string
	// STSEndpoints are the STS endpoints tokens may be presigned for
	// besides the AWS ones (localcloud's listeners in local mode: loopback
	// for the host's users, the host address for nodes); http is allowed
	// only here. Tokens for AWS's STS hosts go to the first.
	STSEndpoints      []string
	ServiceCIDR       string
	ServiceIssuer     string
	LogTypes          []string
	KubernetesVersion string
	// LeaderElect makes controller manager and scheduler take a lease, for
	// several replicas over one external etcd.
	LeaderElect bool
	// NetworkPolicyController runs the NetworkPolicy → PolicyEndpoint
	// controller (and installs the PolicyEndpoint CRD).
	NetworkPolicyController bool
	// CloudNodeController runs the cloud controller manager's node and node
	// lifecycle controllers against EC2, as EKS does: they initialize the
	// Nodes of kubelets started with --cloud-provider=external.
	CloudNodeController bool
	// NetworkPolicyChunkSize is the most items per PolicyEndpoint (0: 200).
	NetworkPolicyChunkSize int
	// BootstrapAddons installs CoreDNS (Deployment coredns, Service
	// kube-dns) as EKS's bootstrapSelfManagedAddons does, from
	// CoreDNSImage.
	BootstrapAddons bool
	CoreDNSImage    string
	// MetricsServerImage, when set, installs metrics-server (EKS's
	// optional add-on) from it.
	MetricsServerImage string
}

// LogTypes are the control-plane log types EKS offers.
var LogTypes = []string{"api", "audit", "authenticator", "controllerManager", "scheduler"}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []string
	if c.DataDir == "" {
		errs = append(errs, "--data-dir is required")
	}
	if c.ClusterName == "" {
		errs = append(errs, "--cluster-name is required")
	} else if len(c.ClusterName) > 100 || !validClusterName(c.ClusterName) {
		errs = append(errs, fmt.Sprintf("--cluster-name %q: 1-100 characters, letters, digits, '-' and '_', starting with a letter or digit", c.ClusterName))
	}
	for flag, addr := range map[string]string{"--listen": c.Listen, "--eks-listen": c.EKSListen} {
		if _, _, err := splitHostPort(addr); err != nil {
			errs = append(errs, fmt.Sprintf("%s %q: %v", flag, addr, err))
		}
	}
	if !authn.ValidMode(c.AuthenticationMode) {
		errs = append(errs, fmt.Sprintf("--authentication-mode %q: one of CONFIG_MAP, API, API_AND_CONFIG_MAP", c.AuthenticationMode))
	}
	if _, n, err := net.ParseCIDR(c.ServiceCIDR); err != nil || n.IP.To4() == nil {
		errs = append(errs, fmt.Sprintf("--service-cidr %q: an IPv4 CIDR", c.ServiceCIDR))
	}
	for _, t := range c.LogTypes {
		if !slices.Contains(LogTypes, t) {
			errs = append(errs, fmt.Sprintf("--log-types: %q is not one of %s", t, strings.Join(LogTypes, ", ")))
		}
	}
	for _, s := range c.EtcdServers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Sprintf("--etcd-servers: %q is not an http(s) URL", s))
		}
	}
	if c.AdvertiseAddress != "" && net.ParseIP(c.AdvertiseAddress) == nil {
		errs = append(errs, fmt.Sprintf("--advertise-address %q is not an IP", c.AdvertiseAddress))
	}
	for _, e := range c.STSEndpoints {
		if u, err := url.Parse(e); err != nil || u.Host == "" {
			errs = append(errs, fmt.Sprintf("STS endpoint %q is not a URL", e))
		}
	}
	if err := addons.CheckImage(c.CoreDNSImage); c.BootstrapAddons && err != nil {
		errs = append(errs, "--coredns-image: "+err.Error())
	}
	if err := addons.CheckImage(c.MetricsServerImage); c.MetricsServerImage != "" && err != nil {
		errs = append(errs, "--metrics-server-image: "+err.Error())
	}
	if c.MetricsServerImage != "" && !c.BootstrapAddons {
		errs = append(errs, "--metrics-server-image needs --bootstrap-self-managed-addons")
	}
	if c.NetworkPolicyChunkSize < 0 {
		errs = append(errs, fmt.Sprintf("--network-policy-endpoint-chunk-size %d: must be positive", c.NetworkPolicyChunkSize))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

func validClusterName(s string) bool {
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_'))
		if !ok {
			return false
		}
	}
	return true
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}

// clusterID is a stable 32-hex-digit ID, as in EKS OIDC issuer URLs.
func clusterID(account, region, name string) string {
	h := sha256.Sum256([]byte(account + "/" + region + "/" + name))
	return strings.ToUpper(hex.EncodeToString(h[:16]))
}
