package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetupENI configures the secondary ENI with the given MAC (device index
// ≥ 1 on network card 0, any device on the cards above): it waits for the interface to appear (polling with
// backoff until ctx ends), sets its MTU and brings it up, gives it
// eniPrimaryIP with the subnet's mask (without the kernel's prefix route in
// main, which would send subnet traffic out of this ENI with the wrong
// source), fills route table deviceIndex+1 with `<gw>/32 dev <if> scope
// link` and `default via <gw> dev <if>` (table RouteTable(deviceIndex,
// networkCard); gw: the subnet's first host
// address), and adds `from <eniPrimaryIP> lookup <table>` (priority
// ENIRulePriority). Idempotent; it converges: other IPv4 addresses on the
// interface, other routes in the table and other rules for the table or the
// address are removed.
func (h *Host) SetupENI(ctx context.Context, mac net.HardwareAddr, deviceIndex, networkCard int, eniPrimaryIP netip.Addr, subnet netip.Prefix) error {
	gw, err := checkENI(deviceIndex, networkCard, eniPrimaryIP, subnet)
	if err != nil {
		return err
	}
	done, err := h.enter()
	if err != nil {
		return err
	}
	defer done()
	l, err := h.linkByMAC(ctx, mac)
	if err != nil {
		return fmt.Errorf("ENI device %d: %w", deviceIndex, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	name, index := l.Attrs().Name, l.Attrs().Index
	table := RouteTable(deviceIndex, networkCard)
	if err := h.setMTUAndUp(l); err != nil {
		return err
	}
	if err := h.ensureAddr(ctx, l, netip.PrefixFrom(eniPrimaryIP, subnet.Bits())); err != nil {
		return err
	}
	if err := h.dropPrefixRoute(ctx, l, subnet.Masked()); err != nil {
		return err
	}
	want := []netlink.Route{
		// The gateway first: the default route's nexthop must resolve in
		// the same table.
		{LinkIndex: index, Dst: ipNet(netip.PrefixFrom(gw, 32)), Scope: netlink.SCOPE_LINK, Table: table},
		{LinkIndex: index, Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: gw.AsSlice(), Table: table},
	}
	if err := h.ensureTable(ctx, table, want); err != nil {
		return err
	}
	if err := h.ensureENIRule(ctx, eniPrimaryIP, table); err != nil {
		return err
	}
	h.log.Info("configured ENI", "interface", name, "device", deviceIndex, "card", networkCard, "table", table, "ip", eniPrimaryIP, "gateway", gw)
	return nil
}

// TeardownENI removes the ENI's route table and the ENI rules that
// point to it. The interface itself disappears with the detach. Absent
// routes and rules are not an error.
func (h *Host) TeardownENI(ctx context.Context, deviceIndex, networkCard int) error {
	if deviceIndex < 1 && networkCard == 0 {
		return fmt.Errorf("%w: device index %d: the primary ENI (main table) is not torn down", ErrInvalidArg, deviceIndex)
	}
	done, err := h.enter()
	if err != nil {
		return err
	}
	defer done()
	h.mu.Lock()
	defer h.mu.Unlock()
	table := RouteTable(deviceIndex, networkCard)
	if err := h.ensureTable(ctx, table, nil); err != nil {
		return err
	}
	rules, err := h.eniRules(ctx)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if r.Table == table {
			if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
				return fmt.Errorf("delete rule from %s lookup %d: %w", r.Src, table, err)
			}
		}
	}
	h.log.Info("removed ENI routing", "device", deviceIndex, "table", table)
	return nil
}

// checkENI validates SetupENI's arguments and returns the gateway.
func checkENI(deviceIndex, networkCard int, ip netip.Addr, subnet netip.Prefix) (netip.Addr, error) {
	var errs []error
	if networkCard < 0 || networkCard > 99 {
		errs = append(errs, fmt.Errorf("network card %d: want 0 to 99", networkCard))
	}
	if deviceIndex < 0 || deviceIndex > 99 || deviceIndex == 0 && networkCard == 0 {
		errs = append(errs, fmt.Errorf("device index %d: secondary ENIs start at 1 on network card 0, and stay below 100", deviceIndex))
	}
	if !ip.Is4() {
		errs = append(errs, fmt.Errorf("ENI IP %s is not IPv4", ip))
	}
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > 30 {
		errs = append(errs, fmt.Errorf("subnet %s: want an IPv4 prefix of /30 or larger", subnet))
	}
	if len(errs) > 0 {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrInvalidArg, errors.Join(errs...))
	}
	gw := subnet.Masked().Addr().Next()
	if !subnet.Contains(ip) || ip == gw || ip == subnet.Masked().Addr() {
		return netip.Addr{}, fmt.Errorf("%w: ENI IP %s is not a host address of %s besides the gateway", ErrInvalidArg, ip, subnet)
	}
	return gw, nil
}

// ensureAddr leaves exactly one IPv4 address, want, on l.
func (h *Host) ensureAddr(ctx context.Context, l netlink.Link, want netip.Prefix) error {
	addrs, err := dump(ctx, "addresses", func() ([]netlink.Addr, error) { return h.nl.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		h.log.Info("removing stray address from ENI", "interface", l.Attrs().Name, "address", a.IPNet)
		if err := h.nl.AddrDel(l, &a); err != nil && !notFound(err) {
			return fmt.Errorf("delete %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
	}
	if have {
		return nil
	}
	// NOPREFIXROUTE: no subnet route in main for this ENI.
	a := &netlink.Addr{IPNet: ipNet(want), Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := h.nl.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to %s: %w", want, l.Attrs().Name, err)
	}
	return nil
}

// dropPrefixRoute removes the subnet route in main through l, which the
// kernel adds when an address was configured without NOPREFIXROUTE (by a
// previous ipamd, or by the distribution's network scripts).
func (h *Host) dropPrefixRoute(ctx context.Context, l netlink.Link, subnet netip.Prefix) error {
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	routes, err := dump(ctx, "routes", func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p == subnet && r.Gw == nil {
			if err := h.nl.RouteDel(&r); err != nil && !notFound(err) {
				return fmt.Errorf("delete %s dev %s from main: %w", subnet, l.Attrs().Name, err)
			}
		}
	}
	return nil
}

// sameRoute compares the fields SetupENI sets.
func sameRoute(a, b netlink.Route) bool {
	pa, _ := prefixOf(a.Dst)
	pb, _ := prefixOf(b.Dst)
	if !pa.IsValid() {
		pa = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	if !pb.IsValid() {
		pb = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return a.LinkIndex == b.LinkIndex && pa == pb && addrOf(a.Gw) == addrOf(b.Gw) && a.Scope == b.Scope
}

// ensureTable makes table hold exactly want (nil: empty it).
func (h *Host) ensureTable(ctx context.Context, table int, want []netlink.Route) error {
	for _, r := range want {
		if err := h.nl.RouteReplace(&r); err != nil {
			return fmt.Errorf("route %s via %s in table %d: %w", r.Dst, r.Gw, table, err)
		}
	}
	filter := &netlink.Route{Table: table}
	have, err := dump(ctx, "routes", func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
next:
	for _, r := range have {
		for _, w := range want {
			if sameRoute(r, w) {
				continue next
			}
		}
		if err := h.nl.RouteDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete route %s in table %d: %w", r.Dst, table, err)
		}
	}
	return nil
}

// eniRules lists the rules at ENIRulePriority.
func (h *Host) eniRules(ctx context.Context) ([]netlink.Rule, error) {
	filter := &netlink.Rule{Priority: ENIRulePriority}
	return dump(ctx, "rules", func() ([]netlink.Rule, error) {
		return h.nl.RuleListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PRIORITY)
	})
}

// ensureENIRule leaves `from ip lookup table` as the only ENI rule for
// either ip or table.
func (h *Host) ensureENIRule(ctx context.Context, ip netip.Addr, table int) error {
	rules, err := h.eniRules(ctx)
	if err != nil {
		return err
	}
	src := netip.PrefixFrom(ip, 32)
	have := false
	for _, r := range rules {
		p, _ := prefixOf(r.Src)
		switch {
		case p == src && r.Table == table && r.Dst == nil && r.Mark == 0:
			have = true
		case p == src || r.Table == table:
			if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
				return fmt.Errorf("delete stale rule from %s lookup %d: %w", r.Src, r.Table, err)
			}
		}
	}
	if have {
		return nil
	}
	rule := netlink.NewRule()
	rule.Family = unix.AF_INET
	rule.Priority = ENIRulePriority
	rule.Src = ipNet(src)
	rule.Table = table
	if err := h.nl.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add rule from %s lookup %d: %w", ip, table, err)
	}
	return nil
}
