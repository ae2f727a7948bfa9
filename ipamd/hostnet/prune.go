package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PruneStalePodRules removes the pod routing berth-cni installs for
// addresses that are not live: rules `to <ip>/32 lookup main` (priority
// 512), rules `from <ip>/32 lookup <table>` (priority 1536) and host routes
// `<ip>/32 dev <VethPrefix>*` in main. Anything else at those priorities,
// and /32 routes through other interfaces, is left alone. Called on
// restart, once the checkpoint has been reconciled.
func (h *Host) PruneStalePodRules(ctx context.Context, live map[netip.Addr]bool) error {
	done, err := h.enter()
	if err != nil {
		return err
	}
	defer done()
	h.mu.Lock()
	defer h.mu.Unlock()

	// Normalise the keys: an IPv4-mapped IPv6 key must not make its
	// address look stale.
	alive := make(map[netip.Addr]bool, len(live))
	for a, ok := range live {
		if ok {
			alive[a.Unmap()] = true
		}
	}
	stale := func(p netip.Prefix) (netip.Addr, bool) {
		if !p.Addr().Is4() || p.Bits() != 32 {
			return netip.Addr{}, false
		}
		return p.Addr(), !alive[p.Addr()]
	}

	rules, err := dump(ctx, "rules", func() ([]netlink.Rule, error) { return h.nl.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	var nRules, nRoutes int
	for _, r := range rules {
		if err := ctx.Err(); err != nil {
			return err
		}
		src, srcOK := prefixOf(r.Src)
		dst, dstOK := prefixOf(r.Dst)
		var ip netip.Addr
		var isStale bool
		switch {
		case r.Priority == ToPodRulePriority && dstOK && !srcOK && r.Table == unix.RT_TABLE_MAIN:
			ip, isStale = stale(dst)
		case r.Priority == FromPodRulePriority && srcOK && !dstOK:
			ip, isStale = stale(src)
		}
		if !isStale || r.Mark != 0 || r.IifName != "" || r.OifName != "" || r.Invert {
			continue
		}
		if err := h.nl.RuleDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete stale rule (priority %d) for %s: %w", r.Priority, ip, err)
		}
		nRules++
		h.log.Debug("pruned stale pod rule", "ip", ip, "priority", r.Priority, "table", r.Table)
	}

	links, err := dump(ctx, "links", h.nl.LinkList)
	if err != nil {
		return err
	}
	podLink := map[int]string{}
	for _, l := range links {
		// A pod's veth: a short prefix ("en") also names other links (the
		// node's ens5, whose /32 routes to the VPC router are no pod's).
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, h.cfg.VethPrefix) {
			podLink[l.Attrs().Index] = l.Attrs().Name
		}
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := dump(ctx, "routes", func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, ok := podLink[r.LinkIndex]
		dst, dstOK := prefixOf(r.Dst)
		if !ok || !dstOK || r.Gw != nil {
			continue
		}
		ip, isStale := stale(dst)
		if !isStale {
			continue
		}
		if err := h.nl.RouteDel(&r); err != nil && !notFound(err) {
			return fmt.Errorf("delete stale route %s dev %s: %w", ip, name, err)
		}
		nRoutes++
		h.log.Debug("pruned stale pod route", "ip", ip, "interface", name)
	}
	h.log.Info("pruned stale pod routing", "rules", nRules, "routes", nRoutes, "live", len(alive))
	return nil
}
