package datapath

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/berth-io/berth/internal/testenv"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TestRestart: the pinned programs keep enforcing while no agent runs, an
// established flow survives Close, Open, Attach (a link update to the new
// program) and a re-Apply, and the new Datapath knows the old state.
func TestRestart(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, b, 8080)
	serveTCP(t, b, 8081)
	d := tn.open(t)
	pol := ingressOnly(Rule{ID: 1, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}})
	if err := d.Apply(b.ifindex, pol); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	conn, err := dial(a.ns, b.ip, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := roundTrip(conn); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// No agent.
	if err := roundTrip(conn); err != nil {
		t.Errorf("established flow with no agent: %v", err)
	}
	if canTCP(a.ns, b.ip, 8081) {
		t.Error("no agent: a->b:8081 passed, want still enforced")
	}

	d2 := tn.open(t)
	if got, err := d2.Attached(); err != nil || len(got) != 1 || got[0] != b.ifindex {
		t.Fatalf("attached after restart: %v %v, want [%d]", got, err, b.ifindex)
	}
	if rec := d2.pods[uint32(b.ifindex)]; rec == nil || len(rec.rules) != 1 || rec.rules[0].peer == nil || len(rec.rules[0].peer.keys) != 1 || rec.rules[0].port == nil || len(rec.rules[0].port.keys) != 1 {
		t.Fatalf("recovered record %+v, want 1 rule, 1 peer, 1 port entry", rec)
	}
	tn.attach(t, d2, b)
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(d2.linkPath(b.ifindex, h), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		pinfo, err := d2.program(h).Info()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := pinfo.ID()
		if info.Program != want {
			t.Errorf("%s link runs program %d, want the new %d", h.name, info.Program, want)
		}
	}
	if err := roundTrip(conn); err != nil {
		t.Errorf("established flow after Attach by the new agent: %v", err)
	}
	if err := d2.Apply(b.ifindex, pol); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(conn); err != nil {
		t.Errorf("established flow after re-Apply: %v", err)
	}
	if canTCP(a.ns, b.ip, 8081) {
		t.Error("after restart: a->b:8081 passed")
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("after restart: new a->b:8080 blocked")
	}
	// The old ruleset is gone, the new one alone is left.
	if n := countEntries(t, d2.objs.Rules); n != 1 {
		t.Errorf("%d rules, want 1", n)
	}
}

// TestRecoverGC: entries an agent left behind (it died between writing
// a ruleset and swapping it in) are deleted on Open, and new ids are
// above every id found.
func TestRecoverGC(t *testing.T) {
	tn := newTestNet(t, 1)
	p := tn.pods[0]
	d := tn.open(t)
	if err := d.Apply(p.ifindex, ingressOnly(Rule{ID: 1, CIDRs: []netip.Prefix{pfx("10.0.0.0/8")}})); err != nil {
		t.Fatal(err)
	}
	const orphan = 1000
	if err := d.objs.Rules.Put(netpolRuleKey{Ruleset: orphan, Dir: 0, Index: 0}, netpolRule{PeerSet: orphan + 1, PortSet: orphan + 2}); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.PeerSets.Put(netpolPeerKey{Prefixlen: 64, Set: orphan + 1, Addr: addrKey(netip.MustParseAddr("10.1.2.3"))}, netpolPeerVal{Member: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.PortSets.Put(netpolPortKey{Prefixlen: 64, Set: orphan + 3, Proto: ProtoTCP, Port: portKey(80)}, uint32(1)); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := tn.open(t)
	if n := countEntries(t, d2.objs.Rules); n != 1 {
		t.Errorf("%d rules after recovery, want 1", n)
	}
	if n := countEntries(t, d2.objs.PeerSets); n != 1 {
		t.Errorf("%d peer entries after recovery, want 1", n)
	}
	if n := countEntries(t, d2.objs.PortSets); n != 0 {
		t.Errorf("%d port entries after recovery, want 0", n)
	}
	if d2.nextID <= orphan+3 {
		t.Errorf("next id %d collides with ids in the maps", d2.nextID)
	}
}

// TestVethReplaced: a pod's veth is deleted while its links are pinned
// (the agent missed the DEL) and a new pod's veth gets the same ifindex.
// Attach drops the defunct links and attaches anew; Remove of a gone
// veth succeeds.
func TestVethReplaced(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	d := tn.open(t)
	if err := d.Apply(b.ifindex, DenyAll); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	old := b.ifindex
	hh := nsHandle(t, tn.host)
	l, err := hh.LinkByIndex(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Attached(); err != nil || len(got) != 1 || got[0] != old {
		t.Fatalf("attached %v %v, want the gone veth's [%d] still pinned", got, err, old)
	}
	tn.wire(t, b, "hv1new", old)
	if b.ifindex != old {
		t.Fatalf("new veth got ifindex %d, want %d", b.ifindex, old)
	}
	serveTCP(t, b, 8080)
	tn.attach(t, d, b) // defunct links replaced
	if canTCP(a.ns, b.ip, 8080) {
		t.Error("new veth with the old ifindex is not enforced (deny-all)")
	}
	if err := d.Apply(b.ifindex, AllowAll); err != nil {
		t.Fatal(err)
	}
	if !canTCP(a.ns, b.ip, 8080) {
		t.Error("allow-all on the new veth: blocked")
	}
	// Gone for good: Remove still cleans up.
	l, err = hh.LinkByIndex(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(old); err != nil {
		t.Fatalf("remove of a gone veth: %v", err)
	}
	if got, err := d.Attached(); err != nil || len(got) != 0 {
		t.Errorf("attached %v %v, want none", got, err)
	}
	assertNoState(t, d, old)
}

// TestOpenConntrackSize: the size applies to a new map; a pinned map of
// another size is refused, not silently replaced (it holds live flows).
func TestOpenConntrackSize(t *testing.T) {
	testenv.RequireRoot(t, "bpf maps")
	pin := pinDir(t)
	d, err := Open(Config{PinDir: pin, ConntrackSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if n, n6 := d.objs.Conntrack.MaxEntries(), d.objs.Conntrack6.MaxEntries(); n != 1024 || n6 != 1024 {
		t.Errorf("conntrack sizes %d and %d, want 1024", n, n6)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{PinDir: pin, ConntrackSize: 2048}); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("open with another size: %v, want ErrMapIncompatible", err)
	}
	if _, err := Open(Config{PinDir: pin, ConntrackSize: -1}); err == nil {
		t.Error("negative size accepted")
	}
	d, err = Open(Config{PinDir: pin, ConntrackSize: 1024})
	if err != nil {
		t.Fatalf("reopen with the same size: %v", err)
	}
	d.Close()
}
