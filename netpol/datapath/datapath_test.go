package datapath

import "testing"

// TestAllowAndDeny: fail closed without state, allow-all, deny-all, the
// node's address always admitted, and the counters.
func TestAllowAndDeny(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, a, 8080)
	serveTCP(t, b, 8080)
	d := tn.open(t)

	if !canTCP(a.ns, b.ip, 8080) {
		t.Fatal("no program: a->b blocked; the test network is broken")
	}
	// Attached with no state: fail closed.
	tn.attach(t, d, b)
	if canTCP(a.ns, b.ip, 8080) {
		t.Error("attached without state: a->b passed, want denied")
	}
	if err := d.Apply(b.ifindex, AllowAll); err != nil {
		t.Fatal(err)
	}
	if !canTCP(a.ns, b.ip, 8080) || !canTCP(b.ns, a.ip, 8080) {
		t.Error("allow-all: traffic blocked")
	}
	if err := d.Apply(b.ifindex, DenyAll); err != nil {
		t.Fatal(err)
	}
	if canTCP(a.ns, b.ip, 8080) {
		t.Error("deny-all: a->b passed")
	}
	if canTCP(b.ns, a.ip, 8080) {
		t.Error("deny-all: b->a passed")
	}
	// The node's address may always reach the pod (kubelet probes), and
	// the reply goes back although b's egress is isolated.
	if !canTCP(tn.host, b.ip, 8080) {
		t.Error("deny-all: node ip -> b blocked, want allowed")
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.IngressDenied.Packets == 0 || c.EgressDenied.Packets == 0 || c.IngressAllowed.Packets == 0 || c.EgressAllowed.Packets == 0 {
		t.Errorf("counters %+v: want every verdict and direction counted", c)
	}
}
