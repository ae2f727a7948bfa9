package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/internal/metrics"
	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/unixsock"
	"github.com/berth-io/berth/internal/version"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/hostnet"
	"github.com/berth-io/berth/ipamd/introspect"
	"github.com/berth-io/berth/ipamd/kube"
	"github.com/berth-io/berth/ipamd/pool"
	"github.com/berth-io/berth/ipamd/server"
	"github.com/berth-io/berth/proto/rpc"
)

// HealthService is the gRPC health service name the VPC CNI uses.
const HealthService = "grpc.health.v1.aws-node"

type flags struct {
	cniBinDir, cniConfDir, socket, stateDir string
	datapathSocket                          string
	introspectionAddr, metricsAddr          string
	chainPortmap                            bool
	cniVersion                              string
	npaSocket                               string
	kubeconfig                              string
	logFile                                 string
	checkpoint                              string
}

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-ipamd", "Node IPAM daemon: VPC IP addresses for every pod")
	var f flags
	closeLog := func() error { return nil }
	// The logger is built from the command's error writer: point it at
	// --log-file first.
	pre := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		w, closer, err := logWriter(f.logFile)
		if err != nil {
			return err
		}
		cmd.SetErr(w)
		if err := pre(cmd, args); err != nil {
			_ = closer()
			return err
		}
		closeLog = closer
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		defer func() { _ = closeLog() }()
		log := logger()
		err := run(cmd.Context(), f, log)
		if err != nil {
			// Also where the log goes (a file, with aws-node's settings),
			// not only on stderr.
			log.Error("ipamd stopped", "err", err)
		}
		return err
	}
	fs := root.Flags()
	fs.StringVar(&f.logFile, "log-file", "stderr", `where ipamd logs: "stderr", "stdout" or a file (rotated at 100 MB, 5 backups kept)`)
	fs.StringVar(&f.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "where berth-cni is installed")
	fs.StringVar(&f.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "where 10-berth.conflist is written once ipamd is ready")
	fs.StringVar(&f.socket, "socket", DefaultSocket, "unix socket of the CNIBackend gRPC service (mode 0660)")
	fs.StringVar(&f.npaSocket, "npa-socket", DefaultNPASocket, "the network policy agent's socket, written into the conflist for berth-cni when not the default")
	fs.StringVar(&f.datapathSocket, "datapath-socket", "", `unix socket (SOCK_SEQPACKET, mode 0660) where berth-cni has ipamd wire its pods ("" means berth-datapath.sock beside --socket)`)
	fs.StringVar(&f.stateDir, "state-dir", DefaultStateDir, "directory of ipam.json, the allocation checkpoint")
	fs.StringVar(&f.checkpoint, "checkpoint", "", `the allocation checkpoint ("" means ipam.json in --state-dir)`)
	fs.StringVar(&f.introspectionAddr, "introspection-addr", "127.0.0.1:61679", `introspection API address ("" to disable)`)
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":61678", `Prometheus metrics address ("" to disable)`)
	fs.BoolVar(&f.chainPortmap, "chain-portmap", true, "chain the portmap plugin in the conflist (hostPort support)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", `kubeconfig for reading the node's ENIConfig with custom networking ("" means in-cluster)`)
	fs.StringVar(&f.cniVersion, "cni-version", "1.1.0", "CNI version of the conflist: 1.1.0 offers 1.1.0 and 1.0.0 (cniVersions) for the runtime to choose; another value is written as the only cniVersion (1.0.0 for chained plugins without CNI 1.1)")
	vpcCNIFlagDefaults(root, os.Getenv)
	return root
}

// vpcCNIFlagDefaults takes the defaults of flags from aws-node's variables,
// so its DaemonSet's environment keeps working; flags given on the command
// line still win. Values aws-node would ignore are ignored.
func vpcCNIFlagDefaults(root *cobra.Command, getenv func(string) string) {
	set := func(flag, v string) { _ = root.Flags().Set(flag, v) }
	if lvl, ok := vpcCNILogLevel(getenv("AWS_VPC_K8S_CNI_LOGLEVEL")); ok {
		_ = root.PersistentFlags().Set("log-level", lvl)
	}
	for env, flag := range map[string]string{"HOST_CNI_BIN_PATH": "cni-bin-dir", "HOST_CNI_CONFDIR_PATH": "cni-conf-dir",
		"INTROSPECTION_BIND_ADDRESS": "introspection-addr", "AWS_VPC_K8S_CNI_LOG_FILE": "log-file",
		"AWS_VPC_K8S_CNI_BACKING_STORE": "checkpoint"} {
		if v := strings.TrimSpace(getenv(env)); v != "" {
			set(flag, v)
		}
	}
	if on, _ := strconv.ParseBool(getenv("DISABLE_INTROSPECTION")); on {
		set("introspection-addr", "")
	}
	if on, _ := strconv.ParseBool(getenv("DISABLE_METRICS")); on {
		set("metrics-addr", "")
	}
}

// vpcCNILogLevel maps the VPC CNI's AWS_VPC_K8S_CNI_LOGLEVEL (DEBUG, INFO,
// WARN, ERROR, FATAL, any case) to a --log-level; false for anything else,
// which keeps the default as aws-node does.
func vpcCNILogLevel(v string) (string, bool) {
	switch l := strings.ToLower(strings.TrimSpace(v)); l {
	case "debug", "info", "warn", "error":
		return l, true
	case "fatal":
		return "error", true
	}
	return "", false
}

// startupMetrics are aws-node's start-up histograms:
// awscni_ipamd_node_initialization_duration_seconds{success} (the ENIs
// and the checkpoint loaded) and awscni_ipamd_startup_duration_seconds
// {success,with_api_server,failure_reason}, to ready for CNI requests
// (the conflist written). A start that fails before the metrics listener
// serves is seen in the log only.
type startupMetrics struct{ nodeInitSeconds, startupSeconds *prometheus.HistogramVec }

func newStartupMetrics(reg prometheus.Registerer) startupMetrics {
	m := startupMetrics{
		nodeInitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "awscni_ipamd_node_initialization_duration_seconds",
			Help: "The duration of node initialization during IPAMD startup"}, []string{"success"}),
		startupSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "awscni_ipamd_startup_duration_seconds",
			Help: "The duration of IPAMD startup from process start to ready to serve CNI requests"}, []string{"success", "with_api_server", "failure_reason"}),
	}
	reg.MustRegister(m.nodeInitSeconds, m.startupSeconds)
	return m
}

func (m startupMetrics) nodeInit(since time.Time, ok bool) {
	m.nodeInitSeconds.WithLabelValues(strconv.FormatBool(ok)).Observe(time.Since(since).Seconds())
}

func (m startupMetrics) ready(since time.Time, withAPIServer bool) {
	m.startupSeconds.WithLabelValues("true", strconv.FormatBool(withAPIServer), "").Observe(time.Since(since).Seconds())
}

// DefaultSocket is the VPC CNI's socket path.
const DefaultSocket = "/var/run/aws-node/ipamd.sock"

func run(ctx context.Context, f flags, log *slog.Logger) error {
	start := time.Now()
	if f.datapathSocket == "" {
		f.datapathSocket = filepath.Join(filepath.Dir(f.socket), filepath.Base(podwire.DefaultSocket))
	}
	if f.checkpoint == "" {
		f.checkpoint = filepath.Join(f.stateDir, CheckpointName)
	}
	// berth-cni reads it from the conflist, from the runtime's directory.
	abs, err := filepath.Abs(f.checkpoint)
	if err != nil {
		return fmt.Errorf("checkpoint path %s: %w", f.checkpoint, err)
	}
	f.checkpoint = abs
	cfg, err := config.Load(nil, log)
	if err != nil {
		return fmt.Errorf("invalid environment:\n%w", err)
	}
	reg := metrics.NewRegistry("ipamd")
	startup := newStartupMetrics(reg)
	c, err := cloud.Load(ctx, log, cloud.NewMetrics(reg), cfg.EC2Endpoint, cfg.HTTPTimeout)
	if err != nil {
		return err
	}
	c.SetClusterName(cfg.ClusterName)
	in := c.Instance()
	host, err := hostnet.New(hostnet.Config{MTU: cfg.MTU, VPCCIDRs: in.VPCCIDRs, ExcludeSNATCIDRs: cfg.ExcludeSNATCIDRs,
		ExternalSNAT: cfg.ExternalSNAT, RandomizeSNAT: cfg.RandomizeSNAT, ConnMark: cfg.ConnMark, VethPrefix: cfg.VethPrefix,
		NoNodePort: !cfg.NodePortSupport, ExternalServiceCIDRs: cfg.ExternalServiceCIDRs}, log)
	if err != nil {
		return err
	}
	defer func() { _ = host.Close() }()
	// The background loops (pools, sweeps, refreshes) use the host's
	// netlink handles and the datastores: on the way out they end before
	// the handles close (this defer runs before host.Close's), but ipamd
	// does not wait past loopsGrace for them.
	bg, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer func() {
		stopLoops()
		if !waitAtMost(loops.Wait, loopsGrace) {
			log.Warn("background work still running at exit", "waited", loopsGrace)
		}
	}()
	host.RegisterMetrics(reg)
	mac, err := net.ParseMAC(in.PrimaryMAC)
	if err != nil {
		return fmt.Errorf("primary MAC %q: %w", in.PrimaryMAC, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = host.SetupPrimary(pctx, mac, in.PrimaryIP)
	cancel()
	if err != nil {
		return fmt.Errorf("configure the primary interface: %w", err)
	}

	// As aws-node: where prefixes cannot be assigned (instance types not on
	// Nitro), secondary addresses, with a warning, rather than no node.
	if cfg.PrefixDelegation && !in.Info.PrefixDelegation {
		log.Warn("prefix delegation is not supported on this instance type: pods get secondary IP addresses", "type", in.Type, "hypervisor", in.Info.Hypervisor)
		cfg.PrefixDelegation = false
	}
	if pool.MaxPods(cfg, in) == 0 {
		return fmt.Errorf("no pod capacity on %s with this configuration", in.Type)
	}
	ds := datastore.New(cfg.IPCooldown, nil)
	cp := datastore.NewCheckpointer(f.checkpoint, ds)
	ic := introspect.InstrumentCloud(c, reg)
	p := pool.New(cfg, ic, ds, host, log)
	p.RegisterMetrics(reg)
	cards := []*card{{index: 0, ds: ds, cp: cp, path: f.checkpoint, pool: p}}
	if cfg.MultiNIC {
		// A pool on each other network card, for multi-NIC pods, as
		// aws-node's ENABLE_MULTI_NIC keeps one.
		for i := 1; i < in.Info.NetworkCards; i++ {
			cds := datastore.New(cfg.IPCooldown, nil)
			path := cardCheckpoint(f.checkpoint, i)
			cpool := pool.NewOnCard(i, cfg, ic, cds, host, log)
			cpool.CountReconcilesWith(p)
			cards = append(cards, &card{index: i, ds: cds, cp: datastore.NewCheckpointer(path, cds), path: path, pool: cpool})
		}
		if len(cards) == 1 {
			log.Warn("ENABLE_MULTI_NIC: the instance type has one network card, so multi-NIC pods are refused", "type", in.Type)
		}
	}
	var kc *kube.Client // only for the features that need the API
	if cfg.CustomNetworking || cfg.AnnotatePodIP {
		if kc, err = kube.New(f.kubeconfig, cfg.ClusterEndpoint); err != nil {
			return err
		}
	}
	var eniConfigs *kube.ENIConfigs
	if cfg.CustomNetworking {
		eniConfigs = kc.ENIConfigs(cfg.NodeName, cfg.ENIConfigAnnotationDef, cfg.ENIConfigLabelDef)
		for _, c := range cards {
			c.pool.UseENIConfigs(eniConfigs)
		}
		log.Info("custom networking: pod ENIs follow the node's ENIConfig", "node", cfg.NodeName)
	}
	kickAll := func() {
		for _, c := range cards {
			c.pool.Kick()
		}
	}
	if cordon := followCordon(ctx, cfg, f.kubeconfig, kc, kickAll, log); cordon != nil {
		for _, c := range cards {
			c.pool.UseCordon(cordon)
		}
	}
	initStart := time.Now()
	for _, c := range cards {
		if err := c.pool.Init(ctx); err != nil {
			startup.nodeInit(initStart, false)
			return fmt.Errorf("network card %d: %w", c.index, err)
		}
	}
	for _, c := range cards {
		if err := restoreCard(ctx, cards, c, cfg.VethPrefix, log); err != nil {
			startup.nodeInit(initStart, false)
			return err
		}
	}
	startup.nodeInit(initStart, true)
	// Rules and routes of pods that are gone (released by restore) go too;
	// those of held pods stay.
	if err := host.PruneStalePodRules(ctx, liveAddrs(cards)); err != nil {
		log.Warn("prune stale pod rules", "err", err)
	}
	for _, c := range cards {
		loops.Go(func() { c.pool.Run(bg) })
		loops.Go(func() { c.pool.ReconcileLoop(bg, time.Minute) })
	}
	loops.Go(func() { p.CleanupLeakedENIs(bg) })

	srv := server.New(ds, p, cp, server.Node{PrimaryENI: in.PrimaryENI, PrimaryIP: in.PrimaryIP, VPCCIDRs: in.VPCCIDRs,
		ExternalSNAT: cfg.ExternalSNAT, NetworkPolicyMode: cfg.NetworkPolicyMode, InstanceID: in.ID, Region: in.Region},
		version.Version, cfg.AddWait, server.NewMetrics(reg), log)
	var more []server.Card
	for _, c := range cards[1:] {
		more = append(more, server.Card{Index: c.index, Store: c.ds, Pool: c.pool, CP: c.cp})
	}
	srv.UseCards(more)
	loops.Go(func() { refreshVPCCIDRs(bg, c, host, srv, 30*time.Second, log) })
	srv.OnRelease(func(ip net.IP, table int, deleteVeth bool) {
		// Rules, host route and veth while the address is still this pod's:
		// once released, they may be the next pod's. Unless deleteVeth, the
		// veth goes with the pod's namespace.
		if err := podnet.TeardownHost("", ip, table, deleteVeth); err != nil {
			log.Warn("host side of a released address", "ip", ip, "err", err)
		}
	})
	if cfg.AnnotatePodIP {
		srv.AnnotatePodIPs(kc.PodIPs())
	}
	loops.Go(func() { sweepOrphans(bg, srv, cfg.VethPrefix, log) })
	loops.Go(func() { keepPluginLog(bg, cfg.PluginLogFile, log) })
	gs := grpc.NewServer()
	rpc.RegisterCNIBackendServer(gs, srv)
	rpc.RegisterConfigServerBackendServer(gs, srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	stop, err := unixsock.ServeGRPC(f.socket, gs, log)
	if err != nil {
		return err
	}
	defer stop()
	dpln, err := unixsock.ListenSeqpacket(f.datapathSocket)
	if err != nil {
		return err
	}
	dpDone := make(chan struct{})
	dpErr := make(chan error, 1)
	dpCtx, dpCancel := context.WithCancel(ctx)
	go func() {
		defer close(dpDone)
		if err := srv.ServeDatapath(dpCtx, dpln, host.NetNS()); err != nil {
			// No ADD can succeed now: STATUS says so, and ipamd exits so
			// that it is restarted rather than serving half.
			hs.SetServingStatus(HealthService, healthpb.HealthCheckResponse_NOT_SERVING)
			hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			dpErr <- fmt.Errorf("datapath socket stopped: %w", err)
		}
	}()
	// On the way out, the ADDs in flight are cancelled and end, undo
	// included, before the node's namespace handle closes.
	defer func() {
		dpCancel()
		_ = dpln.Close()
		<-dpDone
	}()

	src := introspect.Source{Store: ds, Config: cfg, Instance: in, MaxPods: p.MaxPodsLimit(), Unmanaged: p.UnmanagedENIs, Cards: map[int]*datastore.Store{}}
	for _, c := range cards[1:] {
		src.Cards[c.index] = c.ds
	}
	if eniConfigs != nil {
		src.ENIConfigName = eniConfigs.Name
	}
	introspect.RegisterMetrics(reg, src)
	if f.introspectionAddr != "" {
		if err := introspect.Serve(ctx, f.introspectionAddr, introspect.Handler(src), log); err != nil {
			return err
		}
	}
	if f.metricsAddr != "" {
		if _, err := metrics.Serve(ctx, log, f.metricsAddr, reg); err != nil {
			return err
		}
	}

	// The readiness gate: kubelet reports the node NotReady until the
	// conflist exists, so write it only once a pod can get an address.
	if err := waitForFreeIP(ctx, ds, p, dpErr); err != nil {
		return err
	}
	// STATUS (the health check) is ready from here on, as the conflist,
	// unless the datapath socket has stopped already.
	select {
	case err := <-dpErr:
		return err
	default:
	}
	hs.SetServingStatus(HealthService, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if err := installPlugin(f.cniBinDir); err != nil {
		return err
	}
	if err := writeConflist(f.cniConfDir, f.socket, f.datapathSocket, f.npaSocket, f.checkpoint, f.cniVersion, cfg, f.chainPortmap); err != nil {
		return err
	}
	// Ours first, then aws-node's aside: the node always has a network.
	if aside, err := retireVPCCNIConflist(f.cniConfDir); err != nil {
		log.Warn("aws-node's conflist stays, and sorts before berth's", "err", err)
	} else if aside != "" {
		log.Info("moved aws-node's conflist aside", "to", aside)
	}
	startup.ready(start, kc != nil)
	log.Info("ipamd ready", "instance", in.ID, "maxPods", p.MaxPodsLimit(), "socket", f.socket, "conflist", filepath.Join(f.cniConfDir, ConflistName))
	select {
	case <-ctx.Done():
	case err := <-dpErr:
		return err
	}
	log.Info("ipamd stopping")
	return nil
}

// waitForFreeIP returns once a pod can get an address, or once the node
// is full (max pods, or every ENI and address slot used): a node restarted
// with all its pods is ready, not NotReady until one of them goes. It
// returns the datapath socket's error if that stops meanwhile.
func waitForFreeIP(ctx context.Context, ds *datastore.Store, p *pool.Pool, dpErr <-chan error) error {
	for {
		st := ds.Stats()
		if st.Free-st.Cooling > 0 {
			return nil
		}
		if reason, _ := p.Blocked(); errors.Is(reason, pool.ErrMaxPods) || errors.Is(reason, pool.ErrNodeCapacity) {
			return nil
		}
		p.Kick()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-dpErr:
			return err
		case <-ds.Changed():
		case <-time.After(time.Second):
		}
	}
}

// refreshVPCCIDRs re-reads the VPC's CIDRs every period, as the VPC CNI
// does: traffic to a CIDR associated with the VPC later must not be
// SNATed.
func refreshVPCCIDRs(ctx context.Context, c *cloud.AWS, host *hostnet.Host, srv *server.Server, period time.Duration, log *slog.Logger) {
	every(ctx, period, func() {
		cidrs, err := c.VPCCIDRs(ctx)
		if err != nil || len(cidrs) == 0 {
			log.Warn("read the VPC's CIDRs", "err", err)
			return
		}
		changed, err := host.SetVPCCIDRs(ctx, cidrs)
		if err != nil {
			log.Warn("apply the VPC's CIDRs", "cidrs", cidrs, "err", err)
			return
		}
		if changed {
			srv.SetVPCCIDRs(cidrs)
		}
	})
}

// every runs f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// VethName is the host-side name of a pod's veth, as the VPC CNI names it.
func VethName(prefix, namespace, pod string) string { return vethname.For(prefix, namespace, pod) }

// loopsGrace bounds the wait for the background loops at exit. An ENI
// being created when ipamd is told to stop is deleted on the way out, which
// EC2 may take up to a minute to allow; aws-node's pod has 10 s to stop, and
// a created ENI left behind is the leaked-ENI cleanup's.
const loopsGrace = 5 * time.Second

// waitAtMost runs wait and reports whether it returned within d.
func waitAtMost(wait func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// orphanMinAge is how old an allocation must be before the sweep (or
// restore) releases it for a missing veth: its ADD may still be wiring it.
const orphanMinAge = 30 * time.Second

// sweepOrphans releases, every 30 s, addresses whose pod veth is gone
// (a DEL that could not reach ipamd, then the runtime deleted the pod's
// namespace). Allocations younger than the sweep are left alone: their ADD
// may still be wiring the veth.
func sweepOrphans(ctx context.Context, srv *server.Server, vethPrefix string, log *slog.Logger) {
	every(ctx, 30*time.Second, func() {
		f := newVethFinder(vethPrefix)
		gone := func(a datastore.Allocation, index int) bool { return !f.presentOn(a, index) }
		if _, err := srv.ReleaseOrphans(ctx, orphanMinAge, gone); err != nil && ctx.Err() == nil {
			log.Error("orphan sweep", "err", err)
		}
	})
}

// card is one network card's datastore, checkpoint and pool: card 0's,
// and with ENABLE_MULTI_NIC each other card's.
type card struct {
	index int
	ds    *datastore.Store
	cp    *datastore.Checkpointer
	path  string
	pool  *pool.Pool
}

// cardCheckpoint is the checkpoint of network card n above 0 beside card
// 0's, named as aws-node names it: ipam.json -> ipam-nic-<n>.json.
func cardCheckpoint(path string, n int) string {
	return fmt.Sprintf("%s-nic-%d.json", strings.TrimSuffix(path, ".json"), n)
}

// restoreCard restores card c's checkpoint. The n-th card's allocations
// are a multi-NIC pod's n-th interface, whose veth is named after
// "<pod>.<n>", or the eth0 of a pod with one interface. A checkpoint
// rebuilt from the host's routes takes the addresses in c's pool, and
// card 0's those in no other card's pool.
func restoreCard(ctx context.Context, cards []*card, c *card, vethPrefix string, log *slog.Logger) error {
	mine := func(ip netip.Addr) bool {
		if c.index > 0 {
			return c.ds.InPool(ip)
		}
		for _, o := range cards[1:] {
			if o.ds.InPool(ip) {
				return false
			}
		}
		return true
	}
	if err := restoreOn(ctx, c.ds, c.cp, c.path, vethPrefix, c.index, mine, log.With("card", c.index)); err != nil {
		return fmt.Errorf("network card %d: %w", c.index, err)
	}
	return nil
}

// restoreOn re-creates the allocations of network card card's checkpoint
// whose pod still has the veth of the interface with the address; the
// others are released (the pod went away while ipamd was down) and the
// checkpoint rewritten. It does not stop ipamd for a bad checkpoint: a file that
// cannot be decoded is moved aside and the allocations are rebuilt from
// the pods' host routes, keeping the addresses mine says are the card's.
//
// A live pod whose address is not in the pool (EC2 listed the node's
// addresses before an assignment made just before a crash showed up, or
// its ENI is now unmanaged) is held, not dropped: it stays in the
// checkpoint, its rules survive the prune, and the datastore gives the
// address back to it in the same step as the pool adds it (AddCIDR), so
// it is never free.
func restoreOn(ctx context.Context, ds *datastore.Store, cp *datastore.Checkpointer, path, vethPrefix string, card int, mine func(netip.Addr) bool, log *slog.Logger) error {
	if err := datastore.RemoveTemps(path); err != nil {
		log.Warn("remove temporary checkpoint files", "err", err)
	}
	allocs, err := datastore.LoadCheckpoint(path, log)
	if errors.Is(err, datastore.ErrCorruptCheckpoint) {
		now := time.Now()
		aside, merr := datastore.MoveAside(path, now)
		log.Error("unreadable checkpoint: rebuilding the allocations from the pods' host routes", "err", err, "movedTo", aside, "moveErr", merr)
		if allocs, err = hostAllocations(ctx, vethPrefix, now); err != nil {
			return fmt.Errorf("rebuild allocations from the host: %w", err)
		}
		allocs = slices.DeleteFunc(allocs, func(a datastore.Allocation) bool { return !mine(a.IP) })
	} else if err != nil {
		return err
	}
	kept, held, dropped := 0, 0, 0
	veths := newVethFinder(vethPrefix)
	for _, a := range allocs {
		// A young allocation's pod may still be on its way: the VPC CNI
		// plugin wires it after AddNetwork's answer. The sweep judges it
		// once it is as old as the sweep requires.
		if time.Since(a.AssignedAt) >= orphanMinAge && !veths.presentOn(a, a.Interface(card)) {
			dropped++
			log.Info("releasing the address of a pod that is gone", "pod", a.Meta.PodNamespace+"/"+a.Meta.PodName, "key", a.Key, "ip", a.IP)
			continue
		}
		if !ds.InPool(a.IP) {
			cp.Held().Add(a)
			held++
			log.Warn("holding the address of a running pod until EC2 lists it", "key", a.Key, "ip", a.IP)
			continue
		}
		if err := ds.Restore(a); err != nil {
			dropped++
			log.Warn("dropping a checkpoint entry", "err", err)
			continue
		}
		kept++
	}
	if len(allocs) > 0 {
		log.Info("restored allocations", "kept", kept, "held", held, "released", dropped)
	}
	return cp.Sync(ctx)
}

// followCordon starts following the node's schedulability for
// AWS_MANAGE_ENIS_NON_SCHEDULABLE=false, the VPC CNI's default. aws-node
// always has the API; ipamd may run without it (no MY_NODE_NAME, no
// --kubeconfig and not in a pod), and then manages ENIs on a cordoned node
// too, which it says once. kc is the API client if one is made already.
func followCordon(ctx context.Context, cfg config.Config, kubeconfig string, kc *kube.Client, kick func(), log *slog.Logger) *kube.Cordon {
	if cfg.ManageENIsNonSchedulable {
		return nil
	}
	if cfg.NodeName == "" || (kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "") {
		log.Info("ENIs are managed on a cordoned node too: AWS_MANAGE_ENIS_NON_SCHEDULABLE=false needs MY_NODE_NAME and the API (--kubeconfig, or in a pod)")
		return nil
	}
	if kc == nil {
		var err error
		if kc, err = kube.New(kubeconfig, cfg.ClusterEndpoint); err != nil {
			log.Warn("ENIs are managed on a cordoned node too: no API client", "err", err)
			return nil
		}
	}
	c := kc.Cordon(cfg.NodeName, log, kick)
	c.Start(ctx)
	return c
}
