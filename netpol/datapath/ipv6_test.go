package datapath

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestIPv6: the same policy semantics over IPv6, the two families kept
// apart (an IPv4 rule admits no IPv6 peer and ::/0 no IPv4 one), neighbour
// discovery passing under deny-all, ICMPv6 echo only without ports, and
// conntrack replies.
func TestIPv6(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.pods[0], tn.pods[1]
	serveTCP(t, a, 8080)
	serveTCP(t, b, 8080)
	d := tn.open(t)
	if !canTCP(a.ns, b.ip6, 8080) {
		t.Fatal("no program: a->b over IPv6 blocked; the test network is broken")
	}
	if err := d.Apply(b.ifindex, DenyAll); err != nil {
		t.Fatal(err)
	}
	tn.attach(t, d, b)
	if canTCP(a.ns, b.ip6, 8080) {
		t.Error("deny-all: a->b over IPv6 passed")
	}
	// The host finds b by neighbour discovery (no static entry), through
	// both programs, and its node address is admitted. Forget what the
	// first connection taught it.
	hh := nsHandle(t, tn.host)
	if err := hh.NeighDel(&netlink.Neigh{LinkIndex: b.ifindex, IP: b.ip6.AsSlice(), Family: netlink.FAMILY_V6}); err != nil {
		t.Fatalf("flush neighbour %s: %v", b.ip6, err)
	}
	if !canTCP(tn.host, b.ip6, 8080) {
		t.Error("deny-all: node IPv6 -> b blocked (neighbour discovery or node IP)")
	}

	tcp8080 := []PortRange{{Protocol: ProtoTCP, Start: 8080}}
	cases := []struct {
		name       string
		rule       Rule
		v4, v6, p6 bool // a->b TCP over IPv4, over IPv6, ping over IPv6
	}{
		{"v6 /128 and port", Rule{ID: 1, CIDRs: []netip.Prefix{netip.PrefixFrom(a.ip6, 128)}, Ports: tcp8080}, false, true, false},
		{"v4 any", Rule{ID: 2, CIDRs: []netip.Prefix{pfx("0.0.0.0/0")}}, true, false, false},
		{"v6 any", Rule{ID: 3, CIDRs: []netip.Prefix{pfx("::/0")}}, false, true, true},
		{"v6 except a", Rule{ID: 4, CIDRs: []netip.Prefix{pfx("fd99::/16")}, Except: []netip.Prefix{netip.PrefixFrom(a.ip6, 128)}}, false, false, false},
		{"any peer minus v4 except", Rule{ID: 5, AnyPeer: true, Except: []netip.Prefix{pfx("10.0.0.0/8")}}, false, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Apply(b.ifindex, ingressOnly(tc.rule)); err != nil {
				t.Fatal(err)
			}
			if got := canTCP(a.ns, b.ip, 8080); got != tc.v4 {
				t.Errorf("tcp over IPv4: allowed %v, want %v", got, tc.v4)
			}
			if got := canTCP(a.ns, b.ip6, 8080); got != tc.v6 {
				t.Errorf("tcp over IPv6: allowed %v, want %v", got, tc.v6)
			}
			if got := canPing(t, a, b, true); got != tc.p6 {
				t.Errorf("ping over IPv6: allowed %v, want %v", got, tc.p6)
			}
		})
	}

	// Replies of b's own connection pass its isolated ingress.
	if err := d.Apply(b.ifindex, ingressOnly()); err != nil {
		t.Fatal(err)
	}
	if !canTCP(b.ns, a.ip6, 8080) {
		t.Error("b->a over IPv6: replies dropped")
	}
	if canTCP(a.ns, b.ip6, 8080) {
		t.Error("a->b over IPv6 into an isolated pod passed")
	}
}
