package hostnet

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// eniState is what SetupENI controls, rendered for comparison.
type eniState struct {
	up      bool
	mtu     int
	addrs   []string // IPv4 addresses on the link
	main    []string // main-table routes through the link
	table   []string // routes in the ENI table
	rules   []string // rules at ENIRulePriority
	linkIdx int
}

func routeString(r netlink.Route) string {
	dst := "default"
	if p, ok := prefixOf(r.Dst); ok && p.Bits() != 0 {
		dst = p.String()
	}
	s := dst
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	s += fmt.Sprintf(" dev %d", r.LinkIndex)
	if r.Scope == netlink.SCOPE_LINK {
		s += " scope link"
	}
	return s
}

func readENI(t *testing.T, h *netlink.Handle, name string, table int) eniState {
	t.Helper()
	l := must[netlink.Link](t)(h.LinkByName(name))
	st := eniState{up: l.Attrs().Flags&unix.IFF_UP != 0, mtu: l.Attrs().MTU, linkIdx: l.Attrs().Index}
	for _, a := range must[[]netlink.Addr](t)(h.AddrList(l, netlink.FAMILY_V4)) {
		st.addrs = append(st.addrs, a.IPNet.String())
	}
	for _, r := range must[[]netlink.Route](t)(h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)) {
		st.main = append(st.main, routeString(r))
	}
	for _, r := range must[[]netlink.Route](t)(h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)) {
		st.table = append(st.table, routeString(r))
	}
	st.rules = eniRulesIn(t, h)
	slices.Sort(st.table)
	return st
}

func eniRulesIn(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	var out []string
	for _, r := range must[[]netlink.Rule](t)(h.RuleList(netlink.FAMILY_V4)) {
		if r.Priority == ENIRulePriority {
			out = append(out, fmt.Sprintf("from %s lookup %d", r.Src, r.Table))
		}
	}
	slices.Sort(out)
	return out
}

func TestSetupENI(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	ctx := t.Context()
	nodeNS, node := newNS(t)
	vpcNS, vpc := newNS(t)
	eni1MAC, eni2MAC, card1MAC := mustMAC(t, "02:00:00:00:01:01"), mustMAC(t, "02:00:00:00:02:01"), mustMAC(t, "02:00:00:01:00:01")
	// VLANs on a trunk ENI, bridges and bonds carry the ENI's MAC too: they
	// must not be picked. This one comes first in the link list. (A bridge:
	// the test kernel has no 8021q.)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-twin", HardwareAddr: eni2MAC}}
	if err := node.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addVeth(t, node, "eth1", eni1MAC, "vpc1", vpcNS, vpc)
	addVeth(t, node, "eth2", eni2MAC, "vpc2", vpcNS, vpc)
	// Device 0 of network card 1 (a multi-NIC pod's ENI): table 10100.
	addVeth(t, node, "eth100", card1MAC, "vpc100", vpcNS, vpc)
	// Leave eth2 down with a stray address, as a previous boot's network
	// scripts might have: SetupENI must bring it up and converge.
	eth2 := must[netlink.Link](t)(node.LinkByName("eth2"))
	if err := node.LinkSetDown(eth2); err != nil {
		t.Fatal(err)
	}
	addAddr(t, node, "eth2", "10.0.3.99/24")
	h := newHost(t, Config{NetNS: nodeNS, MTU: 9001, VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})

	type eni struct {
		name   string
		mac    []byte
		dev    int
		card   int
		ip     string
		subnet string
	}
	enis := []eni{
		{"eth1", eni1MAC, 1, 0, "10.0.2.10", "10.0.2.0/24"},
		{"eth2", eni2MAC, 2, 0, "10.0.3.10", "10.0.3.0/24"},
		{"eth100", card1MAC, 0, 1, "10.0.8.10", "10.0.8.0/24"},
	}
	want := func(e eni, idx int) eniState {
		gw := netip.MustParsePrefix(e.subnet).Addr().Next()
		bits := netip.MustParsePrefix(e.subnet).Bits()
		var rules []string
		for _, o := range enis {
			rules = append(rules, fmt.Sprintf("from %s/32 lookup %d", o.ip, RouteTable(o.dev, o.card)))
		}
		return eniState{
			up:      true,
			mtu:     9001,
			addrs:   []string{fmt.Sprintf("%s/%d", e.ip, bits)},
			table:   []string{fmt.Sprintf("%s/32 dev %d scope link", gw, idx), fmt.Sprintf("default via %s dev %d", gw, idx)},
			rules:   rules,
			linkIdx: idx,
		}
	}
	setup := func() {
		t.Helper()
		for _, e := range enis {
			if err := h.SetupENI(ctx, e.mac, e.dev, e.card, netip.MustParseAddr(e.ip), netip.MustParsePrefix(e.subnet)); err != nil {
				t.Fatalf("SetupENI %s: %v", e.name, err)
			}
		}
	}
	check := func(when string) {
		t.Helper()
		for _, e := range enis {
			got := readENI(t, node, e.name, RouteTable(e.dev, e.card))
			w := want(e, got.linkIdx)
			if fmt.Sprint(got) != fmt.Sprint(w) {
				t.Errorf("%s, %s:\n got %+v\nwant %+v", when, e.name, got, w)
			}
		}
	}
	// The first time concurrently, as the pool may attach several ENIs.
	errc := make(chan error, len(enis))
	for _, e := range enis {
		go func() {
			errc <- h.SetupENI(ctx, e.mac, e.dev, e.card, netip.MustParseAddr(e.ip), netip.MustParsePrefix(e.subnet))
		}()
	}
	for range enis {
		if err := <-errc; err != nil {
			t.Fatalf("SetupENI: %v", err)
		}
	}
	check("after SetupENI")
	setup()
	check("after a second SetupENI")

	// The ENI on device 2 is replaced by another with a new address and
	// subnet: the table and rule converge, nothing of the old one stays.
	enis[1] = eni{"eth2", eni2MAC, 2, 0, "10.0.4.20", "10.0.4.0/22"}
	setup()
	check("after re-addressing device 2")

	// The kernel's prefix route must not come back from an address that
	// already existed without NOPREFIXROUTE.
	eth1 := must[netlink.Link](t)(node.LinkByName("eth1"))
	if err := node.AddrDel(eth1, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.0.2.10/24"))}); err != nil {
		t.Fatal(err)
	}
	addAddr(t, node, "eth1", "10.0.2.10/24")
	setup()
	check("after a plain re-add of the address")

	if err := h.TeardownENI(ctx, 2, 0); err != nil {
		t.Fatalf("TeardownENI: %v", err)
	}
	if got := readENI(t, node, "eth2", 3); len(got.table) != 0 || slices.Contains(got.rules, "from 10.0.4.20/32 lookup 3") {
		t.Errorf("after TeardownENI(2): table 3 %v, rules %v", got.table, got.rules)
	}
	if got := readENI(t, node, "eth1", 2); len(got.table) != 2 || !slices.Equal(got.rules, []string{"from 10.0.2.10/32 lookup 2", "from 10.0.8.10/32 lookup 10100"}) {
		t.Errorf("TeardownENI(2) touched device 1: table 2 %v, rules %v", got.table, got.rules)
	}
	if err := h.TeardownENI(ctx, 2, 0); err != nil {
		t.Errorf("second TeardownENI: %v", err)
	}
	if err := h.TeardownENI(ctx, 0, 0); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("TeardownENI(0) = %v, want ErrInvalidArg (never flush main)", err)
	}
	if err := h.SetupENI(ctx, eni1MAC, 0, 0, netip.MustParseAddr("10.0.2.10"), netip.MustParsePrefix("10.0.2.0/24")); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("SetupENI device 0 = %v, want ErrInvalidArg", err)
	}
	if err := h.TeardownENI(ctx, 0, 1); err != nil {
		t.Fatalf("TeardownENI(0) of card 1: %v", err)
	}
	if got := readENI(t, node, "eth100", 10100); len(got.table) != 0 || slices.Contains(got.rules, "from 10.0.8.10/32 lookup 10100") {
		t.Errorf("after TeardownENI of card 1's device 0: table 10100 %v, rules %v", got.table, got.rules)
	}
}

func TestSetupENIWaitsForLink(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	nodeNS, node := newNS(t)
	vpcNS, vpc := newNS(t)
	h := newHost(t, Config{NetNS: nodeNS, MTU: 1500, ExternalSNAT: true})
	mac := mustMAC(t, "02:00:00:00:03:01")

	t.Run("appears after attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			errc <- h.SetupENI(ctx, mac, 3, 0, netip.MustParseAddr("10.0.5.10"), netip.MustParsePrefix("10.0.5.0/24"))
		}()
		time.Sleep(300 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("SetupENI returned before the link existed: %v", err)
		default:
		}
		addVeth(t, node, "eth3", mac, "vpc3", vpcNS, vpc)
		if err := <-errc; err != nil {
			t.Fatalf("SetupENI: %v", err)
		}
		if got := readENI(t, node, "eth3", 4); got.mtu != 1500 || len(got.table) != 2 {
			t.Errorf("eth3 after waiting: %+v", got)
		}
	})
	t.Run("never appears", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err := h.SetupENI(ctx, mustMAC(t, "02:00:00:00:09:09"), 4, 0, netip.MustParseAddr("10.0.6.10"), netip.MustParsePrefix("10.0.6.0/24"))
		if !errors.Is(err, ErrLinkNotFound) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SetupENI = %v, want ErrLinkNotFound and DeadlineExceeded", err)
		}
	})
}
