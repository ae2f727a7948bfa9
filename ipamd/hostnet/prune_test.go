package hostnet

import (
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestPruneStalePodRules(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	ctx := t.Context()
	nodeNS, node := newNS(t)
	for _, name := range []string{"eni1", "eni2", "other0"} {
		if err := node.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{name, name + "p"} {
			if err := node.LinkSetUp(must[netlink.Link](t)(node.LinkByName(n))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Named with the prefix but no veth (the node's ens5 with prefix
	// "en"): its /32 routes are not a pod's.
	if err := node.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "eniifb"}}); err != nil {
		t.Fatal(err)
	}
	if err := node.LinkSetUp(must[netlink.Link](t)(node.LinkByName("eniifb"))); err != nil {
		t.Fatal(err)
	}
	const (
		notVeth   = "10.0.1.4"
		live1     = "10.0.1.5"
		stale1    = "10.0.1.6"
		stale2    = "10.0.1.8"
		notPodDev = "10.0.1.7"
		mapped    = "10.0.1.9" // live, given as an IPv4-mapped key
	)
	for _, r := range []struct{ dev, dst string }{
		{"eni1", live1 + "/32"},
		{"eni2", stale1 + "/32"},
		{"eni1", stale2 + "/32"},
		{"eni2", mapped + "/32"},
		{"other0", notPodDev + "/32"},
		{"eniifb", notVeth + "/32"},
		{"eni1", "10.0.9.0/24"},
	} {
		addRoute(t, node, r.dev, r.dst, "", netlink.SCOPE_LINK)
	}
	rule := func(prio int, from, to string, table int) {
		t.Helper()
		r := netlink.NewRule()
		r.Priority, r.Table = prio, table
		if from != "" {
			r.Src = ipNet(netip.MustParsePrefix(from))
		}
		if to != "" {
			r.Dst = ipNet(netip.MustParsePrefix(to))
		}
		if err := node.RuleAdd(r); err != nil {
			t.Fatalf("rule %d %s %s: %v", prio, from, to, err)
		}
	}
	rule(ToPodRulePriority, "", live1+"/32", unix.RT_TABLE_MAIN)
	rule(ToPodRulePriority, "", stale1+"/32", unix.RT_TABLE_MAIN)
	rule(ToPodRulePriority, "", stale2+"/32", unix.RT_TABLE_MAIN)
	rule(ToPodRulePriority, "", mapped+"/32", unix.RT_TABLE_MAIN)
	rule(FromPodRulePriority, live1+"/32", "", 3)
	rule(FromPodRulePriority, stale1+"/32", "", 3)
	rule(FromPodRulePriority, mapped+"/32", "", 3)
	// Not pod rules: kept whatever their addresses.
	rule(ToPodRulePriority, "", "10.0.9.0/24", unix.RT_TABLE_MAIN)
	rule(ToPodRulePriority, "", stale1+"/32", 100)
	rule(1000, "", stale1+"/32", unix.RT_TABLE_MAIN)
	rule(ENIRulePriority, stale1+"/32", "", 3)

	h := newHost(t, Config{NetNS: nodeNS, ExternalSNAT: true})
	live := map[netip.Addr]bool{
		netip.MustParseAddr(live1):              true,
		netip.MustParseAddr(stale1):             false, // present but not live
		netip.MustParseAddr("::ffff:" + mapped): true,
		netip.MustParseAddr("10.0.200.1"):       true, // live, no routing (yet)
		netip.MustParseAddr("fd00::1"):          true,
	}
	wantRules := []string{
		fmt.Sprintf("1000 to %s/32 lookup 254", stale1),
		fmt.Sprintf("1536 from %s/32 lookup 3", live1),
		fmt.Sprintf("1536 from %s/32 lookup 3", mapped),
		fmt.Sprintf("32765 from %s/32 lookup 3", stale1),
		fmt.Sprintf("512 to %s/32 lookup 100", stale1),
		fmt.Sprintf("512 to %s/32 lookup 254", live1),
		fmt.Sprintf("512 to %s/32 lookup 254", mapped),
		"512 to 10.0.9.0/24 lookup 254",
	}
	wantRoutes := []string{
		"10.0.1.4/32 dev eniifb",
		"10.0.1.5/32 dev eni1",
		"10.0.1.7/32 dev other0",
		"10.0.1.9/32 dev eni2",
		"10.0.9.0/24 dev eni1",
	}
	slices.Sort(wantRules)
	for i := range 2 { // the second run finds nothing to do
		if err := h.PruneStalePodRules(ctx, live); err != nil {
			t.Fatalf("PruneStalePodRules #%d: %v", i+1, err)
		}
		var rules []string
		for _, r := range must[[]netlink.Rule](t)(node.RuleList(netlink.FAMILY_V4)) {
			switch {
			case r.Priority == 0 || r.Priority >= 32766:
				continue // the kernel's own
			case r.Src != nil:
				rules = append(rules, fmt.Sprintf("%d from %s lookup %d", r.Priority, r.Src, r.Table))
			default:
				rules = append(rules, fmt.Sprintf("%d to %s lookup %d", r.Priority, r.Dst, r.Table))
			}
		}
		slices.Sort(rules)
		if !slices.Equal(rules, wantRules) {
			t.Errorf("run %d: rules\n got %q\nwant %q", i+1, rules, wantRules)
		}
		names := map[int]string{}
		for _, l := range must[[]netlink.Link](t)(node.LinkList()) {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		var routes []string
		for _, r := range must[[]netlink.Route](t)(node.RouteList(nil, netlink.FAMILY_V4)) {
			routes = append(routes, fmt.Sprintf("%s dev %s", r.Dst, names[r.LinkIndex]))
		}
		slices.Sort(routes)
		if !slices.Equal(routes, wantRoutes) {
			t.Errorf("run %d: main routes\n got %q\nwant %q", i+1, routes, wantRoutes)
		}
	}
}
