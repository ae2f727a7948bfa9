package datapath

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestSplitRange: ranges become the fewest aligned blocks covering each
// port of the range once and nothing else.
func TestSplitRange(t *testing.T) {
	cases := []struct {
		start, end uint16
		want       int // prefixes
	}{
		{80, 80, 1},
		{0, 65535, 1},
		{8080, 8081, 1},
		{8080, 8083, 1},
		{9000, 9003, 1}, // 9000 is a multiple of 4
		{9000, 9004, 2},
		{1, 65535, 16},
		{1024, 65535, 6},
	}
	for _, tc := range cases {
		got := splitRange(portRange{proto: ProtoTCP, start: tc.start, end: tc.end})
		// Every port in range is covered exactly once, none outside.
		covered := map[uint32]int{}
		for _, e := range got {
			size := uint32(1) << (16 - e.bits)
			if uint32(e.port)%size != 0 {
				t.Errorf("%d-%d: block %d/%d not aligned", tc.start, tc.end, e.port, e.bits)
			}
			for p := uint32(e.port); p < uint32(e.port)+size; p++ {
				covered[p]++
			}
		}
		for p := uint32(0); p <= 65535; p++ {
			in := p >= uint32(tc.start) && p <= uint32(tc.end)
			if (in && covered[p] != 1) || (!in && covered[p] != 0) {
				t.Fatalf("%d-%d: port %d covered %d times", tc.start, tc.end, p, covered[p])
			}
		}
		if len(got) != tc.want {
			t.Errorf("%d-%d: %d prefixes, want %d", tc.start, tc.end, len(got), tc.want)
		}
	}
}

// TestNormalizePorts: validation and canonical merged ranges.
func TestNormalizePorts(t *testing.T) {
	cases := []struct {
		name    string
		in      []PortRange
		want    []portRange
		anyPort bool
		err     bool
	}{
		{"empty is any", nil, nil, true, false},
		{"any protocol", []PortRange{{Protocol: ProtoTCP, Start: 1}, {Protocol: ProtoAny}}, nil, true, false},
		{"end 0 is start", []PortRange{{Protocol: ProtoUDP, Start: 53}}, []portRange{{ProtoUDP, 53, 53}}, false, false},
		{"start 0 is all", []PortRange{{Protocol: ProtoSCTP}}, []portRange{{ProtoSCTP, 0, 65535}}, false, false},
		{"merged", []PortRange{{Protocol: ProtoTCP, Start: 90, End: 100}, {Protocol: ProtoTCP, Start: 80, End: 89}, {Protocol: ProtoUDP, Start: 80}},
			[]portRange{{ProtoTCP, 80, 100}, {ProtoUDP, 80, 80}}, false, false},
		{"start after end", []PortRange{{Protocol: ProtoTCP, Start: 2, End: 1}}, nil, false, true},
		{"unknown protocol", []PortRange{{Protocol: 1}}, nil, false, true},
		{"port without protocol", []PortRange{{Start: 80}}, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, anyPort, err := normalizePorts(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if anyPort != tc.anyPort || !slices.Equal(got, tc.want) {
				t.Errorf("got %v any=%v, want %v any=%v", got, anyPort, tc.want, tc.anyPort)
			}
		})
	}
}

// TestCompile: set sharing, Except handling, IPv6 and limits.
func TestCompile(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	t.Run("rules without except and the same ports share one set", func(t *testing.T) {
		var rules []Rule
		for i := range 1000 {
			rules = append(rules, Rule{ID: uint32(i + 1), CIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)},
				Ports: []PortRange{{Protocol: ProtoTCP, Start: 80}}})
		}
		rules = append(rules, Rule{ID: 5000, CIDRs: []netip.Prefix{p("192.168.0.0/16")}, Ports: []PortRange{{Protocol: ProtoUDP, Start: 53}}})
		c, err := compile(Policy{Egress: Direction{Isolated: true, Rules: rules}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(c.rules[dirEgress]); n != 2 {
			t.Fatalf("%d rules, want 2", n)
		}
		if n := len(c.rules[dirEgress][0].peers); n != 1000 {
			t.Errorf("merged set has %d entries, want 1000", n)
		}
		if c.rules[dirEgress][0].peers[999].id != 1000 {
			t.Errorf("member keeps its rule id: %+v", c.rules[dirEgress][0].peers[999])
		}
	})
	t.Run("rules with except share one exact set", func(t *testing.T) {
		c, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: []Rule{
			{ID: 1, CIDRs: []netip.Prefix{p("10.0.0.0/8")}, Except: []netip.Prefix{p("10.1.0.0/16")}},
			{ID: 2, CIDRs: []netip.Prefix{p("10.1.2.0/24")}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(c.rules[dirIngress]); n != 1 {
			t.Fatalf("%d rules, want 1", n)
		}
		want := []peerEntry{
			{prefix: p("10.0.0.0/8"), member: true, id: 1},
			{prefix: p("10.1.0.0/16")},
			{prefix: p("10.1.2.0/24"), member: true, id: 2},
		}
		if got := c.rules[dirIngress][0].peers; !slices.Equal(got, want) {
			t.Errorf("peers %+v, want %+v", got, want)
		}
	})
	t.Run("cidr inside except dropped; host bits masked; mapped unmapped", func(t *testing.T) {
		cr, err := compileRule(Rule{CIDRs: []netip.Prefix{p("10.0.0.1/8"), p("10.1.2.0/24"), p("fd00::1/8"), p("::ffff:192.168.0.0/112")},
			Except: []netip.Prefix{p("10.1.0.0/16")}})
		if err != nil {
			t.Fatal(err)
		}
		want := []peerEntry{{prefix: p("10.0.0.0/8"), member: true}, {prefix: p("fd00::/8"), member: true},
			{prefix: p("192.168.0.0/16"), member: true}, {prefix: p("10.1.0.0/16")}}
		if !slices.Equal(cr.peers, want) {
			t.Errorf("peers %+v, want %+v", cr.peers, want)
		}
	})
	t.Run("any peer with except: both families minus except", func(t *testing.T) {
		cr, err := compileRule(Rule{AnyPeer: true, Except: []netip.Prefix{p("10.0.0.0/8")}})
		if err != nil {
			t.Fatal(err)
		}
		want := []peerEntry{{prefix: p("0.0.0.0/0"), member: true}, {prefix: p("::/0"), member: true}, {prefix: p("10.0.0.0/8")}}
		if cr.anyPeer || !slices.Equal(cr.peers, want) {
			t.Errorf("got %+v, want %+v", cr, want)
		}
	})
	t.Run("families do not mix", func(t *testing.T) {
		// ::/0 minus an IPv4 Except, and an IPv4 rule: the Except is of
		// no family the first rule allows.
		c, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: []Rule{
			{ID: 1, CIDRs: []netip.Prefix{p("::/0")}, Except: []netip.Prefix{p("10.0.0.0/8")}},
			{ID: 2, CIDRs: []netip.Prefix{p("10.1.0.0/16")}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		want := []peerEntry{{prefix: p("::/0"), member: true, id: 1}, {prefix: p("10.1.0.0/16"), member: true, id: 2}}
		if got := c.rules[dirIngress][0].peers; !slices.Equal(got, want) {
			t.Errorf("peers %+v, want %+v", got, want)
		}
	})
	t.Run("too many port sets", func(t *testing.T) {
		var rules []Rule
		for i := range MaxRules + 1 {
			rules = append(rules, Rule{AnyPeer: true, Ports: []PortRange{{Protocol: ProtoTCP + uint8(i>>16)*11, Start: uint16(i) + 1}}})
		}
		if _, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: rules}}); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("got %v, want ErrInvalidPolicy", err)
		}
	})
}

// TestResolvePeersExact compares the one-lookup set built for random
// rules with Excepts against the definition, address by address: some
// rule has a CIDR holding the address and no Except holding it.
func TestResolvePeersExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 1000 {
		// Prefixes within 10.0.0.0/24 or fd00::/120 (odd rounds), so
		// random ones nest often.
		v6 := round%2 == 1
		addr := func(i int) netip.Addr {
			if v6 {
				return netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i)})
			}
			return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		}
		randPrefix := func(minBits int) netip.Prefix {
			if v6 {
				minBits += 96
			}
			bits := minBits + rng.IntN(addr(0).BitLen()+1-minBits)
			return netip.PrefixFrom(addr(rng.IntN(256)), bits).Masked()
		}
		var rules []Rule
		for i := range 1 + rng.IntN(5) {
			r := Rule{ID: uint32(i + 1)}
			for range 1 + rng.IntN(3) {
				r.CIDRs = append(r.CIDRs, randPrefix(20))
			}
			for range rng.IntN(4) {
				r.Except = append(r.Except, randPrefix(24))
			}
			rules = append(rules, r)
		}
		c, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: rules}})
		if err != nil {
			t.Fatal(err)
		}
		var set []peerEntry
		switch len(c.rules[dirIngress]) {
		case 0:
		case 1:
			set = c.rules[dirIngress][0].peers
		default:
			t.Fatalf("round %d: %d rules, want 1", round, len(c.rules[dirIngress]))
		}
		for i := range 256 {
			a := addr(i)
			var want []uint32 // IDs of the rules allowing a
			for _, r := range rules {
				in := slices.ContainsFunc(r.CIDRs, func(p netip.Prefix) bool { return p.Contains(a) })
				out := slices.ContainsFunc(r.Except, func(p netip.Prefix) bool { return p.Contains(a) })
				if in && !out {
					want = append(want, r.ID)
				}
			}
			// The LPM lookup the program does.
			best := -1
			for j, e := range set {
				if e.prefix.Contains(a) && (best < 0 || e.prefix.Bits() > set[best].prefix.Bits()) {
					best = j
				}
			}
			got := best >= 0 && set[best].member
			if got != (len(want) > 0) {
				t.Fatalf("round %d: %v allowed %v, want %v\nrules %+v\nset %+v", round, a, got, len(want) > 0, rules, set)
			}
			if got && !slices.Contains(want, set[best].id) {
				t.Fatalf("round %d: %v attributed to rule %d, not one of %v", round, a, set[best].id, want)
			}
		}
	}
}

// TestCompileShareIdentity: a merged rule's set is shared only when every
// rule in it is Shared with a non-zero ID; its identity is the direction,
// the ports and the sorted IDs, and its content does not depend on the
// order of the rules.
func TestCompileShareIdentity(t *testing.T) {
	a := Rule{ID: 2, Shared: true, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	b := Rule{ID: 1, Shared: true, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")}}
	share := func(rules ...Rule) compiledRule {
		t.Helper()
		c, err := compile(Policy{Egress: Direction{Isolated: true, Rules: rules}})
		if err != nil || len(c.rules[dirEgress]) != 1 {
			t.Fatalf("compile: %v %+v", err, c)
		}
		return c.rules[dirEgress][0]
	}
	ab, ba := share(a, b), share(b, a)
	if ab.share == "" || ab.share != ba.share || ab.share != "egress||[1 2]" {
		t.Fatalf("identities %q %q", ab.share, ba.share)
	}
	ka, va, _ := peerContent(&ab)
	kb, vb, _ := peerContent(&ba)
	if !slices.Equal(ka, kb) || !slices.Equal(va, vb) {
		t.Fatalf("content depends on rule order: %v %v / %v %v", ka, va, kb, vb)
	}
	if share(a).share == ab.share {
		t.Fatal("different rules, same identity")
	}
	unshared := b
	unshared.Shared = false
	zero := a
	zero.ID = 0
	if s := share(a, unshared).share; s != "" {
		t.Fatalf("with an unshared rule: %q", s)
	}
	if s := share(zero).share; s != "" {
		t.Fatalf("ID 0: %q", s)
	}
	if s := share(Rule{ID: 3, Shared: true, AnyPeer: true}, a).share; s != "" {
		t.Fatalf("any peer needs no set: %q", s)
	}
}
