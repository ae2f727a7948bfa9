package datapath

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestUpgradeRekeysConntrack: maps pinned by a datapath before the policy
// epoch (no epoch map, conntrack keys in the opener's order) are taken
// over by Open. A flow whose replies only its conntrack entry lets out
// (the server's egress is deny-all) keeps working through the new
// program, and no old-order key is left after CompleteUpgrade.
func TestUpgradeRekeysConntrack(t *testing.T) {
	tn := newTestNet(t, 2)
	// The client is the pod whose address orders higher, so the opener's
	// order is not the canonical one and the entry must move.
	client, server := tn.pods[0], tn.pods[1]
	if raw4(client.ip) < raw4(server.ip) {
		client, server = server, client
	}
	serveTCP(t, server, 8080)
	d := tn.open(t)
	pol := Policy{
		Ingress: Direction{Isolated: true, Rules: []Rule{{ID: 1, CIDRs: []netip.Prefix{netip.PrefixFrom(client.ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}}}},
		Egress:  Direction{Isolated: true},
	}
	if err := d.Apply(server.ifindex, pol); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, server)
	conn, err := dial(client.ns, server.ip, 8080)
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

	// Make the pins what an older agent left: entries in the opener's
	// order, no epoch map.
	if n := toOpenerOrder(t, tn.pin); n == 0 {
		t.Fatal("no conntrack entry to move: the test proves nothing")
	}
	if err := os.Remove(filepath.Join(tn.pin, "maps", "epoch")); err != nil {
		t.Fatal(err)
	}

	d2 := tn.open(t)
	if !d2.legacyCT {
		t.Fatal("Open did not see the old layout")
	}
	tn.attach(t, d2, server)
	if err := roundTrip(conn); err != nil {
		t.Errorf("established flow after the upgrade: %v", err)
	}
	if err := d2.CompleteUpgrade(); err != nil {
		t.Fatal(err)
	}
	var k netpolCt4Key
	var v netpolCtVal
	it := d2.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		if _, swapped := canonical4(k); swapped {
			t.Errorf("old-order key left: %+v", k)
		}
	}
	if err := roundTrip(conn); err != nil {
		t.Errorf("established flow after CompleteUpgrade: %v", err)
	}
	// The policy still holds: the server cannot open a connection.
	if canTCP(server.ns, client.ip, 8080) {
		t.Error("server's egress is deny-all, but a connection passed")
	}
}

func raw4(a netip.Addr) uint32 {
	b := a.As4()
	return nativeEndian.Uint32(b[:])
}

// toOpenerOrder rewrites the pinned IPv4 conntrack the way the old
// datapath kept it and returns how many entries changed order.
func toOpenerOrder(t *testing.T, pin string) int {
	t.Helper()
	d, err := Open(Config{PinDir: pin, NodeIPs: []netip.Addr{nodeIP, nodeIP6}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	type entry struct {
		k netpolCt4Key
		v netpolCtVal
	}
	var moved []entry
	var k netpolCt4Key
	var v netpolCtVal
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&ctOpenerSwapped != 0 {
			moved = append(moved, entry{k, v})
		}
	}
	for _, e := range moved {
		if err := d.objs.Conntrack.Delete(e.k); err != nil {
			t.Fatal(err)
		}
		o := e.k
		o.Saddr, o.Daddr, o.Sport, o.Dport = o.Daddr, o.Saddr, o.Dport, o.Sport
		e.v.Flags = 0
		if err := d.objs.Conntrack.Put(o, e.v); err != nil {
			t.Fatal(err)
		}
	}
	return len(moved)
}
