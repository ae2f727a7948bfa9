package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/vethname"
)

// SetupPrimary configures the primary interface (found by MAC, waiting
// for it until ctx ends): its MTU; ip_forward=1 (pods are routed through
// the node) and rp_filter=2 on it (replies for pods on secondary ENIs
// arrive on it while their reverse path is another ENI); the fwmark rule
// (priority 1024: fwmark <connmark>/<connmark> lookup main, the mark of
// AWS_VPC_K8S_CNI_CONNMARK, 0x80 by default); the external service rules
// (1535); and the berth-snat table, replaced atomically: the connmark of
// NodePort connections and, unless ExternalSNAT, of pod connections
// leaving the VPC, with their SNAT to primaryIP. The Amazon VPC CNI's own
// SNAT and connmark rules, left by an aws-node that ran before, are
// removed (awsnode.go). Idempotent.
func (h *Host) SetupPrimary(ctx context.Context, primaryMAC net.HardwareAddr, primaryIP netip.Addr) error {
	if !primaryIP.Is4() {
		return fmt.Errorf("%w: primary IP %s is not IPv4", ErrInvalidArg, primaryIP)
	}
	done, err := h.enter()
	if err != nil {
		return err
	}
	defer done()
	l, err := h.linkByMAC(ctx, primaryMAC)
	if err != nil {
		return fmt.Errorf("primary interface: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	name := l.Attrs().Name
	if l.Attrs().MTU != h.cfg.MTU {
		if err := h.nl.LinkSetMTU(l, h.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", h.cfg.MTU, name, err)
		}
	}
	if err := h.writeSysctls(
		[2]string{"net/ipv4/ip_forward", "1"},
		[2]string{"net/ipv4/conf/" + name + "/rp_filter", "2"},
	); err != nil {
		return err
	}
	if err := h.ensureFwmarkRule(ctx); err != nil {
		return err
	}
	if err := h.syncExternalServiceRules(ctx, h.cfg.ExternalServiceCIDRs); err != nil {
		return err
	}
	if h.earlierPrefixes, err = h.earlierVethPrefixes(ctx); err != nil {
		return err
	}
	// A node taken over from aws-node keeps its SNAT and connmark rules
	// until they are removed; they would apply aws-node's settings.
	if removed, err := h.removeVPCCNIRules(); err != nil {
		h.log.Warn("could not remove the Amazon VPC CNI's host rules", "err", err)
	} else if len(removed) > 0 {
		h.log.Info("removed the Amazon VPC CNI's host rules", "removed", removed)
	}
	// With external SNAT the table keeps only the NodePort connmark.
	if err := h.replaceSNAT(name, primaryIP); err != nil {
		return err
	}
	h.primaryIf, h.primaryIP = name, primaryIP
	if h.cfg.ExternalSNAT {
		h.log.Info("configured primary interface", "interface", name, "ip", primaryIP, "snat", "external", "table", SNATTable)
		return nil
	}
	h.log.Info("configured primary interface", "interface", name, "ip", primaryIP, "snat", SNATTable,
		"randomize", h.cfg.RandomizeSNAT)
	return nil
}

// TeardownPrimary removes what SetupPrimary added that matters to other
// components: the berth-snat table, the fwmark rule and the external
// service rules. MTU and sysctls are left as they are. Absent pieces are
// not an error.
func (h *Host) TeardownPrimary(ctx context.Context) error {
	done, err := h.enter()
	if err != nil {
		return err
	}
	defer done()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.deleteSNAT(); err != nil {
		return err
	}
	if err := h.syncExternalServiceRules(ctx, nil); err != nil {
		return err
	}
	rules, err := h.fwmarkRules(ctx)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete fwmark rule: %w", err)
		}
	}
	return nil
}

func (h *Host) fwmarkRule() *netlink.Rule {
	mask := h.cfg.ConnMark
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = FwmarkRulePriority
	r.Mark = h.cfg.ConnMark
	r.Mask = &mask
	r.Table = unix.RT_TABLE_MAIN
	return r
}

// fwmarkRules lists the rules equal to fwmarkRule.
func (h *Host) fwmarkRules(ctx context.Context) ([]netlink.Rule, error) {
	want := h.fwmarkRule()
	rules, err := dump(ctx, "rules", func() ([]netlink.Rule, error) {
		return h.nl.RuleListFiltered(netlink.FAMILY_V4, want,
			netlink.RT_FILTER_PRIORITY|netlink.RT_FILTER_MARK|netlink.RT_FILTER_MASK|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Src == nil && r.Dst == nil && r.IifName == "" && r.OifName == "" && !r.Invert {
			out = append(out, r)
		}
	}
	return out, nil
}

// ensureFwmarkRule adds the fwmark rule and removes fwmark rules of
// another mark at its priority in main: an ipamd restarted with another
// AWS_VPC_K8S_CNI_CONNMARK must not leave the old mark routed through main.
func (h *Host) ensureFwmarkRule(ctx context.Context) error {
	all, err := dump(ctx, "rules", func() ([]netlink.Rule, error) { return h.nl.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	found := false
	for _, r := range all {
		if r.Priority != FwmarkRulePriority || r.Table != unix.RT_TABLE_MAIN || r.Mark == 0 || r.Src != nil || r.Dst != nil ||
			r.IifName != "" || r.OifName != "" || r.Invert {
			continue
		}
		if r.Mark == h.cfg.ConnMark && r.Mask != nil && *r.Mask == h.cfg.ConnMark {
			found = true
			continue
		}
		if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete the fwmark %#x rule of an earlier connmark: %w", r.Mark, err)
		}
	}
	if found {
		return nil
	}
	if err := h.nl.RuleAdd(h.fwmarkRule()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add rule fwmark %#x/%#x lookup main: %w", h.cfg.ConnMark, h.cfg.ConnMark, err)
	}
	return nil
}

// SetVPCCIDRs replaces the VPC's CIDRs, which are never SNATed, when they
// differ from the ones in use: a CIDR associated with the VPC later
// (100.64.0.0/16 for custom networking, say) is VPC traffic from then on. It reports
// whether anything changed. Before SetupPrimary it only records them.
func (h *Host) SetVPCCIDRs(ctx context.Context, cidrs []netip.Prefix) (bool, error) {
	done, err := h.enter()
	if err != nil {
		return false, err
	}
	defer done()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	old := h.cfg.VPCCIDRs
	if slices.Equal(old, cidrs) {
		return false, nil
	}
	h.cfg.VPCCIDRs = slices.Clone(cidrs)
	if h.primaryIf == "" {
		return true, nil
	}
	if err := h.replaceSNAT(h.primaryIf, h.primaryIP); err != nil {
		h.cfg.VPCCIDRs = old
		return false, err
	}
	h.log.Info("VPC CIDRs changed", "from", old, "to", cidrs)
	return true, nil
}

// syncExternalServiceRules makes the rules at ExternalServiceRulePriority
// exactly "to <cidr> lookup main" for each of cidrs
// (AWS_EXTERNAL_SERVICE_CIDRS), as the VPC CNI does: ahead of the pods'
// "from <pod> lookup <ENI table>" rules (1536), so a pod on any ENI
// reaches them through the main table. Caller holds mu.
func (h *Host) syncExternalServiceRules(ctx context.Context, cidrs []netip.Prefix) error {
	rules, err := dump(ctx, "rules", func() ([]netlink.Rule, error) { return h.nl.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	want := map[netip.Prefix]bool{}
	for _, p := range cidrs {
		want[p.Masked()] = true
	}
	for _, r := range rules {
		if r.Priority != ExternalServiceRulePriority || r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok && want[p] && r.Src == nil && r.Mark == 0 && r.IifName == "" && r.OifName == "" && !r.Invert {
			delete(want, p) // already there
			continue
		}
		if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete external service rule %v: %w", r.Dst, err)
		}
	}
	for p := range want {
		r := netlink.NewRule()
		r.Family = unix.AF_INET
		r.Priority = ExternalServiceRulePriority
		r.Table = unix.RT_TABLE_MAIN
		r.Dst = &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
		if err := h.nl.RuleAdd(r); err != nil {
			return fmt.Errorf("add rule to %s lookup main (priority %d): %w", p, ExternalServiceRulePriority, err)
		}
	}
	return nil
}

// earlierVethPrefixes lists the prefixes, other than VethPrefix, of the pod
// veths on the node (veths named <1-4 characters><11 hex digits>): pods
// made before AWS_VPC_K8S_CNI_VETHPREFIX changed keep their veths, and
// their new connections must still be marked, or they would leave the VPC
// without SNAT.
func (h *Host) earlierVethPrefixes(ctx context.Context) ([]string, error) {
	links, err := dump(ctx, "links", h.nl.LinkList)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{h.cfg.VethPrefix: true}
	var out []string
	for _, l := range links {
		if prefix, _, ok := vethname.Split(l.Attrs().Name); ok && l.Type() == "veth" && !seen[prefix] {
			seen[prefix] = true
			out = append(out, prefix)
		}
	}
	slices.Sort(out)
	if len(out) > 0 {
		h.log.Info("marking connections of pods made under earlier veth prefixes too", "prefixes", out)
	}
	return out, nil
}
