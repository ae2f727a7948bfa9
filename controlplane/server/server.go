package server

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/berth-io/berth/controlplane/accesspolicy"
	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/controlplane/cloudnode"
	"github.com/berth-io/berth/controlplane/crdinstall"
	"github.com/berth-io/berth/controlplane/eks"
	"github.com/berth-io/berth/controlplane/etcd"
	"github.com/berth-io/berth/controlplane/kube"
	"github.com/berth-io/berth/controlplane/pki"
	"github.com/berth-io/berth/deploy/crds"
)

// Server is a running control plane.
type Server struct {
	cfg Config
	log *slog.Logger

	pkiDir string
	certs  certs
}

type certs struct {
	ca, frontCA, etcdCA                        *pki.CA
	apiserver, kubeletClient, frontProxyClient *pki.Pair
	cm, sched, admin, superAdmin, webhook      *pki.Pair
	etcdServer, etcdClient                     *pki.Pair
	saKey                                      string
}

// AdminKubeconfig is the path of the admin kubeconfig in a data dir.
func AdminKubeconfig(dataDir string) string { return filepath.Join(dataDir, "admin.kubeconfig") }

// New prepares a server; Run starts it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log, pkiDir: filepath.Join(cfg.DataDir, "pki")}, nil
}

func (s *Server) path(p ...string) string {
	return filepath.Join(append([]string{s.cfg.DataDir}, p...)...)
}

// Run starts every part, writes admin.kubeconfig once /readyz passes, and
// serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	start := time.Now()
	if err := os.MkdirAll(s.pkiDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	logs := newLogRouter(s.log, s.path("logs"), s.cfg.LogTypes)
	defer logs.Close()
	loggers := map[string]*slog.Logger{}
	for _, t := range []string{"api", "authenticator", "controllerManager", "scheduler"} {
		l, err := logs.logger(t)
		if err != nil {
			return err
		}
		loggers[t] = l
	}
	// Global klog calls are the apiserver's; controller manager and
	// scheduler log through the contextual logger of their context.
	klog.SetSlogLogger(loggers["api"])

	host, port, _ := splitHostPort(s.cfg.Listen)
	advertise, err := s.advertiseIP(host)
	if err != nil {
		return err
	}
	if err := s.makeCerts(host, advertise); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	// Cancel before waiting: on an early error (the apiserver's port
	// taken, say) the goroutines run until the context ends.
	defer func() { cancel(); wg.Wait() }()
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	// etcd
	etcdServers := s.cfg.EtcdServers
	etcdTLS := etcd.TLS{CAFile: s.cfg.EtcdCAFile, CertFile: s.cfg.EtcdCertFile, KeyFile: s.cfg.EtcdKeyFile}
	if len(etcdServers) == 0 {
		m, err := etcd.Start(ctx, etcd.Config{
			DataDir: s.path("etcd"), ClientAddr: s.cfg.EtcdClientAddr, PeerAddr: s.cfg.EtcdPeerAddr,
			Server: etcd.TLS{CertFile: s.certs.etcdServer.CertFile, KeyFile: s.certs.etcdServer.KeyFile, CAFile: s.caFile("etcd-ca")},
			Log:    s.log.With("subsystem", "etcd"),
		})
		if err != nil {
			return err
		}
		// etcd stops last, once the apiserver and the rest have.
		defer func() { cancel(); wg.Wait(); m.Close() }()
		go func() {
			if err, ok := <-m.Err(); ok && err != nil {
				errc <- fmt.Errorf("etcd: %w", err)
			}
		}()
		etcdServers = []string{m.Endpoint}
		etcdTLS = etcd.TLS{CAFile: s.caFile("etcd-ca"), CertFile: s.certs.etcdClient.CertFile, KeyFile: s.certs.etcdClient.KeyFile}
		s.log.Info("etcd ready", "endpoint", m.Endpoint, "elapsed", time.Since(start).Round(time.Millisecond))
	}

	// AWS: STS for identities of the cluster creator, EC2 for node names.
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(s.cfg.Region))
	if err != nil {
		return fmt.Errorf("aws config: %w", err)
	}
	account, creator := s.callerIdentity(ctx, sts.NewFromConfig(awsCfg))

	// EKS state and the authenticator.
	c := s.clusterRecord(account, host, port, advertise)
	store, err := eks.Open(eks.StatePath(s.cfg.DataDir), c)
	if err != nil {
		return err
	}
	api := &eks.API{Store: store, Region: s.cfg.Region, Account: account, Creator: creator, Log: s.log.With("subsystem", "eks-api")}
	if s.cfg.BootstrapCreatorAdmin && creator != "" && store.Cluster().AuthenticationMode != authn.ModeConfigMap {
		if err := api.BootstrapCreator(creator); err != nil {
			return err
		}
	}
	ec2c := ec2.NewFromConfig(awsCfg)
	var awsAuth atomic.Pointer[authn.AWSAuth]
	a := &authn.Authenticator{
		ClusterID:  s.cfg.ClusterName,
		Endpoints:  s.stsEndpoints(),
		STS:        &http.Client{Timeout: 10 * time.Second},
		STSForward: s.stsForward(),
		Mode:       s.cfg.AuthenticationMode,
		AWSAuth:    awsAuth.Load,
		Entries:    store,
		EC2:        newEC2DNS(ec2c),
		Log:        loggers["authenticator"],
		// The mode can change through UpdateClusterConfig while running.
		CurrentMode: func() string { return store.Cluster().AuthenticationMode },
		Creator:     creator,
	}
	// Into the Kubernetes registry, so the apiserver's /metrics has them.
	if err := a.Register(legacyregistry.Registerer()); err != nil {
		return err
	}
	webhookAddr, err := s.serveTLS(goRun, "authenticator", "127.0.0.1:0", s.certs.webhook, a)
	if err != nil {
		return err
	}
	if err := s.writeWebhookKubeconfig(webhookAddr); err != nil {
		return err
	}

	// kube-apiserver
	goRun("kube-apiserver", func(ctx context.Context) error {
		return kube.RunAPIServer(ctx, s.apiserverArgs(host, port, advertise, etcdServers, etcdTLS))
	})
	// The process's own client is the only system:masters identity: it
	// must work before any RBAC binding exists.
	admin := s.restConfig(host, port, s.certs.superAdmin)
	if err := s.waitReady(ctx, admin, errc); err != nil {
		return err
	}
	s.log.Info("kube-apiserver ready", "elapsed", time.Since(start).Round(time.Millisecond))

	cmKubeconfig, err := s.writeKubeconfig("controller-manager.kubeconfig", host, port, "system:kube-controller-manager", s.certs.cm)
	if err != nil {
		return err
	}
	schedKubeconfig, err := s.writeKubeconfig("scheduler.kubeconfig", host, port, "system:kube-scheduler", s.certs.sched)
	if err != nil {
		return err
	}
	goRun("kube-controller-manager", func(ctx context.Context) error {
		ctx = klog.NewContext(ctx, logr.FromSlogHandler(loggers["controllerManager"].Handler()))
		return kube.RunControllerManager(ctx, s.controllerManagerArgs(cmKubeconfig))
	})
	goRun("kube-scheduler", func(ctx context.Context) error {
		ctx = klog.NewContext(ctx, logr.FromSlogHandler(loggers["scheduler"].Handler()))
		return kube.RunScheduler(ctx, s.schedulerArgs(schedKubeconfig))
	})

	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	if err := s.bootstrapRBAC(ctx, client); err != nil {
		return err
	}
	// EKS clusters come with the VPC CNI's ENIConfig CRD (custom
	// networking); PolicyEndpoint's is the policy controller's below.
	ext, err := apiextensionsclient.NewForConfig(admin)
	if err != nil {
		return fmt.Errorf("apiextensions client: %w", err)
	}
	if err := crdinstall.Install(ctx, ext, crds.ENIConfig); err != nil {
		return err
	}
	if s.cfg.BootstrapAddons {
		if err := s.installAddons(ctx, admin); err != nil {
			return err
		}
	}
	s.watchAWSAuth(ctx, client, &awsAuth)
	rec := &accesspolicy.Reconciler{Client: client, Store: store, Log: s.log.With("subsystem", "access-policy")}
	wg.Add(1)
	go func() { defer wg.Done(); rec.Run(ctx) }()
	if s.cfg.NetworkPolicyController {
		if err := s.startNetworkPolicyController(ctx, goRun, admin, client, ext); err != nil {
			return err
		}
	}
	if s.cfg.CloudNodeController {
		if err := s.startCloudNodeControllers(goRun, client, &cloudnode.Provider{EC2: ec2c, Region: awsCfg.Region}); err != nil {
			return err
		}
	}

	api.Keys = newKeyStore(s.log, account, s.cfg.EKSCredentialsFile)
	if _, err := s.serve(goRun, "eks-api", s.cfg.EKSListen, api); err != nil {
		return err
	}
	if s.cfg.MetricsAddr != "" {
		// The same registry as the apiserver's /metrics, without its
		// authentication, for a scraper on the host.
		if _, err := s.serve(goRun, "metrics", s.cfg.MetricsAddr, legacyregistry.Handler()); err != nil {
			return err
		}
	}
	if _, err := s.writeKubeconfig("admin.kubeconfig", host, port, "kubernetes-admin", s.certs.admin); err != nil {
		return err
	}
	if err := s.writeIAMKubeconfig(host, port); err != nil {
		return err
	}
	s.log.Info("control plane ready", "cluster", s.cfg.ClusterName, "endpoint", c.Endpoint, "eks-api", "http://"+s.cfg.EKSListen,
		"kubeconfig", AdminKubeconfig(s.cfg.DataDir), "elapsed", time.Since(start).Round(time.Millisecond))

	select {
	case <-ctx.Done():
		s.log.Info("shutting down")
		return nil
	case err := <-errc:
		cancel()
		return err
	}
}

func (s *Server) advertiseIP(host string) (string, error) {
	if s.cfg.AdvertiseAddress != "" {
		return s.cfg.AdvertiseAddress, nil
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		return ip.String(), nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("advertise address: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address for the kubernetes Service: set --advertise-address")
}

func (s *Server) caFile(name string) string { return filepath.Join(s.pkiDir, name+".crt") }

func (s *Server) makeCerts(host, advertise string) error {
	var err error
	c := &s.certs
	if c.ca, err = pki.LoadOrCreateCA(s.pkiDir, "ca", "kubernetes"); err != nil {
		return err
	}
	if c.frontCA, err = pki.LoadOrCreateCA(s.pkiDir, "front-proxy-ca", "front-proxy-ca"); err != nil {
		return err
	}
	if c.etcdCA, err = pki.LoadOrCreateCA(s.pkiDir, "etcd-ca", "etcd-ca"); err != nil {
		return err
	}
	svcIP, err := firstServiceIP(s.cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), svcIP, net.ParseIP(advertise)}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		ips = append(ips, ip)
	} else if host != "" && ip == nil {
		dns = append(dns, host)
	}
	if hn, err := os.Hostname(); err == nil {
		dns = append(dns, hn)
	}
	issue := []struct {
		dst  **pki.Pair
		ca   *pki.CA
		name string
		spec pki.Spec
	}{
		{&c.apiserver, c.ca, "apiserver", pki.Spec{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Server: true}},
		{&c.kubeletClient, c.ca, "apiserver-kubelet-client", pki.Spec{CommonName: "kube-apiserver-kubelet-client", Client: true}},
		{&c.cm, c.ca, "controller-manager", pki.Spec{CommonName: "system:kube-controller-manager", Client: true}},
		{&c.sched, c.ca, "scheduler", pki.Spec{CommonName: "system:kube-scheduler", Client: true}},
		// As kubeadm since 1.29: the user's admin identity is in a group bound
		// to cluster-admin, so it can be revoked; system:masters, which RBAC
		// cannot restrict, stays inside this process.
		{&c.admin, c.ca, "admin", pki.Spec{CommonName: "kubernetes-admin", Organization: []string{clusterAdminsGroup}, Client: true}},
		{&c.superAdmin, c.ca, "super-admin", pki.Spec{CommonName: "berth-controlplane", Organization: []string{"system:masters"}, Client: true}},
		{&c.webhook, c.ca, "authenticator", pki.Spec{CommonName: "berth-authenticator", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}},
		{&c.frontProxyClient, c.frontCA, "front-proxy-client", pki.Spec{CommonName: "front-proxy-client", Client: true}},
		{&c.etcdServer, c.etcdCA, "etcd-server", pki.Spec{CommonName: "etcd", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true}},
		{&c.etcdClient, c.etcdCA, "apiserver-etcd-client", pki.Spec{CommonName: "kube-apiserver-etcd-client", Client: true}},
	}
	for _, i := range issue {
		if *i.dst, err = i.ca.LoadOrIssue(s.pkiDir, i.name, i.spec); err != nil {
			return err
		}
	}
	c.saKey = filepath.Join(s.pkiDir, "sa.key")
	if _, err := pki.LoadOrCreateRSAKey(c.saKey); err != nil {
		return err
	}
	return nil
}

func firstServiceIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("service cidr: %w", err)
	}
	ip := n.IP.To4()
	out := net.IPv4(ip[0], ip[1], ip[2], ip[3]+1)
	return out, nil
}

func (s *Server) clusterRecord(account, host string, port int, advertise string) eks.Cluster {
	endpointHost := host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		endpointHost = advertise
	}
	issuer := s.cfg.ServiceIssuer
	if issuer == "" {
		issuer = fmt.Sprintf("https://oidc.eks.%s.amazonaws.com/id/%s", s.cfg.Region, clusterID(account, s.cfg.Region, s.cfg.ClusterName))
	}
	return eks.Cluster{
		Name:               s.cfg.ClusterName,
		ARN:                fmt.Sprintf("arn:aws:eks:%s:%s:cluster/%s", s.cfg.Region, account, s.cfg.ClusterName),
		Version:            s.cfg.KubernetesVersion,
		Endpoint:           "https://" + net.JoinHostPort(endpointHost, fmt.Sprint(port)),
		Status:             "ACTIVE",
		PlatformVersion:    "berth.1",
		CAData:             base64.StdEncoding.EncodeToString(s.certs.ca.CertPEM),
		ServiceIPv4CIDR:    s.cfg.ServiceCIDR,
		OIDCIssuer:         issuer,
		AuthenticationMode: s.cfg.AuthenticationMode,
		BootstrapAdmin:     s.cfg.BootstrapCreatorAdmin,
		LogTypes:           s.cfg.LogTypes,
	}
}

// callerIdentity asks STS who runs the control plane: its account names
// the cluster ARN, and its identity is the cluster creator.
func (s *Server) callerIdentity(ctx context.Context, c *sts.Client) (account, creator string) {
	account, creator = "000000000000", s.cfg.CreatorARN
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := c.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		s.log.Warn("sts GetCallerIdentity failed: the cluster creator gets no access entry unless --cluster-creator-arn is set", "err", err)
		return account, creator
	}
	account = *out.Account
	if creator == "" {
		if canon, err := authn.CanonicalARN(*out.Arn); err == nil {
			creator = canon
		}
	}
	return account, creator
}

func (s *Server) stsEndpoints() []authn.Endpoint {
	r := s.cfg.Region
	eps := []authn.Endpoint{{Host: "sts.amazonaws.com"}, {Host: "sts." + r + ".amazonaws.com"}, {Host: "sts-fips." + r + ".amazonaws.com"}, {Host: "sts." + r + ".api.aws"}}
	for _, e := range s.cfg.STSEndpoints {
		if u, err := url.Parse(e); err == nil {
			eps = append(eps, authn.Endpoint{Host: u.Host, Insecure: u.Scheme == "http"})
		}
	}
	return eps
}

// stsForward is the local STS that tokens for AWS's STS hosts are sent to
// when the control plane runs against one (STSEndpoints set): the first;
// nil on AWS.
func (s *Server) stsForward() *url.URL {
	if len(s.cfg.STSEndpoints) == 0 {
		return nil
	}
	u, err := url.Parse(s.cfg.STSEndpoints[0])
	if err != nil || u.Host == "" {
		return nil
	}
	return u
}

func (s *Server) apiserverArgs(host string, port int, advertise string, etcdServers []string, etcdTLS etcd.TLS) []string {
	c := &s.certs
	bind := host
	if bind == "" {
		bind = "0.0.0.0"
	}
	args := []string{
		"--bind-address=" + bind,
		fmt.Sprintf("--secure-port=%d", port),
		"--advertise-address=" + advertise,
		"--etcd-servers=" + strings.Join(etcdServers, ","),
		"--tls-cert-file=" + c.apiserver.CertFile,
		"--tls-private-key-file=" + c.apiserver.KeyFile,
		"--client-ca-file=" + s.caFile("ca"),
		"--kubelet-client-certificate=" + c.kubeletClient.CertFile,
		"--kubelet-client-key=" + c.kubeletClient.KeyFile,
		"--kubelet-preferred-address-types=InternalIP,InternalDNS,Hostname,ExternalIP",
		"--requestheader-client-ca-file=" + s.caFile("front-proxy-ca"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + c.frontProxyClient.CertFile,
		"--proxy-client-key-file=" + c.frontProxyClient.KeyFile,
		// The API server runs outside the cluster network, where no
		// kube-proxy carries cluster IPs: it reaches aggregated APIs and
		// webhooks on their endpoints' addresses (pods' VPC addresses).
		"--enable-aggregator-routing=true",
		"--service-account-issuer=" + s.clusterIssuer(),
		"--service-account-key-file=" + c.saKey,
		"--service-account-signing-key-file=" + c.saKey,
		"--api-audiences=https://kubernetes.default.svc,sts.amazonaws.com",
		"--service-cluster-ip-range=" + s.cfg.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--authentication-token-webhook-config-file=" + s.path("authenticator.kubeconfig"),
		"--authentication-token-webhook-version=v1",
		"--authentication-token-webhook-cache-ttl=30s",
		"--allow-privileged=true",
		"--profiling=false",
		"--enable-bootstrap-token-auth=true",
	}
	if etcdTLS.CAFile != "" {
		args = append(args, "--etcd-cafile="+etcdTLS.CAFile)
	}
	if etcdTLS.CertFile != "" {
		args = append(args, "--etcd-certfile="+etcdTLS.CertFile, "--etcd-keyfile="+etcdTLS.KeyFile)
	}
	if s.logType("audit") {
		args = append(args, "--audit-policy-file="+s.path("audit-policy.yaml"), "--audit-log-path="+s.path("logs", "audit.log"),
			"--audit-log-maxsize=100", "--audit-log-maxbackup=3")
	}
	return args
}

func (s *Server) clusterIssuer() string {
	if s.cfg.ServiceIssuer != "" {
		return s.cfg.ServiceIssuer
	}
	return "https://kubernetes.default.svc"
}

func (s *Server) logType(t string) bool {
	for _, l := range s.cfg.LogTypes {
		if l == t {
			return true
		}
	}
	return false
}

func (s *Server) controllerManagerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
		fmt.Sprintf("--leader-elect=%t", s.cfg.LeaderElect),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + s.certs.saKey,
		"--root-ca-file=" + s.caFile("ca"),
		"--cluster-signing-cert-file=" + s.caFile("ca"),
		"--cluster-signing-key-file=" + filepath.Join(s.pkiDir, "ca.key"),
		"--cluster-name=" + s.cfg.ClusterName,
		"--service-cluster-ip-range=" + s.cfg.ServiceCIDR,
		"--allocate-node-cidrs=false",
		"--controllers=*,bootstrapsigner,tokencleaner",
		// With service-account credentials each of its ~40 controllers
		// gets its account and a token at start: at the default 20 QPS
		// that throttles start-up to ~5 s before any controller runs.
		// The API server's priority and fairness still bounds the load.
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	}
}

func (s *Server) schedulerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
		fmt.Sprintf("--leader-elect=%t", s.cfg.LeaderElect),
		"--profiling=false",
	}
}

func (s *Server) restConfig(host string, port int, id *pki.Pair) *rest.Config {
	h := host
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = "127.0.0.1"
	}
	return &rest.Config{
		Host: "https://" + net.JoinHostPort(h, fmt.Sprint(port)),
		TLSClientConfig: rest.TLSClientConfig{
			CAData: s.certs.ca.CertPEM, CertData: id.CertPEM, KeyData: id.KeyPEM,
		},
		QPS: 50, Burst: 100,
	}
}

func (s *Server) waitReady(ctx context.Context, cfg *rest.Config, errc <-chan error) error {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	client.Timeout = 5 * time.Second
	deadline := time.Now().Add(3 * time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("kube-apiserver not ready after 3m")
		}
	}
}

func (s *Server) writeKubeconfig(name, host string, port int, user string, id *pki.Pair) (string, error) {
	cfg := s.restConfig(host, port, id)
	kc := clientcmdapi.NewConfig()
	kc.Clusters[s.cfg.ClusterName] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: s.certs.ca.CertPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: id.CertPEM, ClientKeyData: id.KeyPEM}
	kc.Contexts[user+"@"+s.cfg.ClusterName] = &clientcmdapi.Context{Cluster: s.cfg.ClusterName, AuthInfo: user}
	kc.CurrentContext = user + "@" + s.cfg.ClusterName
	return s.writeConfig(name, kc)
}

func (s *Server) writeConfig(name string, kc *clientcmdapi.Config) (string, error) {
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return "", fmt.Errorf("kubeconfig %s: %w", name, err)
	}
	p := s.path(name)
	return p, pki.WriteFile(p, b, 0o600)
}

// writeIAMKubeconfig writes a kubeconfig that authenticates with an IAM
// identity through `berth token`, as `aws eks update-kubeconfig` would.
func (s *Server) writeIAMKubeconfig(host string, port int) error {
	cfg := s.restConfig(host, port, s.certs.admin)
	kc := clientcmdapi.NewConfig()
	kc.Clusters[s.cfg.ClusterName] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: s.certs.ca.CertPEM}
	exec := &clientcmdapi.ExecConfig{
		APIVersion: "client.authentication.k8s.io/v1", Command: "berth",
		Args:            []string{"token", "--cluster-name", s.cfg.ClusterName, "--region", s.cfg.Region},
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}
	if ep := os.Getenv("AWS_ENDPOINT_URL"); ep != "" {
		exec.Env = []clientcmdapi.ExecEnvVar{{Name: "AWS_ENDPOINT_URL", Value: ep}}
	}
	kc.AuthInfos["iam"] = &clientcmdapi.AuthInfo{Exec: exec}
	kc.Contexts["iam@"+s.cfg.ClusterName] = &clientcmdapi.Context{Cluster: s.cfg.ClusterName, AuthInfo: "iam"}
	kc.CurrentContext = "iam@" + s.cfg.ClusterName
	_, err := s.writeConfig("iam.kubeconfig", kc)
	return err
}

func (s *Server) writeWebhookKubeconfig(addr string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["authenticator"] = &clientcmdapi.Cluster{Server: "https://" + addr + "/authenticate", CertificateAuthorityData: s.certs.ca.CertPEM}
	kc.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["webhook"] = &clientcmdapi.Context{Cluster: "authenticator", AuthInfo: "apiserver"}
	kc.CurrentContext = "webhook"
	if _, err := s.writeConfig("authenticator.kubeconfig", kc); err != nil {
		return err
	}
	if s.logType("audit") {
		policy := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: [/healthz*, /readyz*, /livez*, /version]\n- level: Metadata\n"
		if err := os.MkdirAll(s.path("logs"), 0o700); err != nil {
			return err
		}
		return pki.WriteFile(s.path("audit-policy.yaml"), []byte(policy), 0o600)
	}
	return nil
}

func (s *Server) serveTLS(goRun func(string, func(context.Context) error), name, addr string, id *pki.Pair, h http.Handler) (string, error) {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s listen: %w", name, err)
	}
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	return s.serveOn(goRun, name, ln, h), nil
}

func (s *Server) serve(goRun func(string, func(context.Context) error), name, addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s listen: %w", name, err)
	}
	return s.serveOn(goRun, name, ln, h), nil
}

// serveOn serves h on ln until the run's context ends.
func (s *Server) serveOn(goRun func(string, func(context.Context) error), name string, ln net.Listener, h http.Handler) string {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	goRun(name, func(ctx context.Context) error {
		go func() { <-ctx.Done(); srv.Close() }()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return ln.Addr().String()
}

// clusterAdminsGroup is the group of admin.kubeconfig's identity.
const clusterAdminsGroup = "berth:cluster-admins"

// bootstrapRBAC grants what the control plane needs out of the box: the
// apiserver may reach kubelets, and admin.kubeconfig's group is
// cluster-admin.
func (s *Server) bootstrapRBAC(ctx context.Context, c kubernetes.Interface) error {
	bindings := []*rbacv1.ClusterRoleBinding{{
		ObjectMeta: metav1.ObjectMeta{Name: "berth:apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "kube-apiserver-kubelet-client"}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: clusterAdminsGroup},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: clusterAdminsGroup}},
	}}
	for _, crb := range bindings {
		_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("bootstrap rbac %s: %w", crb.Name, err)
		}
	}
	return nil
}

// watchAWSAuth keeps the parsed kube-system/aws-auth ConfigMap current. A
// ConfigMap that does not parse keeps the last good mapping and is logged,
// so a typo cannot lock every node out at once.
func (s *Server) watchAWSAuth(ctx context.Context, c kubernetes.Interface, dst *atomic.Pointer[authn.AWSAuth]) {
	f := informers.NewSharedInformerFactoryWithOptions(c, 10*time.Minute, informers.WithNamespace("kube-system"),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", "aws-auth").String()
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	set := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		m, err := authn.ParseAWSAuth(cm.Data)
		if err != nil {
			s.log.Error("aws-auth ConfigMap ignored, keeping the previous mapping", "err", err)
			return
		}
		dst.Store(m)
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, n any) { set(n) },
		DeleteFunc: func(any) { dst.Store(nil) },
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
}
