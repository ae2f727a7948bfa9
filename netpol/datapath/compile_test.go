package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

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
	t.Run("except keeps its own set", func(t *testing.T) {
		c, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: []Rule{
			{ID: 1, CIDRs: []netip.Prefix{p("10.0.0.0/8")}, Except: []netip.Prefix{p("10.1.0.0/16")}},
			{ID: 2, CIDRs: []netip.Prefix{p("10.1.2.0/24")}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(c.rules[dirIngress]); n != 2 {
			t.Fatalf("%d rules, want 2", n)
		}
	})
	t.Run("cidr inside except dropped; v6 ignored; host bits masked", func(t *testing.T) {
		cr, err := compileRule(Rule{CIDRs: []netip.Prefix{p("10.0.0.1/8"), p("10.1.2.0/24"), p("fd00::/8")}, Except: []netip.Prefix{p("10.1.0.0/16")}})
		if err != nil {
			t.Fatal(err)
		}
		want := []peerEntry{{prefix: p("10.0.0.0/8"), member: true}, {prefix: p("10.1.0.0/16")}}
		if !slices.Equal(cr.peers, want) {
			t.Errorf("peers %+v, want %+v", cr.peers, want)
		}
	})
	t.Run("any peer with except", func(t *testing.T) {
		cr, err := compileRule(Rule{AnyPeer: true, Except: []netip.Prefix{p("10.0.0.0/8")}})
		if err != nil {
			t.Fatal(err)
		}
		if cr.anyPeer || len(cr.peers) != 2 {
			t.Errorf("got %+v, want 0.0.0.0/0 minus 10.0.0.0/8", cr)
		}
	})
	t.Run("only v6 peers match nothing", func(t *testing.T) {
		c, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: []Rule{{CIDRs: []netip.Prefix{p("fd00::/8")}}}}})
		if err != nil || len(c.rules[dirIngress]) != 0 || !c.isolated[dirIngress] {
			t.Errorf("got %+v %v, want isolated with no rules", c, err)
		}
	})
	t.Run("too many rules", func(t *testing.T) {
		var rules []Rule
		for i := range MaxRules + 1 {
			rules = append(rules, Rule{CIDRs: []netip.Prefix{p("10.0.0.0/8")}, Except: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}})
		}
		if _, err := compile(Policy{Ingress: Direction{Isolated: true, Rules: rules}}); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("got %v, want ErrInvalidPolicy", err)
		}
	})
}
