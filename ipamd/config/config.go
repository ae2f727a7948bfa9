// Package config reads ipamd's settings from the environment, with the
// names and meanings of the Amazon VPC CNI's aws-node DaemonSet, so
// existing manifests keep working. A value the VPC CNI ignores (logging it
// and using the default) is ignored here too, with a warning; a value that
// stops aws-node from starting is an error, and Load reports every such
// error at once.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-io/berth/internal/vethprefix"
)

// Config is ipamd's configuration.
type Config struct {
	WarmENITarget    int // WARM_ENI_TARGET, default 1
	WarmIPTarget     int // WARM_IP_TARGET, 0 = unset
	MinimumIPTarget  int // MINIMUM_IP_TARGET, 0 = unset
	WarmPrefixTarget int // WARM_PREFIX_TARGET, default 1 with prefix delegation
	PrefixDelegation bool
	MaxENI           int // MAX_ENI, -1 = the instance type's limit
	IPCooldown       time.Duration
	ExternalSNAT     bool
	ExcludeSNATCIDRs []netip.Prefix
	// NodePortSupport is AWS_VPC_CNI_NODE_PORT_SUPPORT (default true): the
	// connmark that sends replies of NodePort connections through the
	// primary ENI.
	NodePortSupport bool
	// ExternalServiceCIDRs is AWS_EXTERNAL_SERVICE_CIDRS: destinations
	// always routed through the main table (rule priority 1535).
	ExternalServiceCIDRs []netip.Prefix
	// RandomizeSNAT is AWS_VPC_K8S_CNI_RANDOMIZESNAT: "prng" (the default,
	// fully random ports), "hashrandom" (hash-based random ports) or "none".
	RandomizeSNAT string
	// ConnMark is AWS_VPC_K8S_CNI_CONNMARK, the mark (and mask) of pod
	// connections SNATed through the primary interface; default 0x80.
	ConnMark uint32
	MTU      int // AWS_VPC_ENI_MTU: the ENIs' MTU
	// PodMTU is POD_MTU, the MTU of the pod's veth; it defaults to MTU.
	PodMTU                  int
	VethPrefix              string
	DisableLeakedENICleanup bool
	// ManageUntaggedENIs is MANAGE_UNTAGGED_ENI (default true); false
	// leaves alone attached ENIs ipamd did not create (no instance_id tag of
	// this instance) unless tagged no_manage=false.
	ManageUntaggedENIs bool
	// NoProvisioning is DISABLE_NETWORK_RESOURCE_PROVISIONING: ipamd makes
	// no EC2 changes (no ENIs, addresses or prefixes allocated or freed, no
	// leaked-ENI cleanup) and uses what is attached, for nodes provisioned
	// by something else.
	NoProvisioning bool
	// IMDSOnly is ENABLE_IMDS_ONLY_MODE: no EC2 API call at all, not even
	// to list the node\'s ENIs (IMDS does); implies NoProvisioning.
	IMDSOnly        bool
	SubnetDiscovery bool // ENABLE_SUBNET_DISCOVERY, default true
	// MultiNIC is ENABLE_MULTI_NIC: ipamd also keeps a pool on each network
	// card above 0, and a pod annotated k8s.amazonaws.com/nicConfig:
	// multi-nic-attachment gets one interface per card.
	MultiNIC          bool
	AdditionalENITags map[string]string
	// ClusterName is CLUSTER_NAME: ENIs are tagged with it and the leaked-ENI
	// cleanup only considers ENIs of this cluster.
	ClusterName string
	// MaxPods overrides the computed max pods (berth: MAX_PODS).
	MaxPods int
	// AddWait is how long AddNetwork waits for an address (berth:
	// ADD_WAIT_TIMEOUT, default 30s, at most MaxAddWait).
	AddWait time.Duration
	// PluginLogFile and PluginLogLevel go into the conflist for berth-cni
	// (AWS_VPC_K8S_PLUGIN_LOG_FILE: a path or "stderr"; default
	// /var/log/aws-routed-eni/plugin.log; AWS_VPC_K8S_PLUGIN_LOG_LEVEL,
	// default Debug).
	PluginLogFile  string
	PluginLogLevel string
	// BandwidthPlugin chains the bandwidth plugin (ENABLE_BANDWIDTH_PLUGIN),
	// so pods' kubernetes.io/{ingress,egress}-bandwidth annotations apply.
	BandwidthPlugin bool
	// DisablePodV6 chains the tuning plugin to switch IPv6 off in the pod
	// (DISABLE_POD_V6).
	DisablePodV6 bool
	// CustomNetworking is AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG: pods get
	// addresses from ENIs in the subnet (and with the security groups) of
	// the node's ENIConfig, never from the primary ENI. The ENIConfig's
	// name is the node's label vpc.amazonaws.com/externalEniConfig, its
	// annotation ENIConfigAnnotationDef (ENI_CONFIG_ANNOTATION_DEF), its
	// label ENIConfigLabelDef (ENI_CONFIG_LABEL_DEF), or "default".
	CustomNetworking       bool
	ENIConfigAnnotationDef string
	ENIConfigLabelDef      string
	// AnnotatePodIP is ANNOTATE_POD_IP: an ADD succeeds once the pod is
	// annotated vpc.amazonaws.com/pod-ips with its address.
	AnnotatePodIP bool
	// ClusterEndpoint is CLUSTER_ENDPOINT: the API server's address for the
	// in-cluster configuration, so ipamd need not wait for kube-proxy.
	ClusterEndpoint string
	// EC2Endpoint is AWS_EC2_ENDPOINT: EC2's endpoint URL, for a VPC
	// endpoint or a partition the SDK does not know.
	EC2Endpoint string
	// HTTPTimeout is HTTP_TIMEOUT: how long one request to AWS may take
	// (whole seconds, at least 10; default 10 s, as in the VPC CNI).
	HTTPTimeout time.Duration
	// NodeName is MY_NODE_NAME, the node's name in Kubernetes.
	NodeName string
	// ManageENIsNonSchedulable is AWS_MANAGE_ENIS_NON_SCHEDULABLE (default
	// false: on a cordoned node ipamd neither attaches ENIs or addresses
	// nor frees ENIs; it needs MY_NODE_NAME and the API to know).
	ManageENIsNonSchedulable bool
	// NetworkPolicyMode is told to the plugin (NETWORK_POLICY_ENFORCING_MODE);
	// empty when unset, which tells a VPC CNI plugin there is no policy agent.
	NetworkPolicyMode string
}

// Getenv is how the environment is read (os.Getenv in production).
type Getenv func(string) string

// Defaults of the VPC CNI.
const (
	DefaultMTU      = 9001
	minMTU          = 576 // IPv4's minimum; berth runs IPv4 pods only
	DefaultConnMark = 0x80
	// DefaultHTTPTimeout bounds one AWS request, as the VPC CNI's does.
	DefaultHTTPTimeout = 10 * time.Second
	// DefaultPluginLogFile and DefaultPluginLogLevel are aws-node's.
	DefaultPluginLogFile  = "/var/log/aws-routed-eni/plugin.log"
	DefaultPluginLogLevel = "Debug"
	// DefaultENIConfigKey is the VPC CNI's default annotation and label
	// naming a node's ENIConfig.
	DefaultENIConfigKey = "k8s.amazonaws.com/eniConfig"
	// ReservedTagKey may not appear in an ADDITIONAL_ENI_TAGS key: the VPC
	// CNI's own tags use it.
	ReservedTagKey = "k8s.amazonaws.com"
)

// FromEnv is Load without logging: ignored values go unreported.
func FromEnv(get Getenv) (Config, error) { return Load(get, nil) }

// Load parses the environment (os.Getenv when get is nil), logging each
// value it ignores on log (nil discards). It returns every error found.
func Load(get Getenv, log *slog.Logger) (Config, error) {
	if get == nil {
		get = os.Getenv
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := parser{get: get, log: log}
	c := Config{WarmENITarget: 1, MaxENI: -1, IPCooldown: 30 * time.Second, RandomizeSNAT: "prng",
		ConnMark: DefaultConnMark, MTU: DefaultMTU, VethPrefix: "eni", SubnetDiscovery: true, AddWait: 30 * time.Second,
		NodePortSupport: true, PluginLogFile: DefaultPluginLogFile, PluginLogLevel: DefaultPluginLogLevel,
		ENIConfigAnnotationDef: DefaultENIConfigKey, ENIConfigLabelDef: DefaultENIConfigKey, ManageUntaggedENIs: true}

	// The VPC CNI reads the pool knobs with Atoi and treats an unparseable
	// or negative value as unset, and MAX_ENI below 1 as "no cap".
	p.lenientInt("WARM_ENI_TARGET", &c.WarmENITarget, 0)
	p.lenientInt("WARM_IP_TARGET", &c.WarmIPTarget, 0)
	p.lenientInt("MINIMUM_IP_TARGET", &c.MinimumIPTarget, 0)
	p.lenientBool("ENABLE_PREFIX_DELEGATION", &c.PrefixDelegation)
	if c.PrefixDelegation {
		c.WarmPrefixTarget = 1
	}
	p.lenientInt("WARM_PREFIX_TARGET", &c.WarmPrefixTarget, 0)
	p.lenientInt("MAX_ENI", &c.MaxENI, 1)
	p.duration("IP_COOLDOWN_PERIOD", &c.IPCooldown)

	p.lenientBool("AWS_VPC_K8S_CNI_EXTERNALSNAT", &c.ExternalSNAT)
	c.ExcludeSNATCIDRs = p.ipv4CIDRs("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")
	p.lenientBool("AWS_VPC_CNI_NODE_PORT_SUPPORT", &c.NodePortSupport)
	c.ExternalServiceCIDRs = p.ipv4CIDRs("AWS_EXTERNAL_SERVICE_CIDRS")
	switch v := p.value("AWS_VPC_K8S_CNI_RANDOMIZESNAT"); v {
	case "":
	case "prng", "hashrandom", "none":
		c.RandomizeSNAT = v
	default:
		p.ignore("AWS_VPC_K8S_CNI_RANDOMIZESNAT", v, "want prng, hashrandom or none", "prng")
	}
	if v := p.value("AWS_VPC_K8S_CNI_CONNMARK"); v != "" {
		// Any base Go accepts (0x80, 128, 0o200), as the VPC CNI parses it.
		m, err := strconv.ParseInt(v, 0, 64)
		if err != nil || m <= 0 || m > math.MaxUint32 {
			p.ignore("AWS_VPC_K8S_CNI_CONNMARK", v, "want a mark in 1..0xffffffff", fmt.Sprintf("%#x", DefaultConnMark))
		} else {
			c.ConnMark = uint32(m)
		}
	}

	// aws-node's entrypoint refuses to start on a bad MTU or veth prefix.
	p.mtu("AWS_VPC_ENI_MTU", &c.MTU)
	c.PodMTU = c.MTU
	p.mtu("POD_MTU", &c.PodMTU)
	if v := p.value("AWS_VPC_K8S_CNI_VETHPREFIX"); v != "" {
		if err := vethprefix.Check(v); err != nil {
			p.fail("AWS_VPC_K8S_CNI_VETHPREFIX", v, err.Error())
		} else {
			c.VethPrefix = v
		}
	}

	p.lenientBool("DISABLE_LEAKED_ENI_CLEANUP", &c.DisableLeakedENICleanup)
	p.lenientBool("MANAGE_UNTAGGED_ENI", &c.ManageUntaggedENIs)
	p.lenientBool("DISABLE_NETWORK_RESOURCE_PROVISIONING", &c.NoProvisioning)
	p.lenientBool("ENABLE_IMDS_ONLY_MODE", &c.IMDSOnly)
	if c.IMDSOnly {
		c.NoProvisioning = true
	}
	if c.NoProvisioning {
		c.DisableLeakedENICleanup = true // as the VPC CNI: nothing is deleted either
	}
	p.lenientBool("ENABLE_SUBNET_DISCOVERY", &c.SubnetDiscovery)
	p.lenientBool("ENABLE_MULTI_NIC", &c.MultiNIC)
	c.AdditionalENITags = p.eniTags("ADDITIONAL_ENI_TAGS")
	c.ClusterName = p.value("CLUSTER_NAME")

	// The conflist's: the plugin's log, and the plugins chained after it.
	switch v := p.value("AWS_VPC_K8S_PLUGIN_LOG_FILE"); {
	case v == "":
	case v == "stdout":
		// The runtime reads the plugin's result from its stdout; aws-node
		// refuses to start on it too.
		p.fail("AWS_VPC_K8S_PLUGIN_LOG_FILE", v, "the plugin's stdout carries its result; want stderr or a file path")
	case v == "stderr" || strings.HasPrefix(v, "/"):
		c.PluginLogFile = v
	default:
		p.ignore("AWS_VPC_K8S_PLUGIN_LOG_FILE", v, "want stderr or an absolute file path", DefaultPluginLogFile)
	}
	switch v := p.value("AWS_VPC_K8S_PLUGIN_LOG_LEVEL"); strings.ToLower(v) {
	case "":
	case "debug", "info", "warn", "error":
		c.PluginLogLevel = v
	default:
		p.ignore("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", v, "want DEBUG, INFO, WARN or ERROR", DefaultPluginLogLevel)
	}
	p.lenientBool("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", &c.CustomNetworking)
	if v := p.value("ENI_CONFIG_ANNOTATION_DEF"); v != "" {
		c.ENIConfigAnnotationDef = v
	}
	if v := p.value("ENI_CONFIG_LABEL_DEF"); v != "" {
		c.ENIConfigLabelDef = v
	}
	c.NodeName = p.value("MY_NODE_NAME")
	p.lenientBool("AWS_MANAGE_ENIS_NON_SCHEDULABLE", &c.ManageENIsNonSchedulable)
	p.lenientBool("ANNOTATE_POD_IP", &c.AnnotatePodIP)
	if v := p.value("CLUSTER_ENDPOINT"); v != "" {
		if u, err := url.Parse(v); err != nil || u.Scheme != "https" || u.Host == "" {
			p.fail("CLUSTER_ENDPOINT", v, "want an https URL")
		} else {
			c.ClusterEndpoint = v
		}
	}
	if v := p.value("AWS_EC2_ENDPOINT"); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.fail("AWS_EC2_ENDPOINT", v, "want an http(s) URL")
		} else {
			c.EC2Endpoint = v
		}
	}
	// aws-node reads whole seconds and takes anything below 10 s, or not a
	// number, as its default.
	c.HTTPTimeout = DefaultHTTPTimeout
	if v := p.value("HTTP_TIMEOUT"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 10 {
			p.ignore("HTTP_TIMEOUT", v, "want whole seconds, at least 10", DefaultHTTPTimeout.String())
		} else {
			c.HTTPTimeout = time.Duration(n) * time.Second
		}
	}
	if c.CustomNetworking && c.NodeName == "" {
		// The node's ENIConfig is found through its Node object.
		p.fail("MY_NODE_NAME", "", "required with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true")
	}
	p.lenientBool("ENABLE_BANDWIDTH_PLUGIN", &c.BandwidthPlugin)
	p.lenientBool("DISABLE_POD_V6", &c.DisablePodV6)

	// Modes of the VPC CNI that berth-ipamd does not have. Starting anyway
	// would give pods something else than the manifest asks for (IPv4
	// addresses in an IPv6 cluster, the node's security groups instead of
	// their own), so these stop it, as a bad MTU does.
	for _, m := range []struct {
		name string
		on   bool // the value that asks for the mode
		why  string
	}{
		{"ENABLE_IPv6", true, "berth-ipamd gives pods IPv4 addresses only"},
		{"ENABLE_IPv4", false, "berth-ipamd gives pods IPv4 addresses only"},
		{"ENABLE_POD_ENI", true, "security groups for pods (branch ENIs) are not supported; see ipamd/README.md"},
	} {
		v := p.value(m.name)
		if b, err := strconv.ParseBool(v); err == nil && b == m.on {
			p.fail(m.name, v, m.why)
		}
	}
	// aws-node itself starts without IPv6 egress where the node has no
	// IPv6 address, with a warning: pods keep their IPv4 network.
	var v6Egress bool
	if p.lenientBool("ENABLE_V6_EGRESS", &v6Egress); v6Egress {
		p.ignore("ENABLE_V6_EGRESS", "true", "IPv6 egress for IPv4 pods is not supported", "false")
	}

	// berth's own knobs: strict, as nothing depends on them being lenient.
	if v := p.value("MAX_PODS"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			p.fail("MAX_PODS", v, "want an integer >= 0")
		} else {
			c.MaxPods = n
		}
	}
	p.duration("ADD_WAIT_TIMEOUT", &c.AddWait)
	if c.AddWait > MaxAddWait {
		// berth-cni gives ipamd 60 s; a longer wait would always end in
		// its hang-up, with a timeout in place of the reason.
		p.fail("ADD_WAIT_TIMEOUT", p.value("ADD_WAIT_TIMEOUT"), fmt.Sprintf("at most %s (berth-cni waits 60 s for ipamd's answer)", MaxAddWait))
	}
	// aws-node stops on an unknown mode; "none" is accepted and means the
	// same as unset to a plugin.
	switch v := p.value("NETWORK_POLICY_ENFORCING_MODE"); v {
	case "", "none":
	case "standard", "strict":
		c.NetworkPolicyMode = v
	default:
		p.fail("NETWORK_POLICY_ENFORCING_MODE", v, "want none, standard or strict")
	}
	return c, errors.Join(p.errs...)
}

// parser reads variables, collecting errors and logging ignored values.
type parser struct {
	get  Getenv
	log  *slog.Logger
	errs []error
}

func (p *parser) value(name string) string { return strings.TrimSpace(p.get(name)) }

func (p *parser) fail(name, v, want string) {
	p.errs = append(p.errs, fmt.Errorf("%s=%q: %s", name, v, want))
}

func (p *parser) ignore(name, v, why, using string) {
	p.log.Warn("ignoring an invalid setting, as the VPC CNI does", "variable", name, "value", v, "reason", why, "using", using)
}

// lenientInt sets *dst to the variable when it is an integer >= min, and
// otherwise keeps the default with a warning.
func (p *parser) lenientInt(name string, dst *int, min int) {
	v := p.value(name)
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		p.ignore(name, v, fmt.Sprintf("want an integer >= %d", min), strconv.Itoa(*dst))
		return
	}
	*dst = n
}

// lenientBool is strconv.ParseBool, keeping the default on anything else.
func (p *parser) lenientBool(name string, dst *bool) {
	v := p.value(name)
	if v == "" {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.ignore(name, v, "want true or false", strconv.FormatBool(*dst))
		return
	}
	*dst = b
}

// duration takes whole seconds (the VPC CNI's form) or a Go duration.
// MaxAddWait bounds ADD_WAIT_TIMEOUT below berth-cni's 60 s for the whole
// ADD, which also waits for the attachment's lock and ANNOTATE_POD_IP's
// patch (up to 10 s).
const MaxAddWait = 45 * time.Second

func (p *parser) duration(name string, dst *time.Duration) {
	v := p.value(name)
	if v == "" {
		return
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		*dst = time.Duration(n) * time.Second
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.fail(name, v, "want seconds or a duration")
		return
	}
	*dst = d
}

func (p *parser) mtu(name string, dst *int) {
	v := p.value(name)
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < minMTU || n > DefaultMTU {
		p.fail(name, v, fmt.Sprintf("want an integer in %d..%d", minMTU, DefaultMTU))
		return
	}
	*dst = n
}

// ipv4CIDRs parses a comma-separated list, skipping (with a warning) each
// entry that is not an IPv4 CIDR, an empty one included.
func (p *parser) ipv4CIDRs(name string) []netip.Prefix {
	v := p.value(name)
	if v == "" {
		return nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		pfx, err := netip.ParsePrefix(s)
		if err != nil || !pfx.Addr().Is4() {
			p.ignore(name, s, "not an IPv4 CIDR", "the other entries")
			continue
		}
		out = append(out, pfx.Masked())
	}
	return out
}

// eniTags parses a JSON object of strings. Invalid JSON drops every tag;
// a key containing the reserved k8s.amazonaws.com drops that key.
func (p *parser) eniTags(name string) map[string]string {
	v := p.value(name)
	if v == "" {
		return nil
	}
	var tags map[string]string
	if err := json.Unmarshal([]byte(v), &tags); err != nil {
		p.ignore(name, v, "want a JSON object of strings: "+err.Error(), "no additional tags")
		return nil
	}
	for k := range tags {
		if strings.Contains(k, ReservedTagKey) {
			p.ignore(name, k, "the key contains the reserved "+ReservedTagKey, "the other tags")
			delete(tags, k)
		}
	}
	return tags
}
