package hostnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/testenv"
)

// snatView is the berth-snat table as read back through the nftables API.
type snatView struct {
	chains []string            // "<name> <type> hook <n> prio <p>"
	nosnat []string            // set elements, "(end)" marking interval ends
	rules  map[string][][]any  // chain → rules → expressions
	notes  map[string][]string // chain → rule comments
}

func readSNAT(t *testing.T, ns netns.NsHandle) (snatView, bool) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := c.ListTableOfFamily(SNATTable, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return snatView{}, false
	}
	if err != nil {
		t.Fatalf("list table: %v", err)
	}
	v := snatView{rules: map[string][][]any{}, notes: map[string][]string{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name != SNATTable {
			continue
		}
		v.chains = append(v.chains, fmt.Sprintf("%s %s hook %d prio %d", ch.Name, ch.Type, *ch.Hooknum, *ch.Priority))
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			var es []any
			for _, e := range r.Exprs {
				es = append(es, e)
			}
			v.rules[ch.Name] = append(v.rules[ch.Name], es)
			note, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			v.notes[ch.Name] = append(v.notes[ch.Name], note)
		}
	}
	slices.Sort(v.chains)
	set, err := c.GetSetByName(tab, setNoSNAT)
	if errors.Is(err, unix.ENOENT) {
		return v, true // external SNAT: no set
	}
	if err != nil {
		t.Fatalf("set %s: %v", setNoSNAT, err)
	}
	if !set.Interval {
		t.Errorf("set %s is not an interval set", setNoSNAT)
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		s := a.String()
		if e.IntervalEnd {
			s += "(end)"
		}
		v.nosnat = append(v.nosnat, s)
	}
	slices.Sort(v.nosnat)
	return v, true
}

// has reports whether rule holds an expression of type E matching ok.
func has[E any](rule []any, ok func(E) bool) bool {
	for _, e := range rule {
		if x, is := e.(E); is && ok(x) {
			return true
		}
	}
	return false
}

// nftText lists the table with the nft tool, for the log and for the
// checks that read best as nft syntax; "" when nft is not installed (the
// API checks above still run).
func nftText(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Log("nft not installed: text listing not checked")
		return ""
	}
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(ns)),
		"nft", "list", "table", "ip", SNATTable).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	t.Logf("nft list table ip %s:\n%s", SNATTable, out)
	return string(out)
}

// fwmarkRuleCount counts the rules `fwmark <mark>/<mark> lookup main`, and
// any other fwmark rule at that priority as a mismatch (-100 each).
func fwmarkRuleCount(t *testing.T, h *netlink.Handle, mark uint32) int {
	t.Helper()
	n := 0
	for _, r := range must[[]netlink.Rule](t)(h.RuleList(netlink.FAMILY_V4)) {
		if r.Priority == FwmarkRulePriority && (r.Mark != mark || r.Mask == nil || *r.Mask != mark) {
			n -= 100
		}
		if r.Priority == FwmarkRulePriority && r.Mark == mark && r.Mask != nil && *r.Mask == mark && r.Table == unix.RT_TABLE_MAIN {
			n++
		}
	}
	return n
}

func TestSetupPrimary(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	primaryMAC := mustMAC(t, "02:00:00:00:00:05")
	primaryIP := netip.MustParseAddr("10.0.1.10")
	pfx := func(ss ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, s := range ss {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		return ps
	}
	for _, c := range []struct {
		name       string
		cfg        Config
		wantNoSNAT []string
		wantText   []string // fragments of `nft list table`
		wantMark   uint32
	}{
		{
			name: "randomized, excluded CIDRs merged with the VPC's",
			cfg: Config{VPCCIDRs: pfx("10.0.0.0/16", "10.1.0.0/16"), ExcludeSNATCIDRs: pfx("10.0.5.0/24", "192.168.0.0/16"),
				RandomizeSNAT: SNATPortsPRNG},
			wantMark:   0x80,
			wantNoSNAT: []string{"10.0.0.0", "10.2.0.0(end)", "192.168.0.0", "192.169.0.0(end)"},
			wantText: []string{`iifname "eni*"`, `snat to 10.0.1.10 fully-random`, `oifname "ens5"`,
				`ip daddr != @nosnat`, `fib daddr type != local`, `ct state new`,
				`fib daddr . iif type local`, `hook prerouting priority mangle`, `hook prerouting priority dstnat + 10`,
				`hook postrouting priority srcnat`},
		},
		{
			name:       "not randomized, other veth prefix",
			cfg:        Config{VPCCIDRs: pfx("172.31.0.0/16"), VethPrefix: "pod", MTU: 1500, RandomizeSNAT: SNATPortsNone},
			wantNoSNAT: []string{"172.31.0.0", "172.32.0.0(end)"},
			wantText:   []string{`iifname "pod*"`, `snat to 10.0.1.10 comment`},
			wantMark:   0x80,
		},
		{
			// AWS_VPC_K8S_CNI_RANDOMIZESNAT=hashrandom is iptables' --random,
			// not --random-fully; AWS_VPC_K8S_CNI_CONNMARK moves the mark.
			name:       "hash-random ports, another connmark",
			cfg:        Config{VPCCIDRs: pfx("172.31.0.0/16"), RandomizeSNAT: SNATPortsHashRandom, ConnMark: 0x2000},
			wantNoSNAT: []string{"172.31.0.0", "172.32.0.0(end)"},
			wantText: []string{`snat to 10.0.1.10 random comment`, `ct mark set ct mark | 0x00002000`,
				`ct mark & 0x00002000 == 0x00002000 meta mark set meta mark | 0x00002000`},
			wantMark: 0x2000,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			nodeNS, node := newNS(t)
			vpcNS, vpc := newNS(t)
			addVeth(t, node, "ens5", primaryMAC, "vpc0", vpcNS, vpc)
			c.cfg.NetNS = nodeNS
			h := newHost(t, c.cfg)
			wantMTU := h.cfg.MTU
			prefix := h.cfg.VethPrefix

			var first snatView
			for i := range 2 { // idempotent
				if err := h.SetupPrimary(ctx, primaryMAC, primaryIP); err != nil {
					t.Fatalf("SetupPrimary #%d: %v", i+1, err)
				}
				v, ok := readSNAT(t, nodeNS)
				if !ok {
					t.Fatalf("SetupPrimary #%d: no table %s", i+1, SNATTable)
				}
				if i == 0 {
					first = v
				} else if fmt.Sprint(v.chains, v.nosnat, v.notes) != fmt.Sprint(first.chains, first.nosnat, first.notes) {
					t.Errorf("second SetupPrimary changed the table:\n%+v\n%+v", first, v)
				}
				if n := fwmarkRuleCount(t, node, c.wantMark); n != 1 {
					t.Errorf("SetupPrimary #%d: %d fwmark rules, want 1", i+1, n)
				}
			}
			v := first
			wantChains := []string{
				fmt.Sprintf("postrouting nat hook %d prio 100", *nftables.ChainHookPostrouting),
				fmt.Sprintf("prerouting filter hook %d prio -90", *nftables.ChainHookPrerouting),
				fmt.Sprintf("prerouting-nodeport filter hook %d prio -150", *nftables.ChainHookPrerouting),
			}
			if !slices.Equal(v.chains, wantChains) {
				t.Errorf("chains %q, want %q", v.chains, wantChains)
			}
			if !slices.Equal(v.nosnat, c.wantNoSNAT) {
				t.Errorf("set nosnat %v, want %v", v.nosnat, c.wantNoSNAT)
			}

			pre, np, post := v.rules[chainPrerouting], v.rules[chainNodePort], v.rules[chainPostrouting]
			if len(pre) != 2 || len(np) != 1 || len(post) != 1 {
				t.Fatalf("%d prerouting, %d NodePort and %d postrouting rules, want 2, 1 and 1", len(pre), len(np), len(post))
			}
			cmpIs := func(want []byte) func(*expr.Cmp) bool {
				return func(e *expr.Cmp) bool { return e.Op == expr.CmpOpEq && bytes.Equal(e.Data, want) }
			}
			// google/nftables v0.3.0 does not decode NFTA_CT_SREG: a `ct mark
			// set` reads back as a ct mark expression without a destination.
			ctMarkWrite := func(e *expr.Ct) bool { return e.Key == expr.CtKeyMARK && (e.SourceRegister || e.Register == 0) }
			notInSet := func(e *expr.Lookup) bool { return e.SetName == setNoSNAT && e.Invert }
			// 1: pod connections leaving the VPC (judged after DNAT) get the
			// connmark.
			if !has(pre[0], cmpIs([]byte(prefix))) || !has(pre[0], notInSet) || !has(pre[0], ctMarkWrite) {
				t.Errorf("prerouting rule 1 is not `iifname %q* ... ip daddr != @nosnat ct mark set`: %#v", prefix, pre[0])
			}
			// 2: restore into the packet mark.
			if !has(pre[1], func(e *expr.Meta) bool { return e.Key == expr.MetaKeyMARK && e.SourceRegister }) {
				t.Errorf("prerouting rule 2 does not set the packet mark: %#v", pre[1])
			}
			// NodePort connections on the primary interface, before DNAT.
			if !has(np[0], cmpIs(ifname("ens5"))) || !has(np[0], func(e *expr.Fib) bool { return e.FlagIIF && e.ResultADDRTYPE }) ||
				!has(np[0], ctMarkWrite) {
				t.Errorf("NodePort rule is not `iifname ens5 fib daddr . iif type local ct mark set`: %#v", np[0])
			}
			// SNAT out of the primary interface, to the primary IP.
			nat := func(e *expr.NAT) bool {
				return e.Type == expr.NATTypeSourceNAT && e.RegAddrMin == 1 &&
					e.FullyRandom == (c.cfg.RandomizeSNAT == SNATPortsPRNG) && e.Random == (c.cfg.RandomizeSNAT == SNATPortsHashRandom)
			}
			markIs := func(e *expr.Bitwise) bool { return bytes.Equal(e.Xor, ne32(c.wantMark)) }
			if !has(post[0], cmpIs(ifname("ens5"))) || !has(post[0], notInSet) || !has(post[0], nat) ||
				!has(post[0], func(e *expr.Immediate) bool { return bytes.Equal(e.Data, primaryIP.AsSlice()) }) {
				t.Errorf("postrouting rule is not `oifname ens5 ... snat to %s (%s)`: %#v", primaryIP, c.cfg.RandomizeSNAT, post[0])
			}
			if !has(pre[0], markIs) || !has(pre[1], markIs) || !has(np[0], markIs) {
				t.Errorf("prerouting rules do not set mark %#x: %#v", c.wantMark, pre)
			}
			if txt := nftText(t, nodeNS); txt != "" {
				for _, w := range c.wantText {
					if !strings.Contains(txt, w) {
						t.Errorf("nft listing lacks %q", w)
					}
				}
				if c.cfg.RandomizeSNAT != SNATPortsPRNG && strings.Contains(txt, "fully-random") {
					t.Errorf("fully-random with RandomizeSNAT=%s", c.cfg.RandomizeSNAT)
				}
				if c.cfg.RandomizeSNAT == SNATPortsNone && strings.Contains(txt, " random") {
					t.Error("random ports with RandomizeSNAT=none")
				}
			}

			if got := sysctl(t, nodeNS, "net/ipv4/conf/ens5/rp_filter"); got != "2" {
				t.Errorf("rp_filter on ens5 = %s, want 2", got)
			}
			if got := sysctl(t, nodeNS, "net/ipv4/ip_forward"); got != "1" {
				t.Errorf("ip_forward = %s, want 1", got)
			}
			if l := must[netlink.Link](t)(node.LinkByName("ens5")); l.Attrs().MTU != wantMTU {
				t.Errorf("ens5 MTU %d, want %d", l.Attrs().MTU, wantMTU)
			}

			// ExternalSNAT: another Host on the same node keeps only the
			// NodePort connmark and its restore: no SNAT, no pod marks.
			ext := newHost(t, Config{NetNS: nodeNS, ExternalSNAT: true, MTU: wantMTU, ConnMark: c.cfg.ConnMark})
			if err := ext.SetupPrimary(ctx, primaryMAC, primaryIP); err != nil {
				t.Fatalf("SetupPrimary with ExternalSNAT: %v", err)
			}
			if ev, ok := readSNAT(t, nodeNS); !ok || len(ev.rules[chainNodePort]) != 1 || len(ev.rules[chainPrerouting]) != 1 ||
				len(ev.rules[chainPostrouting]) != 0 || len(ev.nosnat) != 0 {
				t.Errorf("with ExternalSNAT: table %v, rules %v, set %v; want one NodePort mark and one restore", ok, ev.rules, ev.nosnat)
			}
			if err := ext.SetupPrimary(ctx, primaryMAC, primaryIP); err != nil {
				t.Fatalf("second SetupPrimary with ExternalSNAT: %v", err)
			}

			// Back to SNAT, then tear down.
			if err := h.SetupPrimary(ctx, primaryMAC, primaryIP); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := h.TeardownPrimary(ctx); err != nil {
					t.Fatalf("TeardownPrimary #%d: %v", i+1, err)
				}
				if _, ok := readSNAT(t, nodeNS); ok {
					t.Errorf("TeardownPrimary #%d left table %s", i+1, SNATTable)
				}
				if n := fwmarkRuleCount(t, node, c.wantMark); n != 0 {
					t.Errorf("TeardownPrimary #%d left %d fwmark rules", i+1, n)
				}
			}
		})
	}
}

// AWS_EXTERNAL_SERVICE_CIDRS: exactly one "to <cidr> lookup main" rule at
// priority 1535 per CIDR, a stale one from an earlier configuration
// removed, idempotent, gone at teardown. AWS_VPC_CNI_NODE_PORT_SUPPORT=false:
// no NodePort connmark.
func TestExternalServiceRulesAndNoNodePort(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	ctx := t.Context()
	primaryMAC := mustMAC(t, "02:00:00:00:00:06")
	primaryIP := netip.MustParseAddr("10.0.1.10")
	nodeNS, node := newNS(t)
	vpcNS, vpc := newNS(t)
	addVeth(t, node, "ens5", primaryMAC, "vpc0", vpcNS, vpc)
	stale := netlink.NewRule()
	stale.Priority, stale.Table = ExternalServiceRulePriority, unix.RT_TABLE_MAIN
	stale.Dst = &net.IPNet{IP: net.IPv4(203, 0, 113, 0).To4(), Mask: net.CIDRMask(24, 32)}
	if err := node.RuleAdd(stale); err != nil {
		t.Fatal(err)
	}
	extRules := func() []string {
		var out []string
		for _, r := range must[[]netlink.Rule](t)(node.RuleList(netlink.FAMILY_V4)) {
			if r.Priority == ExternalServiceRulePriority {
				out = append(out, fmt.Sprintf("%v table %d", r.Dst, r.Table))
			}
		}
		slices.Sort(out)
		return out
	}
	h := newHost(t, Config{NetNS: nodeNS, VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, NoNodePort: true,
		ExternalServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/25")}})
	want := []string{"192.0.2.0/25 table 254", "198.51.100.0/24 table 254"}
	for i := range 2 {
		if err := h.SetupPrimary(ctx, primaryMAC, primaryIP); err != nil {
			t.Fatalf("SetupPrimary #%d: %v", i+1, err)
		}
		if got := extRules(); !slices.Equal(got, want) {
			t.Fatalf("SetupPrimary #%d: rules at %d %v, want %v", i+1, ExternalServiceRulePriority, got, want)
		}
	}
	v, ok := readSNAT(t, nodeNS)
	if !ok || len(v.rules[chainNodePort]) != 0 || len(v.rules[chainPrerouting]) != 2 {
		t.Fatalf("with NodePort support off: table %v, rules %v; want no NodePort mark", ok, v.rules)
	}
	if err := h.TeardownPrimary(ctx); err != nil {
		t.Fatal(err)
	}
	if got := extRules(); len(got) != 0 {
		t.Fatalf("after TeardownPrimary: %v", got)
	}
}
