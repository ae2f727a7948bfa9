package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// sharedRule is the merged rule an agent hands every pod a policy selects:
// the same ID and peers for all of them.
func sharedRule(id uint32, peers ...netip.Addr) Rule {
	r := Rule{ID: id, Shared: true, CIDRs: []netip.Prefix{pfx("192.0.2.0/24")}}
	for _, p := range peers {
		r.CIDRs = append(r.CIDRs, netip.PrefixFrom(p, p.BitLen()))
	}
	return r
}

func applyAll(t *testing.T, d *Datapath, pods []*testPod, p Policy) {
	t.Helper()
	for _, q := range pods {
		if err := d.Apply(q.ifindex, p); err != nil {
			t.Fatalf("apply %s: %v", q.ns, err)
		}
	}
}

func statsDelta(a, b Stats) Stats {
	return Stats{PeerWrites: b.PeerWrites - a.PeerWrites, PeerDeletes: b.PeerDeletes - a.PeerDeletes,
		RulesetSwaps: b.RulesetSwaps - a.RulesetSwaps, SharedSets: b.SharedSets, PeerSets: b.PeerSets}
}

// TestSharedPeerSet: 50 pods selected by one policy share one peer set. A
// peer appearing is one LPM write and no ruleset swap for any pod; a peer
// leaving is one delete and a new generation for every pod, which cuts the
// leaving peer's established flows and nothing else. Removing every pod
// leaves nothing; after a restart updates stay correct.
func TestSharedPeerSet(t *testing.T) {
	const n = 50
	tn := newTestNet(t, n+2)
	servers, x, y := tn.pods[:n], tn.pods[n], tn.pods[n+1]
	d := tn.open(t)
	for _, p := range tn.pods {
		if p == x || p == y {
			if err := d.Apply(p.ifindex, AllowAll); err != nil {
				t.Fatal(err)
			}
		} else {
			serveTCP(t, p, 8080)
		}
	}
	applyAll(t, d, servers, ingressOnly(sharedRule(7, y.ip)))
	for _, p := range tn.pods {
		tn.attach(t, d, p)
	}
	st := d.Stats()
	if st.SharedSets != 1 || st.PeerSets != 1 || st.PeerWrites != 2 {
		t.Fatalf("50 pods with one policy: %+v, want 1 shared set of 2 entries written once", st)
	}
	if n := countEntries(t, d.objs.PeerSets); n != 2 {
		t.Fatalf("%d peer entries, want 2", n)
	}
	if canTCP(x.ns, servers[0].ip, 8080) || !canTCP(y.ns, servers[0].ip, 8080) {
		t.Fatal("before x appears: want x denied, y allowed")
	}

	// x appears: every pod is re-applied with one more peer.
	before := d.Stats()
	applyAll(t, d, servers, ingressOnly(sharedRule(7, y.ip, x.ip)))
	if got := statsDelta(before, d.Stats()); got.PeerWrites != 1 || got.PeerDeletes != 0 || got.RulesetSwaps != 0 || got.PeerSets != 1 {
		t.Errorf("peer appearing at %d pods: %+v, want 1 peer write, 0 deletes, 0 swaps", n, got)
	}
	for _, p := range servers {
		if !canTCP(x.ns, p.ip, 8080) {
			t.Errorf("x->%s blocked after x appeared", p.ns)
		}
	}

	// y leaves: its established flows are cut, x's continue.
	var yConns, xConns []net.Conn
	for _, p := range []*testPod{servers[0], servers[n/2], servers[n-1]} {
		for _, c := range []struct {
			from  *testPod
			conns *[]net.Conn
		}{{y, &yConns}, {x, &xConns}} {
			conn, err := dial(c.from.ns, p.ip, 8080)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := roundTrip(conn); err != nil {
				t.Fatal(err)
			}
			*c.conns = append(*c.conns, conn)
		}
	}
	before = d.Stats()
	cb, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, d, servers, ingressOnly(sharedRule(7, x.ip)))
	if got := statsDelta(before, d.Stats()); got.PeerWrites != 0 || got.PeerDeletes != 1 || got.RulesetSwaps != n {
		t.Errorf("peer leaving at %d pods: %+v, want 1 peer delete and one new generation per pod", n, got)
	}
	for i, c := range xConns {
		if err := roundTrip(c); err != nil {
			t.Errorf("x's established flow %d after y left: %v", i, err)
		}
	}
	ca, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ca.IngressDenied != cb.IngressDenied || ca.EgressDenied != cb.EgressDenied {
		t.Errorf("drops on flows that stay allowed: %+v -> %+v", cb, ca)
	}
	for i, c := range yConns {
		if err := roundTrip(c); err == nil {
			t.Errorf("y's established flow %d passes after y left", i)
		}
	}
	if canTCP(y.ns, servers[1].ip, 8080) {
		t.Error("new flow from y passes after y left")
	}

	// Restart: the recovered set keeps enforcing, new updates are
	// correct, ids do not collide and the recovered set goes away.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = tn.open(t)
	maxSeen := uint32(0)
	for _, rec := range d.pods {
		maxSeen = max(maxSeen, rec.ruleset)
		for _, re := range rec.rules {
			if re.peer != nil {
				maxSeen = max(maxSeen, re.peer.id)
			}
		}
	}
	if d.nextID <= maxSeen {
		t.Fatalf("next id %d not above recovered ids (max %d)", d.nextID, maxSeen)
	}
	applyAll(t, d, servers[:n/2], ingressOnly(sharedRule(7, x.ip, y.ip)))
	if st := d.Stats(); st.PeerSets != 2 || st.SharedSets != 1 {
		t.Errorf("half re-applied after restart: %+v, want the recovered set and one shared set", st)
	}
	if !canTCP(y.ns, servers[0].ip, 8080) || canTCP(y.ns, servers[n-1].ip, 8080) {
		t.Error("after restart: want y allowed by the new set only")
	}
	applyAll(t, d, servers[n/2:], ingressOnly(sharedRule(7, x.ip, y.ip)))
	if st := d.Stats(); st.PeerSets != 1 || st.SharedSets != 1 {
		t.Errorf("all re-applied after restart: %+v, want one shared set", st)
	}
	if n := countEntries(t, d.objs.PeerSets); n != 3 {
		t.Errorf("%d peer entries after restart and re-apply, want 3", n)
	}
	if !canTCP(y.ns, servers[n-1].ip, 8080) {
		t.Error("after restart: y blocked")
	}
	before = d.Stats()
	applyAll(t, d, servers, ingressOnly(sharedRule(7, x.ip, y.ip, netip.MustParseAddr("198.51.100.1"))))
	if got := statsDelta(before, d.Stats()); got.PeerWrites != 1 || got.RulesetSwaps != 0 {
		t.Errorf("peer appearing after restart: %+v, want 1 write, 0 swaps", got)
	}

	for _, p := range tn.pods {
		if err := d.Remove(p.ifindex); err != nil {
			t.Fatal(err)
		}
	}
	assertEmpty(t, d)
	if st := d.Stats(); st.PeerSets != 0 || st.SharedSets != 0 || len(d.ports) != 0 {
		t.Errorf("after removing every pod: %+v, %d port sets", st, len(d.ports))
	}
}

// TestSharedSetsSafe: only pods whose merged rule comes from the same
// shared IDs share a set; unshared rules and ID 0 stay private; content
// with Except is never changed in place.
func TestSharedSetsSafe(t *testing.T) {
	tn := newTestNet(t, 4)
	a, b, c, e := tn.pods[0], tn.pods[1], tn.pods[2], tn.pods[3]
	d := tn.open(t)
	serveTCP(t, c, 8080)
	serveTCP(t, e, 8080)
	// c: rules 1 and 2; e: rule 1 alone. Different identities.
	r1 := Rule{ID: 1, Shared: true, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}}
	r2 := Rule{ID: 2, Shared: true, CIDRs: []netip.Prefix{netip.PrefixFrom(b.ip, 32)}}
	for _, p := range []*testPod{a, b} {
		if err := d.Apply(p.ifindex, AllowAll); err != nil {
			t.Fatal(err)
		}
	}
	// The order of the rules does not matter.
	if err := d.Apply(c.ifindex, ingressOnly(r2, r1)); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(e.ifindex, ingressOnly(r1)); err != nil {
		t.Fatal(err)
	}
	for _, p := range tn.pods {
		tn.attach(t, d, p)
	}
	if st := d.Stats(); st.SharedSets != 2 {
		t.Fatalf("%+v, want 2 shared sets", st)
	}
	if !canTCP(b.ns, c.ip, 8080) || canTCP(b.ns, e.ip, 8080) || !canTCP(a.ns, e.ip, 8080) {
		t.Fatal("b must reach c only, a both")
	}
	before := d.Stats()
	if err := d.Apply(c.ifindex, ingressOnly(r1, r2)); err != nil {
		t.Fatal(err)
	}
	if got := statsDelta(before, d.Stats()); got.PeerWrites != 0 || got.RulesetSwaps != 0 {
		t.Errorf("same rules in another order: %+v, want no write", got)
	}
	// Not shared: a set of its own, also for equal content.
	private := Rule{ID: 1, CIDRs: r1.CIDRs}
	before = d.Stats()
	if err := d.Apply(e.ifindex, ingressOnly(private)); err != nil {
		t.Fatal(err)
	}
	if got := statsDelta(before, d.Stats()); got.PeerWrites != 1 || got.SharedSets != 1 {
		t.Errorf("unshared rule: %+v, want its own set", got)
	}

	// Except on the shared set of c: rebuilt under a new id, never in place.
	exc := Rule{ID: 1, Shared: true, CIDRs: []netip.Prefix{pfx("10.99.0.0/16")}, Except: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}}
	if err := d.Apply(e.ifindex, ingressOnly(r1)); err != nil {
		t.Fatal(err)
	}
	old := d.shared[d.pods[uint32(e.ifindex)].rules[0].peer.share]
	if err := d.Apply(e.ifindex, ingressOnly(exc)); err != nil {
		t.Fatal(err)
	}
	if now := d.pods[uint32(e.ifindex)].rules[0].peer; now == old || now.id == old.id {
		t.Error("set with an Except changed in place")
	}
	if canTCP(a.ns, e.ip, 8080) || !canTCP(b.ns, e.ip, 8080) {
		t.Error("except rule: want a denied, b allowed")
	}
	for _, p := range tn.pods {
		if err := d.Remove(p.ifindex); err != nil {
			t.Fatal(err)
		}
	}
	assertEmpty(t, d)
}

// TestSharedUpdatesUnderTraffic: two pods share a set whose content keeps
// changing between pure unions and content with Excepts, always allowing
// a; an Apply to one pod changes the other's set too. Not one packet is
// denied, and the last content (which excepts a) denies a at both pods at
// once.
func TestSharedUpdatesUnderTraffic(t *testing.T) {
	tn := newTestNet(t, 3)
	a, b, c := tn.pods[0], tn.pods[1], tn.pods[2]
	serveTCP(t, b, 8080)
	serveTCP(t, c, 8080)
	d := tn.open(t)
	aIP := netip.PrefixFrom(a.ip, 32)
	rule := func(cidrs []netip.Prefix, except ...netip.Prefix) Policy {
		return ingressOnly(Rule{ID: 5, Shared: true, CIDRs: cidrs, Except: except, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}})
	}
	shapes := []Policy{
		rule([]netip.Prefix{aIP}),
		rule([]netip.Prefix{pfx("10.99.0.0/16")}, pfx("10.99.0.128/25")),
		rule([]netip.Prefix{aIP, pfx("192.0.2.0/24")}),
		rule([]netip.Prefix{pfx("0.0.0.0/0")}, pfx("192.0.2.0/24"), pfx("10.99.0.64/26")),
		rule([]netip.Prefix{aIP, pfx("198.51.100.0/24"), pfx("203.0.113.7/32")}),
	}
	if err := d.Apply(a.ifindex, AllowAll); err != nil {
		t.Fatal(err)
	}
	applyAll(t, d, []*testPod{b, c}, shapes[0])
	for _, p := range tn.pods {
		tn.attach(t, d, p)
	}
	conns := map[*testPod]net.Conn{}
	for _, p := range []*testPod{b, c} {
		conn, err := dial(a.ns, p.ip, 8080)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[p] = conn
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for _, p := range []*testPod{b, c} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := roundTrip(conns[p]); err != nil {
					errc <- fmt.Errorf("established flow to %s: %w", p.ns, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := dial(a.ns, p.ip, 8080)
				if err == nil {
					err = roundTrip(conn)
					_ = conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
				}
				if err != nil {
					errc <- fmt.Errorf("new connection to %s: %w", p.ns, err)
					return
				}
			}
		}()
	}
	for i := range 100 {
		// One pod at a time, as the agent does: the first Apply changes
		// the set of both.
		applyAll(t, d, []*testPod{b, c}[i%2:i%2+1], shapes[i%len(shapes)])
		applyAll(t, d, []*testPod{b, c}[(i+1)%2:(i+1)%2+1], shapes[i%len(shapes)])
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.IngressDenied != before.IngressDenied || after.EgressDenied != before.EgressDenied {
		t.Errorf("packets denied while every content allowed the traffic: before %+v after %+v", before, after)
	}
	if after.IngressAllowed.Packets-before.IngressAllowed.Packets < 100 {
		t.Errorf("too little traffic during the updates: %+v -> %+v", before, after)
	}
	if st := d.Stats(); st.PeerSets != 1 || st.SharedSets != 1 {
		t.Errorf("after the updates: %+v, want one set", st)
	}
	// Except a, applied to b only: c's shared set follows at once.
	if err := d.Apply(b.ifindex, rule([]netip.Prefix{pfx("10.99.0.0/16")}, aIP)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*testPod{b, c} {
		if err := roundTrip(conns[p]); err == nil {
			t.Errorf("established a->%s passes after a was excepted", p.ns)
		}
		if canTCP(a.ns, p.ip, 8080) {
			t.Errorf("new a->%s passes after a was excepted", p.ns)
		}
	}
	for _, p := range tn.pods {
		if err := d.Remove(p.ifindex); err != nil {
			t.Fatal(err)
		}
	}
	assertEmpty(t, d)
}
