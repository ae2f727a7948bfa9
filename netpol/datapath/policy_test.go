package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// countEntries counts a map's entries.
func countEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	n := 0
	it := m.Iterate()
	k := make([]byte, m.KeySize())
	v := make([]byte, m.ValueSize())
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// ingressOnly isolates ingress with rules and leaves egress open.
func ingressOnly(rules ...Rule) Policy {
	return Policy{Ingress: Direction{Isolated: true, Rules: rules}}
}

// TestCIDRAndExcept: CIDR peers minus Except, per rule: another rule
// still allows what one rule's Except removes; egress matches destinations.
func TestCIDRAndExcept(t *testing.T) {
	tn := newTestNet(t, 3)
	a, b, c := tn.pods[0], tn.pods[1], tn.pods[2]
	serveTCP(t, b, 8080)
	serveTCP(t, c, 8080)
	d := tn.open(t)
	for _, p := range tn.pods {
		if err := d.Apply(p.ifindex, AllowAll); err != nil {
			t.Fatal(err)
		}
		tn.attach(t, d, p)
	}

	// b admits 10.99.0.0/24 except a.
	exceptA := Rule{ID: 1, CIDRs: []netip.Prefix{pfx("10.99.0.0/24")}, Except: []netip.Prefix{pfx("10.99.0.1/32")}}
	if err := d.Apply(b.ifindex, ingressOnly(exceptA)); err != nil {
		t.Fatal(err)
	}
	if canTCP(a.ns, b.ip, 8080) {
		t.Error("except: a->b passed")
	}
	if !canTCP(c.ns, b.ip, 8080) {
		t.Error("cidr: c->b blocked")
	}
	// Another rule allowing a: the first rule's Except does not remove it.
	onlyA := Rule{ID: 2, CIDRs: []netip.Prefix{pfx("10.99.0.1/32")}}
	if err := d.Apply(b.ifindex, ingressOnly(exceptA, onlyA)); err != nil {
		t.Fatal(err)
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("except of rule 1 removed what rule 2 allows: a->b blocked")
	}
	if !canTCP(c.ns, b.ip, 8080) {
		t.Error("c->b blocked")
	}
	// A CIDR inside an Except of the same rule is removed whole.
	inside := Rule{ID: 3, CIDRs: []netip.Prefix{pfx("10.99.0.0/30"), pfx("10.99.0.3/32")}, Except: []netip.Prefix{pfx("10.99.0.2/31")}}
	if err := d.Apply(b.ifindex, ingressOnly(inside)); err != nil {
		t.Fatal(err)
	}
	if canTCP(c.ns, b.ip, 8080) {
		t.Error("cidr inside except: c->b passed")
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("a->b blocked")
	}

	// Egress: a may reach c only.
	if err := d.Apply(a.ifindex, Policy{Egress: Direction{Isolated: true, Rules: []Rule{{ID: 4, CIDRs: []netip.Prefix{netip.PrefixFrom(c.ip, 32)}}}}}); err != nil {
		t.Fatal(err)
	}
	if canTCP(a.ns, b.ip, 8080) {
		t.Error("egress cidr: a->b passed")
	}
	if !canTCP(a.ns, c.ip, 8080) {
		t.Error("egress cidr: a->c blocked")
	}
}

// TestPorts: one port, a range (endPort), any port of a protocol, TCP vs
// UDP vs SCTP (raw packets), any protocol, no ports; ICMP and GRE only
// where a rule has no ports.
func TestPorts(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	for _, port := range []int{8080, 8081, 9000, 9003, 9004} {
		serveTCP(t, b, port)
	}
	d := tn.open(t)
	for _, p := range tn.pods {
		if err := d.Apply(p.ifindex, AllowAll); err != nil {
			t.Fatal(err)
		}
		tn.attach(t, d, p)
	}
	any := []netip.Prefix{pfx("0.0.0.0/0")}
	cases := []struct {
		name  string
		ports []PortRange
		tcp   map[int]bool
		udp   map[int]bool
		sctp  map[uint16]bool
	}{
		{"one tcp port", []PortRange{{Protocol: ProtoTCP, Start: 8080}},
			map[int]bool{8080: true, 8081: false}, map[int]bool{8080: false}, map[uint16]bool{8080: false}},
		{"range", []PortRange{{Protocol: ProtoTCP, Start: 9000, End: 9003}},
			map[int]bool{8080: false, 9000: true, 9003: true, 9004: false}, nil, nil},
		{"any tcp port", []PortRange{{Protocol: ProtoTCP}},
			map[int]bool{8080: true, 9004: true}, map[int]bool{8080: false}, map[uint16]bool{8080: false}},
		{"udp only", []PortRange{{Protocol: ProtoUDP, Start: 8080}},
			map[int]bool{8080: false}, map[int]bool{8080: true, 8081: false}, map[uint16]bool{8080: false}},
		{"sctp", []PortRange{{Protocol: ProtoSCTP, Start: 7000, End: 7001}},
			map[int]bool{8080: false}, map[int]bool{7000: false}, map[uint16]bool{7000: true, 7001: true, 7002: false}},
		{"any protocol", []PortRange{{Protocol: ProtoAny}},
			map[int]bool{8080: true, 9004: true}, map[int]bool{8080: true}, map[uint16]bool{7002: true}},
		{"no ports", nil,
			map[int]bool{8080: true}, map[int]bool{8080: true}, map[uint16]bool{1: true}},
	}
	// ICMP (and any protocol without ports) matches only rules without
	// Ports or with any protocol.
	icmp := map[string]bool{"one tcp port": false, "udp only": false, "sctp": false, "any protocol": true, "no ports": true}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Apply(b.ifindex, ingressOnly(Rule{ID: 7, CIDRs: any, Ports: tc.ports})); err != nil {
				t.Fatal(err)
			}
			for port, want := range tc.tcp {
				if got := canTCP(a.ns, b.ip, port); got != want {
					t.Errorf("tcp %d: allowed %v, want %v", port, got, want)
				}
			}
			for port, want := range tc.udp {
				if got := canUDP(t, a, b, port); got != want {
					t.Errorf("udp %d: allowed %v, want %v", port, got, want)
				}
			}
			if want, ok := icmp[tc.name]; ok {
				// A protocol without ports we parse (GRE), short payload.
				if got := canRaw(t, a, b, 47, nil); got != want {
					t.Errorf("gre: allowed %v, want %v", got, want)
				}
				if got := canPing(t, a, b, false); got != want {
					t.Errorf("icmp echo: allowed %v, want %v", got, want)
				}
			}
			for port, want := range tc.sctp {
				if got := canSCTP(t, a, b, 5000, port); got != want {
					t.Errorf("sctp %d: allowed %v, want %v", port, got, want)
				}
			}
		})
	}
}

// TestConntrackReplies: a pod whose ingress is isolated still gets the
// replies of connections it opened, and nothing else.
func TestConntrackReplies(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, a, 8080)
	serveTCP(t, b, 8080)
	d := tn.open(t)
	if err := d.Apply(a.ifindex, ingressOnly()); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, a)
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("a->b: replies to a's own connection dropped")
	}
	if !canUDP(t, a, b, 8080) {
		t.Error("a->b udp blocked by a's ingress isolation")
	}
	if canTCP(b.ns, a.ip, 8080) {
		t.Error("b->a passed into an isolated pod")
	}
	// Egress isolation with a rule to b: b's replies come back.
	if err := d.Apply(a.ifindex, Policy{
		Ingress: Direction{Isolated: true},
		Egress:  Direction{Isolated: true, Rules: []Rule{{ID: 1, CIDRs: []netip.Prefix{netip.PrefixFrom(b.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}}}},
	}); err != nil {
		t.Fatal(err)
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("a->b:8080 under egress rule blocked")
	}
}

// TestPolicyChangeEstablished proves the documented rule: a policy change
// re-evaluates established flows once; allowed ones continue without a
// drop, denied ones are cut.
func TestPolicyChangeEstablished(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	d := tn.open(t)
	for _, p := range tn.pods {
		if err := d.Apply(p.ifindex, AllowAll); err != nil {
			t.Fatal(err)
		}
		tn.attach(t, d, p)
	}
	fromA := func(id uint32) Rule { return Rule{ID: id, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}} }
	if err := d.Apply(b.ifindex, ingressOnly(fromA(1))); err != nil {
		t.Fatal(err)
	}
	conn, err := dial(a.ns, b.ip, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := roundTrip(conn); err != nil {
		t.Fatal(err)
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// Still allowed under a different policy: no drop at all.
	for i := range 20 {
		if err := d.Apply(b.ifindex, ingressOnly(Rule{ID: 9, CIDRs: []netip.Prefix{pfx("10.0.0.0/8")}}, fromA(uint32(10+i)))); err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(conn); err != nil {
			t.Fatalf("still-allowed flow after policy change %d: %v", i, err)
		}
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.IngressDenied != before.IngressDenied || after.EgressDenied != before.EgressDenied {
		t.Errorf("drops while the flow stayed allowed: before %+v after %+v", before, after)
	}
	// Denied by the new policy: cut, also for replies b sends.
	if err := d.Apply(b.ifindex, ingressOnly(Rule{ID: 3, CIDRs: []netip.Prefix{pfx("192.0.2.0/24")}})); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(conn); err == nil {
		t.Error("flow denied by the new policy still passes")
	}
}

// TestRemove: Attach is idempotent; Remove (twice) detaches and leaves
// nothing of the pod in any map, conntrack included.
func TestRemove(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	d := tn.open(t)
	p := ingressOnly(Rule{ID: 1, CIDRs: []netip.Prefix{pfx("10.0.0.0/8")}, Except: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 80, End: 90}}})
	if err := d.Apply(b.ifindex, p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(a.ifindex, AllowAll); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, a)
	tn.attach(t, d, b)
	tn.attach(t, d, b) // idempotent
	if canTCP(a.ns, b.ip, 8080) {
		t.Fatal("a->b passed before Remove")
	}
	if got, err := d.Attached(); err != nil || len(got) != 2 {
		t.Fatalf("attached %v %v, want 2 ifindexes", got, err)
	}
	_ = canTCP(b.ns, a.ip, 8080) // leaves conntrack entries on b's ifindex
	for range 2 {
		if err := d.Remove(b.ifindex); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("after Remove a->b still blocked")
	}
	if got, err := d.Attached(); err != nil || len(got) != 1 || got[0] != a.ifindex {
		t.Errorf("attached %v %v, want [%d]", got, err, a.ifindex)
	}
	assertNoState(t, d, b.ifindex)
	if err := d.Remove(a.ifindex); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, d)
}

// assertNoState checks that nothing in the maps belongs to ifindex.
func assertNoState(t *testing.T, d *Datapath, ifindex int) {
	t.Helper()
	var st netpolPodState
	if err := d.objs.PodStates.Lookup(uint32(ifindex), &st); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("pod state of %d still present (%v)", ifindex, err)
	}
	var k4 netpolCt4Key
	var v netpolCtVal
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k4, &v) {
		if k4.Ifindex == uint32(ifindex) {
			t.Errorf("conntrack entry of %d left: %+v", ifindex, k4)
		}
	}
	var k6 netpolCtKey
	it = d.objs.Conntrack6.Iterate()
	for it.Next(&k6, &v) {
		if k6.Ifindex == uint32(ifindex) {
			t.Errorf("IPv6 conntrack entry of %d left: %+v", ifindex, k6)
		}
	}
}

// assertEmpty checks that no rule or set entry is left.
func assertEmpty(t *testing.T, d *Datapath) {
	t.Helper()
	if n := countEntries(t, d.objs.Rules); n != 0 {
		t.Errorf("%d rules left", n)
	}
	if n := countEntries(t, d.objs.PeerSets); n != 0 {
		t.Errorf("%d peer set entries left", n)
	}
	if n := countEntries(t, d.objs.PortSets); n != 0 {
		t.Errorf("%d port set entries left", n)
	}
	if n := countEntries(t, d.objs.PodStates); n != 0 {
		t.Errorf("%d pod states left", n)
	}
}

// TestVerdictLog: events carry the tuple, direction, verdict and the
// allowing rule's ID; the per-second limit holds; reading stops with ctx.
func TestVerdictLog(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	d := tn.open(t)
	if err := d.Apply(b.ifindex, ingressOnly(Rule{ID: 42, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}})); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	// Off by default: nothing is logged.
	_ = canTCP(a.ns, b.ip, 8080)
	if err := d.SetVerdictLog(true, 1000); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan Verdict, 100)
	done := make(chan error, 1)
	go func() { done <- d.ReadVerdicts(ctx, func(v Verdict) { got <- v }) }()
	if !canTCP(a.ns, b.ip, 8080) {
		t.Fatal("a->b:8080 blocked")
	}
	_ = canTCP(a.ns, b.ip, 8081)
	var allowed, denied bool
	timeout := time.After(3 * time.Second)
	for !(allowed && denied) {
		select {
		case v := <-got:
			if v.Src != a.ip || v.Dst != b.ip || v.Dir != Ingress || v.Ifindex != b.ifindex || v.Protocol != ProtoTCP {
				t.Errorf("unexpected verdict %+v", v)
				continue
			}
			switch {
			case v.Allowed && v.DstPort == 8080 && v.RuleID == 42:
				allowed = true
			case !v.Allowed && v.DstPort == 8081 && v.RuleID == 0:
				denied = true
			default:
				t.Errorf("unexpected verdict %+v", v)
			}
		case <-timeout:
			t.Fatalf("verdicts: allowed %v denied %v, want both", allowed, denied)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ReadVerdicts returned %v, want context.Canceled", err)
	}
	// The rate limit holds: with 1 per second, a burst of denied SYNs
	// yields at most a couple of events.
	if err := d.SetVerdictLog(true, 1); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	n := 0
	go func() { done <- d.ReadVerdicts(ctx2, func(Verdict) { n++ }) }()
	for range 5 {
		_ = canTCP(a.ns, b.ip, 8081)
	}
	<-done
	if n > 4 {
		t.Errorf("%d events with a limit of 1 per second over ~2s", n)
	}
	if err := d.SetVerdictLog(false, 0); err != nil {
		t.Fatal(err)
	}
}

// TestApplyBadInput: each kind of bad input fails with ErrInvalidPolicy
// and leaves the maps and both pods' enforcement exactly as they were.
func TestApplyBadInput(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	serveTCP(t, b, 8081)
	serveTCP(t, a, 8080)
	d := tn.open(t)
	good := ingressOnly(Rule{ID: 1, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}})
	if err := d.Apply(b.ifindex, good); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(a.ifindex, ingressOnly()); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, a)
	tn.attach(t, d, b)
	check := func(when string) {
		t.Helper()
		if !canTCP(a.ns, b.ip, 8080) || canTCP(a.ns, b.ip, 8081) {
			t.Errorf("%s: b's enforcement is not its good policy", when)
		}
		if canTCP(b.ns, a.ip, 8080) {
			t.Errorf("%s: a's isolation changed", when)
		}
	}
	check("before")
	var before netpolPodState
	if err := d.objs.PodStates.Lookup(uint32(b.ifindex), &before); err != nil {
		t.Fatal(err)
	}
	entries := countEntries(t, d.objs.Rules) + countEntries(t, d.objs.PeerSets) + countEntries(t, d.objs.PortSets)
	bad := map[string]Policy{
		"invalid cidr":   ingressOnly(Rule{CIDRs: []netip.Prefix{{}}}),
		"invalid except": ingressOnly(Rule{CIDRs: []netip.Prefix{pfx("10.0.0.0/8")}, Except: []netip.Prefix{{}}}),
		"start > end":    ingressOnly(Rule{AnyPeer: true, Ports: []PortRange{{Protocol: ProtoTCP, Start: 90, End: 80}}}),
		"unknown proto":  ingressOnly(Rule{AnyPeer: true, Ports: []PortRange{{Protocol: 1, Start: 80}}}),
		"port, no proto": {Egress: Direction{Isolated: true, Rules: []Rule{{AnyPeer: true, Ports: []PortRange{{Start: 80}}}}}},
		"bad late rule": ingressOnly(Rule{ID: 5, AnyPeer: true},
			Rule{CIDRs: []netip.Prefix{pfx("10.0.0.0/8")}, Ports: []PortRange{{Protocol: 99}}}),
	}
	for name, p := range bad {
		err := d.Apply(b.ifindex, p)
		if !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: Apply returned %v, want ErrInvalidPolicy", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if err := d.Apply(0, AllowAll); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("ifindex 0: %v", err)
	}
	var after netpolPodState
	if err := d.objs.PodStates.Lookup(uint32(b.ifindex), &after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("pod state changed by bad input: %+v -> %+v", before, after)
	}
	if n := countEntries(t, d.objs.Rules) + countEntries(t, d.objs.PeerSets) + countEntries(t, d.objs.PortSets); n != entries {
		t.Errorf("map entries %d -> %d after bad input", entries, n)
	}
	check("after bad input")
}

// TestICMPErrorOfTrackedFlow: an ICMP error about a flow the pod opened
// (here port unreachable; needs-frag for path MTU discovery works the
// same) reaches a pod whose ingress admits nothing.
func TestICMPErrorOfTrackedFlow(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	d := tn.open(t)
	if err := d.Apply(b.ifindex, ingressOnly()); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	for _, dst := range []netip.Addr{a.ip, a.ip6} {
		var c net.Conn
		if err := inNS(b.ns, func() (err error) {
			c, err = net.Dial("udp", netip.AddrPortFrom(dst, 9).String()) // nothing listens
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(denyWait))
		_, err := c.Read(make([]byte, 8))
		c.Close()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("read after sending to a closed port of %s: %v, want ECONNREFUSED (the ICMP error let through)", dst, err)
		}
	}
}

// TestFragments: a fragmented datagram is judged by its first fragment
// (the only one with ports); later fragments pass on their own.
func TestFragments(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	d := tn.open(t)
	if err := d.Apply(b.ifindex, ingressOnly(Rule{ID: 1, AnyPeer: true, Ports: []PortRange{{Protocol: ProtoUDP, Start: 8080}}})); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	if !canUDPSize(t, a, b, 8080, 4000) {
		t.Error("fragmented datagram to an allowed port lost")
	}
	if canUDPSize(t, a, b, 8081, 4000) {
		t.Error("fragmented datagram to a denied port delivered")
	}
}

// TestPolicyChangeReplyFirst: when the first packet after a policy
// change is a reply, the flow is judged as its opener sent it (IPv4 and
// IPv6).
func TestPolicyChangeReplyFirst(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[v6], func(t *testing.T) {
			testPolicyChangeReplyFirst(t, v6)
		})
	}
}

func testPolicyChangeReplyFirst(t *testing.T, v6 bool) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	bAddr, elsewhere := netip.PrefixFrom(b.ip, 32), pfx("192.0.2.0/24")
	if v6 {
		bAddr, elsewhere = netip.PrefixFrom(b.ip6, 128), pfx("2001:db8::/32")
	}
	var ln net.Listener
	if err := inNS(b.ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(bAddr.Addr(), 8080).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := tn.open(t)
	egressTo := func(id uint32, p netip.Prefix) Policy {
		return Policy{Ingress: Direction{Isolated: true}, Egress: Direction{Isolated: true,
			Rules: []Rule{{ID: id, CIDRs: []netip.Prefix{p}}}}}
	}
	if err := d.Apply(a.ifindex, egressTo(1, bAddr)); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, a)
	client, err := dial(a.ns, bAddr.Addr(), 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	push := func() error { // the server speaks first
		if _, err := server.Write([]byte{'y'}); err != nil {
			return err
		}
		_ = client.SetReadDeadline(time.Now().Add(denyWait))
		_, err := client.Read(make([]byte, 1))
		return err
	}
	if err := push(); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(a.ifindex, egressTo(2, bAddr)); err != nil {
		t.Fatal(err)
	}
	if err := push(); err != nil {
		t.Errorf("reply-first after a still-allowing change: %v", err)
	}
	if err := d.Apply(a.ifindex, egressTo(3, elsewhere)); err != nil {
		t.Fatal(err)
	}
	if err := push(); err == nil {
		t.Error("reply-first after a denying change still delivered")
	}
}

// TestApplyUnderTraffic: while new connections and an established flow
// run, the pod's policy is replaced hundreds of times by policies of
// different shapes that all allow the traffic: not one packet is denied.
func TestApplyUnderTraffic(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	d := tn.open(t)
	aIP := netip.PrefixFrom(a.ip, 32)
	shapes := []Policy{
		ingressOnly(Rule{ID: 1, CIDRs: []netip.Prefix{aIP}}),
		ingressOnly(Rule{ID: 2, CIDRs: []netip.Prefix{pfx("10.99.0.0/16")}, Except: []netip.Prefix{pfx("10.99.0.2/32")}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8000, End: 8100}}}),
		ingressOnly(Rule{ID: 3, CIDRs: []netip.Prefix{pfx("192.0.2.0/24")}}, Rule{ID: 4, AnyPeer: true, Ports: []PortRange{{Protocol: ProtoTCP}}}),
		manyRules(500, a.ip, b.ip),
	}
	if err := d.Apply(b.ifindex, shapes[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(a.ifindex, AllowAll); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, a)
	tn.attach(t, d, b)
	conn, err := dial(a.ns, b.ip, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errc := make(chan error, 2)
	go func() {
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := roundTrip(conn); err != nil {
				errc <- fmt.Errorf("established flow: %w", err)
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			c, err := dial(a.ns, b.ip, 8080)
			if err == nil {
				err = roundTrip(c)
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			if err != nil {
				errc <- fmt.Errorf("new connection: %w", err)
				return
			}
		}
	}()
	for i := range 200 {
		if err := d.Apply(b.ifindex, shapes[i%len(shapes)]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.IngressDenied != before.IngressDenied || after.EgressDenied != before.EgressDenied {
		t.Errorf("packets denied while every policy allowed the traffic: before %+v after %+v", before, after)
	}
	if after.IngressAllowed.Packets-before.IngressAllowed.Packets < 100 {
		t.Errorf("too little traffic during the updates: %+v -> %+v", before, after)
	}
}
