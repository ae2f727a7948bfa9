package podnet

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/testenv"
)

// Against the real kernel: a node namespace and pod namespaces made for
// each test.

type env struct {
	home, node netns.NsHandle
	h          *netlink.Handle
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t, "namespaces and veths")
	home, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { home.Close() })
	e := &env{home: home}
	e.node, e.h = testenv.NewNetNS(t)
	return e
}

// wire is ipamd's ADD of a pod: links in podNS, then ip.
func (e *env) wire(t *testing.T, podNS netns.NsHandle, hostName string, ip net.IP) *Links {
	t.Helper()
	l, err := Create(e.h, e.home, podNS, "eth0", hostName, 1500)
	if err != nil {
		t.Fatalf("create %s: %v", hostName, err)
	}
	t.Cleanup(l.Close)
	if err := l.Assign(ip, MainTable); err != nil {
		t.Fatalf("assign %s: %v", ip, err)
	}
	return l
}

// inNode runs f on a thread in the node's namespace, as berth-cni's DEL
// and GC run in the node's namespace.
func (e *env) inNode(t *testing.T, f func()) {
	t.Helper()
	if err := testenv.OnThreadIn(e.node, func() error { f(); return nil }); err != nil {
		t.Error(err)
	}
}

func podMAC(t *testing.T, podNS netns.NsHandle) string {
	t.Helper()
	h, err := netlink.NewHandleAt(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		return ""
	}
	return l.Attrs().HardwareAddr.String()
}

func (e *env) routes(t *testing.T, ip net.IP) int {
	t.Helper()
	rs, err := e.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: HostNet(ip), Table: MainTable}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	return len(rs)
}

func (e *env) hasLink(name string) bool {
	_, err := e.h.LinkByName(name)
	return err == nil
}

// A second ADD of an attachment whose pod already has the interface fails
// (CNI: "If an interface of the requested name already exists in the
// container, the CNI plugin MUST return with an error") and leaves the
// pod's network as it was.
func TestCreateRefusesAnInterfaceThePodHas(t *testing.T) {
	e := newEnv(t)
	pod, _ := testenv.NewNetNS(t)
	e.wire(t, pod, "enia", net.IPv4(10, 9, 0, 5))
	mac := podMAC(t, pod)

	l, err := Create(e.h, e.home, pod, "eth0", "enia", 1500)
	if !errors.Is(err, ErrInterfaceExists) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("second ADD: %v, want ErrInterfaceExists", err)
	}
	if got := podMAC(t, pod); got != mac || !e.hasLink("enia") || e.routes(t, net.IPv4(10, 9, 0, 5)) != 1 {
		t.Fatalf("after the refused ADD: pod eth0 %q (was %q), host veth %v, routes %d", got, mac, e.hasLink("enia"), e.routes(t, net.IPv4(10, 9, 0, 5)))
	}
}

// A host veth of the same name from an earlier sandbox of the pod is
// replaced, as the VPC CNI does.
func TestCreateReplacesAnEarlierSandboxVeth(t *testing.T) {
	e := newEnv(t)
	old, _ := testenv.NewNetNS(t)
	e.wire(t, old, "enib", net.IPv4(10, 9, 0, 6))
	cur, _ := testenv.NewNetNS(t)
	e.wire(t, cur, "enib", net.IPv4(10, 9, 0, 7))
	if podMAC(t, cur) == "" || podMAC(t, old) != "" {
		t.Fatalf("new sandbox eth0 %q, old sandbox eth0 %q: want the new one wired, the old pair gone", podMAC(t, cur), podMAC(t, old))
	}
}

// TeardownHost of an address removes its rules, route and veth; of an
// address the veth does not route (a stale allocation of the pod's earlier
// sandbox, whose veth name the current one has), only that address's
// rules.
func TestTeardownHostOnlyTouchesTheAddressesVeth(t *testing.T) {
	e := newEnv(t)
	cur, _ := testenv.NewNetNS(t)
	stale, live := net.IPv4(10, 9, 0, 8), net.IPv4(10, 9, 0, 9)
	e.wire(t, cur, "enic", live)
	// The stale address's rules are still there.
	e.inNode(t, func() {
		for _, r := range Rules(stale, MainTable) {
			if err := netlink.RuleAdd(r); err != nil {
				t.Errorf("rule: %v", err)
			}
		}
	})
	rulesTo := func(ip net.IP) int {
		rs, err := e.h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if r.Priority == ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(ip) {
				n++
			}
		}
		return n
	}

	e.inNode(t, func() {
		if err := TeardownHost("enic", stale, MainTable, true); err != nil {
			t.Errorf("teardown of the stale address: %v", err)
		}
	})
	if !e.hasLink("enic") || e.routes(t, live) != 1 || rulesTo(live) != 1 || podMAC(t, cur) == "" {
		t.Fatalf("teardown of %s broke the pod that has %s: veth %v, routes %d, rules %d", stale, live, e.hasLink("enic"), e.routes(t, live), rulesTo(live))
	}
	if rulesTo(stale) != 0 {
		t.Fatalf("the stale address's rule is still there")
	}

	e.inNode(t, func() {
		if err := TeardownHost("enic", live, MainTable, true); err != nil {
			t.Errorf("teardown: %v", err)
		}
		// Idempotent.
		if err := TeardownHost("enic", live, MainTable, true); err != nil {
			t.Errorf("second teardown: %v", err)
		}
	})
	if e.hasLink("enic") || e.routes(t, live) != 0 || rulesTo(live) != 0 {
		t.Fatalf("after teardown of %s: veth %v, routes %d, rules %d", live, e.hasLink("enic"), e.routes(t, live), rulesTo(live))
	}
}

// The undo of an ADD that did not complete removes its own veth, not the
// one another sandbox of the same pod has made under the same name since.
func TestUndoLeavesALaterSandboxVeth(t *testing.T) {
	e := newEnv(t)
	first, _ := testenv.NewNetNS(t)
	second, _ := testenv.NewNetNS(t)
	l1, err := Create(e.h, e.home, first, "eth0", "enid", 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	e.wire(t, second, "enid", net.IPv4(10, 9, 0, 10))
	l1.Undo(nil, MainTable)
	if !e.hasLink("enid") || podMAC(t, second) == "" {
		t.Fatalf("the first sandbox's undo removed the second's veth: host veth %v, second eth0 %q", e.hasLink("enid"), podMAC(t, second))
	}
}

// DeleteRules with an unknown table (-1) removes the "from" rule whatever
// its table, and the "to" rule.
func TestDeleteRulesUnknownTable(t *testing.T) {
	e := newEnv(t)
	ip := net.IPv4(10, 9, 0, 11)
	count := func() int {
		rs, err := e.h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if (r.Src != nil && r.Src.IP.Equal(ip)) || (r.Dst != nil && r.Dst.IP.Equal(ip)) {
				n++
			}
		}
		return n
	}
	e.inNode(t, func() {
		for _, r := range Rules(ip, 7) {
			if err := netlink.RuleAdd(r); err != nil {
				t.Errorf("rule: %v", err)
			}
		}
	})
	if n := count(); n != 2 {
		t.Fatalf("%d rules set up, want 2", n)
	}
	e.inNode(t, func() {
		if err := DeleteRules(ip, -1); err != nil {
			t.Errorf("DeleteRules: %v", err)
		}
	})
	if n := count(); n != 0 {
		t.Fatalf("%d rules left", n)
	}
}

// TeardownVeth without a name (DEL without prevResult, GC: berth-cni does
// not hash pod names) removes the route and veth that serve the address,
// leaves other pods' alone, and never touches a /32 route through
// something that is not a veth.
func TestTeardownVethByAddress(t *testing.T) {
	e := newEnv(t)
	podA, _ := testenv.NewNetNS(t)
	podB, _ := testenv.NewNetNS(t)
	a, b, other := net.IPv4(10, 9, 0, 20), net.IPv4(10, 9, 0, 21), net.IPv4(10, 9, 0, 22)
	e.wire(t, podA, "enie", a)
	e.wire(t, podB, "enif", b)
	dummy := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "notaveth"}} // no dummy driver in every kernel
	if err := e.h.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	if err := e.h.LinkSetUp(dummy); err != nil {
		t.Fatal(err)
	}
	if err := e.h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Dst: HostNet(other), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	e.inNode(t, func() {
		for _, ip := range []net.IP{a, other, net.IPv4(10, 9, 0, 99)} {
			if err := TeardownVeth("", ip, true); err != nil {
				t.Errorf("teardown of %s: %v", ip, err)
			}
		}
	})
	if e.hasLink("enie") || e.routes(t, a) != 0 {
		t.Fatalf("the veth routing %s is still there: %v, routes %d", a, e.hasLink("enie"), e.routes(t, a))
	}
	if !e.hasLink("enif") || e.routes(t, b) != 1 || podMAC(t, podB) == "" {
		t.Fatalf("another pod's wiring went: veth %v, routes %d", e.hasLink("enif"), e.routes(t, b))
	}
	if !e.hasLink("notaveth") || e.routes(t, other) != 1 {
		t.Fatalf("a route through a device that is not a veth was removed")
	}
}

// A multi-NIC pod's second interface: its own gateway (169.254.1.2), its
// routes in the pod's table 1 and the rule that picks it for the
// interface's address, beside eth0's main-table wiring; CheckIndexed
// verifies it and sees the rule gone; Undo leaves nothing in the pod.
func TestSecondInterfaceOfAMultiNICPod(t *testing.T) {
	e := newEnv(t)
	pod, ph := testenv.NewNetNS(t)
	ip0, ip1 := net.IPv4(10, 9, 1, 5), net.IPv4(10, 9, 2, 5)
	e.wire(t, pod, "enim0", ip0)
	l, err := CreateIndexed(e.h, e.home, pod, "mNicIf1", "enim1", 1500, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.Assign(ip1, 10101); err != nil {
		t.Fatal(err)
	}
	if err := CheckIndexed(e.h, e.home, pod, "mNicIf1", "enim1", ip1, 10101, 1); err != nil {
		t.Fatalf("CheckIndexed: %v", err)
	}
	if err := Check(e.h, e.home, pod, "eth0", "enim0", ip0, MainTable); err != nil {
		t.Fatalf("eth0 after the second interface: %v", err)
	}
	// The pod routes from ip1 through mNicIf1, the rest through eth0.
	for _, c := range []struct {
		src  net.IP
		link string
		gw   net.IP
	}{{ip1, "mNicIf1", GatewayOf(1)}, {ip0, "eth0", Gateway}} {
		rs, err := ph.RouteGetWithOptions(net.IPv4(8, 8, 8, 8), &netlink.RouteGetOptions{SrcAddr: c.src})
		if err != nil || len(rs) != 1 {
			t.Fatalf("route from %s: %v %v", c.src, rs, err)
		}
		link, _ := ph.LinkByIndex(rs[0].LinkIndex)
		if link == nil || link.Attrs().Name != c.link || !rs[0].Gw.Equal(c.gw) {
			t.Errorf("from %s the pod routes via %v on %v, want %s on %s", c.src, rs[0].Gw, link, c.gw, c.link)
		}
	}
	if err := ph.RuleDel(podRule(ip1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := CheckIndexed(e.h, e.home, pod, "mNicIf1", "enim1", ip1, 10101, 1); err == nil {
		t.Fatal("CheckIndexed passed without the pod's rule")
	}
	if err := ph.RuleAdd(podRule(ip1, 1)); err != nil {
		t.Fatal(err)
	}
	l.Undo(ip1, 10101)
	rules, err := ph.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Priority == PodRulePriority {
			t.Errorf("rule %v left in the pod after Undo", r)
		}
	}
	if e.hasLink("enim1") || !e.hasLink("enim0") {
		t.Errorf("after Undo: enim1 present %v, enim0 present %v", e.hasLink("enim1"), e.hasLink("enim0"))
	}
}
