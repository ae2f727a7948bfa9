// Package hostnet is the node-side network setup of berth-ipamd: the primary
// interface (rp_filter, MTU, the fwmark rule, SNAT and connmark in the
// nftables table berth-snat), secondary ENIs (interface, address, route table
// device+1, rule) and the pruning of pod rules left by a previous run. The
// per-pod veth work is package podnet's (ipamd's datapath socket runs it).
//
// ipamd is long-lived, so everything goes through sockets bound to the
// node's namespace (a netlink handle from netlink.NewHandleAt, nftables
// connections opened in the namespace) instead of moving threads between
// namespaces. The exception is /proc/sys, which reflects the namespace of
// the thread that opens it: sysctls are written from a throwaway thread.
package hostnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/vethprefix"
)

// Rule priorities (the Amazon VPC CNI's numbers). The pod rules are
// installed with the pod's wiring (package podnet); this package installs
// the fwmark and ENI rules and prunes stale pod rules.
const (
	ToPodRulePriority  = podnet.ToPodPriority // 512: to <pod ip> lookup main
	FwmarkRulePriority = 1024                 // fwmark 0x80/0x80 lookup main
	// ExternalServiceRulePriority: to <AWS_EXTERNAL_SERVICE_CIDRS> lookup main.
	ExternalServiceRulePriority = 1535
	FromPodRulePriority         = podnet.FromPodPriority // 1536: from <pod ip> lookup <ENI table>
	ENIRulePriority             = 32765                  // from <ENI primary ip> lookup <ENI table>
)

// DefaultConnMark is the conntrack and packet mark (AWS_VPC_K8S_CNI_CONNMARK's
// default) of pod connections that leave the VPC; the fwmark rule sends
// marked packets through the main table, that is out of the primary
// interface.
const DefaultConnMark = 0x80

// Source-port choice of the SNAT rule (AWS_VPC_K8S_CNI_RANDOMIZESNAT).
const (
	SNATPortsPRNG       = "prng"       // fully random (iptables --random-fully); the default
	SNATPortsHashRandom = "hashrandom" // random, by hash (iptables --random)
	SNATPortsNone       = "none"       // sequential from the original port
)

// SNATTable is the nftables table (family ip) holding SNAT and connmark.
const SNATTable = "berth-snat"

// DefaultMTU is AWS_VPC_ENI_MTU's default.
const DefaultMTU = 9001

// Errors callers can test with errors.Is.
var (
	ErrInvalidConfig = errors.New("invalid hostnet configuration")
	ErrInvalidArg    = errors.New("invalid argument")
	ErrLinkNotFound  = errors.New("no interface with that MAC")
	ErrClosed        = errors.New("host closed")
)

// Config configures the host. The zero value of NetNS (0) and netns.None()
// both mean the namespace New is called in.
type Config struct {
	NetNS            netns.NsHandle // the node's namespace
	MTU              int            // AWS_VPC_ENI_MTU; 0 means 9001
	VPCCIDRs         []netip.Prefix // traffic to these is not SNATed
	ExcludeSNATCIDRs []netip.Prefix // AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS
	ExternalSNAT     bool           // AWS_VPC_K8S_CNI_EXTERNALSNAT: no SNAT, no connmark
	RandomizeSNAT    string         // SNATPorts*; "" means prng
	ConnMark         uint32         // mark and mask of SNATed connections; 0 means 0x80
	VethPrefix       string         // pod host veths are <prefix>*; "" means "eni"
	// NoNodePort is AWS_VPC_CNI_NODE_PORT_SUPPORT=false: no connmark for
	// connections to the node through the primary interface.
	NoNodePort bool
	// ExternalServiceCIDRs (AWS_EXTERNAL_SERVICE_CIDRS) are always routed
	// through the main table, whichever ENI a pod is on.
	ExternalServiceCIDRs []netip.Prefix
}

// Host programs the node's namespace. Its methods are safe for concurrent
// use.
type Host struct {
	cfg Config
	log *slog.Logger
	ns  netns.NsHandle // owned: a duplicate of cfg.NetNS or the current namespace
	nl  *netlink.Handle

	life   sync.RWMutex // read-held by every operation, write-held by Close
	closed bool         // under life
	mu     sync.Mutex   // serialises multi-step changes

	// The primary interface's name and address once SetupPrimary ran
	// (under mu), for rebuilding the SNAT table.
	primaryIf string
	primaryIP netip.Addr
	// earlierPrefixes are the prefixes of pod veths made under an earlier
	// VethPrefix, found by SetupPrimary (under mu): their pods' connections
	// are marked and SNATed too until they are re-created.
	earlierPrefixes []string

	// connmarkReconciles counts installs of the SNAT and connmark table
	// (awscni_connmark_reconcile_total{result}) once RegisterMetrics ran.
	connmarkReconciles *prometheus.CounterVec
}

// RegisterMetrics registers aws-node's connmark metrics with reg:
// awscni_connmark_backend{backend}, 1 for "nftables" (berth's only one),
// and awscni_connmark_reconcile_total{result}, "success" or "error" at
// each install of the SNAT and connmark table (at start and when the VPC's
// CIDRs change). Call before SetupPrimary.
func (h *Host) RegisterMetrics(reg prometheus.Registerer) {
	backend := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_connmark_backend",
		Help: "The connmark backend in use; the active backend's series is set to 1"}, []string{"backend"})
	backend.WithLabelValues("nftables").Set(1)
	h.connmarkReconciles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_connmark_reconcile_total",
		Help: "The number of connmark Setup/Cleanup reconciliations by result"}, []string{"result"})
	reg.MustRegister(backend, h.connmarkReconciles)
}

// New validates cfg and opens handles on the node's namespace.
func New(cfg Config, log *slog.Logger) (*Host, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.VethPrefix == "" {
		cfg.VethPrefix = "eni"
	}
	if cfg.RandomizeSNAT == "" {
		cfg.RandomizeSNAT = SNATPortsPRNG
	}
	if cfg.ConnMark == 0 {
		cfg.ConnMark = DefaultConnMark
	}
	if err := validate(cfg); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var ns netns.NsHandle
	var err error
	if cfg.NetNS <= 0 {
		ns, err = netns.Get()
	} else {
		var fd int
		fd, err = unix.FcntlInt(uintptr(cfg.NetNS), unix.F_DUPFD_CLOEXEC, 0)
		ns = netns.NsHandle(fd)
	}
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", ns, err)
	}
	// A wedged kernel request must not hang ipamd forever.
	if err := nl.SetSocketTimeout(10 * time.Second); err != nil {
		nl.Close()
		_ = ns.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return &Host{cfg: cfg, log: log.With("component", "hostnet"), ns: ns, nl: nl}, nil
}

// validate returns every problem with cfg at once.
func validate(cfg Config) error {
	var errs []error
	if cfg.MTU < 576 || cfg.MTU > 9001 {
		errs = append(errs, fmt.Errorf("MTU %d: want 576..9001", cfg.MTU))
	}
	if err := vethprefix.Check(cfg.VethPrefix); err != nil {
		errs = append(errs, fmt.Errorf("veth prefix %w", err))
	} else if strings.ContainsAny(cfg.VethPrefix, "*/ \x00") { // nft matches "<prefix>*"
		errs = append(errs, fmt.Errorf("veth prefix %q: invalid character", cfg.VethPrefix))
	}
	switch cfg.RandomizeSNAT {
	case SNATPortsPRNG, SNATPortsHashRandom, SNATPortsNone:
	default:
		errs = append(errs, fmt.Errorf("SNAT port randomization %q: want prng, hashrandom or none", cfg.RandomizeSNAT))
	}
	check := func(what string, ps []netip.Prefix) {
		for _, p := range ps {
			if !p.IsValid() || !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("%s %s: not an IPv4 prefix", what, p))
			}
		}
	}
	check("VPC CIDR", cfg.VPCCIDRs)
	check("excluded SNAT CIDR", cfg.ExcludeSNATCIDRs)
	if !cfg.ExternalSNAT && len(cfg.VPCCIDRs) == 0 {
		errs = append(errs, errors.New("no VPC CIDR: SNAT would rewrite traffic inside the VPC"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// NetNS is the node's namespace the host works in; it stays open until
// Close.
func (h *Host) NetNS() netns.NsHandle { return h.ns }

// Close releases the handles; it removes nothing.
func (h *Host) Close() error {
	h.life.Lock()
	defer h.life.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	h.nl.Close()
	if err := h.ns.Close(); err != nil {
		return fmt.Errorf("close namespace handle: %w", err)
	}
	return nil
}

// enter starts an operation: the handles stay open until the returned
// function is called. Without it a closed netlink handle would silently fall
// back to the process's own namespace.
func (h *Host) enter() (func(), error) {
	h.life.RLock()
	if h.closed {
		h.life.RUnlock()
		return nil, ErrClosed
	}
	return h.life.RUnlock, nil
}

// RouteTable is the route table of an ENI: main (254) for device 0 on
// network card 0, device+1 for the others, and 10000+device+100*card on
// network cards above 0 (amazon-ec2-net-utils' numbering).
func RouteTable(deviceIndex, networkCard int) int {
	switch {
	case networkCard > 0:
		return 10000 + deviceIndex + 100*networkCard
	case deviceIndex == 0:
		return unix.RT_TABLE_MAIN
	default:
		return deviceIndex + 1
	}
}

// maxDumpAttempts bounds retries of dumps the kernel interrupted because
// the table changed underneath (NLM_F_DUMP_INTR).
const maxDumpAttempts = 10

// dump runs a netlink dump, retrying interrupted ones.
func dump[T any](ctx context.Context, what string, list func() ([]T, error)) ([]T, error) {
	for attempt := 1; ; attempt++ {
		v, err := list()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == maxDumpAttempts {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
	}
}

// sharesMAC reports link types that carry another interface's MAC (a VLAN
// on a trunk ENI, macvlan, a bridge or bond over the ENI): never the ENI.
func sharesMAC(l netlink.Link) bool {
	switch l.Type() {
	case "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "bridge", "bond":
		return true
	}
	return false
}

// linkByMAC finds the interface with mac, polling with backoff until it
// appears (a freshly attached ENI takes a moment) or ctx ends.
func (h *Host) linkByMAC(ctx context.Context, mac net.HardwareAddr) (netlink.Link, error) {
	if len(mac) == 0 {
		return nil, fmt.Errorf("%w: empty MAC", ErrInvalidArg)
	}
	delay := 20 * time.Millisecond
	for waited := false; ; waited = true {
		links, err := dump(ctx, "links", h.nl.LinkList)
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if bytes.Equal(l.Attrs().HardwareAddr, mac) && !sharesMAC(l) {
				return l, nil
			}
		}
		if !waited {
			h.log.Info("waiting for interface", "mac", mac.String())
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w %s: %w", ErrLinkNotFound, mac, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, time.Second)
	}
}

// setMTUAndUp sets the MTU and brings l up, touching only what differs.
func (h *Host) setMTUAndUp(l netlink.Link) error {
	a := l.Attrs()
	if a.MTU != h.cfg.MTU {
		if err := h.nl.LinkSetMTU(l, h.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", h.cfg.MTU, a.Name, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", a.Name, err)
		}
	}
	return nil
}

// inNamespace runs f on a fresh OS thread moved into ns. The thread is never
// unlocked, so the runtime discards it when f returns and no other goroutine
// ever runs in ns by accident.
func inNamespace(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// writeSysctls writes /proc/sys/<key> = value for each pair, inside the
// node's namespace (/proc/sys/net shows the opener's namespace).
func (h *Host) writeSysctls(kv ...[2]string) error {
	return inNamespace(h.ns, func() error {
		for _, p := range kv {
			if err := os.WriteFile("/proc/sys/"+p[0], []byte(p[1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(p[0], "/", "."), p[1], err)
			}
		}
		return nil
	})
}

// notFound reports the errors netlink gives for deleting something absent.
func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf converts a kernel *net.IPNet to a netip.Prefix (IPv4 unmapped);
// ok is false for nil or malformed values.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
