// Package hostnet is the node-side network setup of berth-ipamd: secondary
// ENIs (interface, address, route table device+1, rules), SNAT of pod
// traffic that leaves the VPC (nftables), the connmark that keeps such
// connections on the primary ENI, and rp_filter. The per-pod veth work is
// berth-cni's.
package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Priorities of the rules ipamd owns (the Amazon VPC CNI's numbers).
const (
	ToPodRulePriority   = 512
	FwmarkRulePriority  = 1024
	FromPodRulePriority = 1536
	// ConnMark marks connections from pods to outside the VPC.
	ConnMark = 0x80
)

// Config configures the host.
type Config struct {
	MTU              int
	VPCCIDRs         []netip.Prefix
	ExcludeSNATCIDRs []netip.Prefix
	ExternalSNAT     bool
	RandomizeSNAT    bool
	VethPrefix       string
}

// Host programs the node's namespace.
type Host struct {
	cfg Config
	log *slog.Logger
	h   *netlink.Handle
}

// New returns a Host for the current network namespace.
func New(cfg Config, log *slog.Logger) (*Host, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if cfg.MTU == 0 {
		cfg.MTU = 9001
	}
	if cfg.VethPrefix == "" {
		cfg.VethPrefix = "eni"
	}
	return &Host{cfg: cfg, log: log.With("component", "hostnet"), h: h}, nil
}

// Close releases the netlink handle.
func (h *Host) Close() { h.h.Close() }

// RouteTable is the route table of an ENI.
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

// linkByMAC finds an interface by MAC, waiting for it to appear.
func (h *Host) linkByMAC(ctx context.Context, mac net.HardwareAddr) (netlink.Link, error) {
	delay := 50 * time.Millisecond
	for {
		links, err := h.h.LinkList()
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no interface with MAC %s: %w", mac, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

// SetupPrimary configures rp_filter, the fwmark rule and SNAT for the
// primary interface; idempotent.
func (h *Host) SetupPrimary(ctx context.Context, mac net.HardwareAddr, primaryIP netip.Addr) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := h.linkByMAC(wctx, mac)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	// Pods are routed through the node: forwarding on (EKS AMIs set it too).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}
	// Loose reverse-path filtering: replies to pods on secondary ENIs may
	// arrive on the primary interface.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/rp_filter", []byte("2"), 0o644); err != nil {
		return fmt.Errorf("rp_filter on %s: %w", name, err)
	}
	if h.cfg.ExternalSNAT {
		return h.deleteSNAT()
	}
	rule := netlink.NewRule()
	rule.Priority, rule.Mark, rule.Mask, rule.Table = FwmarkRulePriority, ConnMark, uintPtr(ConnMark), unix.RT_TABLE_MAIN
	if err := h.h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("fwmark rule: %w", err)
	}
	return h.applySNAT(name, primaryIP)
}

func uintPtr(v uint32) *uint32 { return &v }

// applySNAT replaces the berth-snat nftables table atomically.
func (h *Host) applySNAT(primaryIf string, primaryIP netip.Addr) error {
	var keep []string
	for _, p := range append(append([]netip.Prefix{}, h.cfg.VPCCIDRs...), h.cfg.ExcludeSNATCIDRs...) {
		keep = append(keep, p.Masked().String())
	}
	set := ""
	if len(keep) > 0 {
		set = "elements = { " + strings.Join(keep, ", ") + " }"
	}
	random := ""
	if h.cfg.RandomizeSNAT {
		random = " fully-random"
	}
	rules := fmt.Sprintf(`table ip berth-snat
delete table ip berth-snat
table ip berth-snat {
	set vpc {
		type ipv4_addr
		flags interval
		%s
	}
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname "%s*" ct state new ip daddr != @vpc fib daddr type != local ct mark set ct mark | 0x%x
		meta mark set ct mark
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "vlan*" ip saddr != %s ip daddr != @vpc fib daddr type != local snat to %s%s
	}
}
`, set, h.cfg.VethPrefix, ConnMark, primaryIP, primaryIP, random)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft berth-snat: %v: %s", err, out)
	}
	return nil
}

func (h *Host) deleteSNAT() error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table ip berth-snat\ndelete table ip berth-snat\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("remove berth-snat: %v: %s", err, out)
	}
	return nil
}

// SetupENI configures a secondary ENI; idempotent.
func (h *Host) SetupENI(ctx context.Context, mac net.HardwareAddr, deviceIndex int, eniPrimaryIP netip.Addr, subnet netip.Prefix) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := h.linkByMAC(wctx, mac)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	if l.Attrs().MTU != h.cfg.MTU {
		if err := h.h.LinkSetMTU(l, h.cfg.MTU); err != nil {
			return fmt.Errorf("mtu of %s: %w", name, err)
		}
	}
	if err := h.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: eniPrimaryIP.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}
	if err := h.h.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", eniPrimaryIP, name, err)
	}
	// The kernel adds a subnet route in main for the new address; pods on
	// this ENI route through its own table instead, so drop it to keep
	// main pointing at the primary interface.
	_ = h.h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(subnet.Masked()), Protocol: unix.RTPROT_KERNEL, Scope: netlink.SCOPE_LINK, Src: eniPrimaryIP.AsSlice()})
	table := RouteTable(deviceIndex, 0)
	gw := subnet.Masked().Addr().Next()
	for _, r := range []*netlink.Route{
		{LinkIndex: l.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(gw, 32)), Scope: netlink.SCOPE_LINK, Table: table},
		{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice(), Table: table},
	} {
		if err := h.h.RouteReplace(r); err != nil {
			return fmt.Errorf("table %d route on %s: %w", table, name, err)
		}
	}
	rule := netlink.NewRule()
	rule.Priority, rule.Src, rule.Table = FromPodRulePriority, prefixNet(netip.PrefixFrom(eniPrimaryIP, 32)), table
	if err := h.h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rule for %s: %w", eniPrimaryIP, err)
	}
	h.log.Info("configured ENI", "interface", name, "device", deviceIndex, "table", table, "ip", eniPrimaryIP)
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
