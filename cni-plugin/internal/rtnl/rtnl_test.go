package rtnl

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/testenv"
)

// A node's host side for a pod, built with vishvananda/netlink in a fresh
// namespace, then torn down once by podnet.TeardownHost and once by this
// package's: the kernel must be left in the same state, and in the state
// the case expects.
func TestTeardownHostMatchesPodnet(t *testing.T) {
	testenv.RequireRoot(t, "veths, routes and rules in a network namespace")
	ip := net.IPv4(10, 0, 9, 9).To4()
	other := net.IPv4(10, 0, 9, 10).To4()
	for _, tc := range []struct {
		name       string
		build      func(t *testing.T, h *netlink.Handle)
		hostName   string
		table      int
		deleteVeth bool
		want       string
	}{
		{"veth kept", pod("eniaaa", ip, 3), "eniaaa", 3, false, "links eniaaa,peer0 routes - rules -"},
		{"veth deleted", pod("eniaaa", ip, 3), "eniaaa", 3, true, "links - routes - rules -"},
		{"found by route", pod("eniaaa", ip, 3), "", 3, true, "links - routes - rules -"},
		{"main table", pod("eniaaa", ip, podnet.MainTable), "", podnet.MainTable, true, "links - routes - rules -"},
		{"table unknown", pod("eniaaa", ip, 5), "eniaaa", -1, false, "links eniaaa,peer0 routes - rules -"},
		{"table above 255", pod("eniaaa", ip, 300), "eniaaa", 300, false, "links eniaaa,peer0 routes - rules -"},
		{"table main, rule of table 5 left", pod("eniaaa", ip, 5), "eniaaa", podnet.MainTable, false,
			"links eniaaa,peer0 routes - rules 1536 from 10.0.9.9/32 lookup 5"},
		{"table 3, rule of table 5 left", pod("eniaaa", ip, 5), "eniaaa", 3, false,
			"links eniaaa,peer0 routes - rules 1536 from 10.0.9.9/32 lookup 5"},
		// Rules of the address at other priorities are not the pod's.
		{"other priorities left", both(pod("eniaaa", ip, 3), otherRules(ip)), "eniaaa", 3, true,
			"links - routes - rules 1000 to 10.0.9.9/32 lookup 254,2000 from 10.0.9.9/32 lookup 3"},
		// The name is a newer sandbox's, routing another address: its
		// route, veth and rules stay; the address's rules go.
		{"another sandbox's veth", both(pod("eniaaa", other, 3), addrRules(ip, 3)), "eniaaa", 3, true,
			"links eniaaa,peer0 routes 10.0.9.10/32 dev eniaaa rules 1536 from 10.0.9.10/32 lookup 3,512 to 10.0.9.10/32 lookup 254"},
		// A /32 through a device that is not a veth is not a pod's.
		{"not a veth", notVeth(ip), "", podnet.MainTable, true, "links ifb9 routes 10.0.9.9/32 dev ifb9 rules -"},
		{"nothing there", func(*testing.T, *netlink.Handle) {}, "eniaaa", 3, true, "links - routes - rules -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var states [2]string
			for i, teardown := range []func(string, net.IP, int, bool) error{podnet.TeardownHost, TeardownHost} {
				ns, h := testenv.NewNetNS(t)
				tc.build(t, h)
				for range 2 { // idempotent
					if err := testenv.OnThreadIn(ns, func() error { return teardown(tc.hostName, ip, tc.table, tc.deleteVeth) }); err != nil {
						t.Fatalf("teardown %d: %v", i, err)
					}
				}
				states[i] = state(t, h)
			}
			if states[0] != states[1] {
				t.Fatalf("podnet left %q, rtnl %q", states[0], states[1])
			}
			if states[1] != tc.want {
				t.Fatalf("left %q, want %q", states[1], tc.want)
			}
		})
	}
}

// pod wires a veth routing addr with its rules, as ipamd does.
func pod(veth string, addr net.IP, table int) func(*testing.T, *netlink.Handle) {
	return func(t *testing.T, h *netlink.Handle) {
		t.Helper()
		la := netlink.LinkAttrs{Name: veth, Flags: net.FlagUp}
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer0"}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(veth)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(addr), Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
		addrRules(addr, table)(t, h)
	}
}

// addrRules adds the pod rules of addr, as ipamd does.
func addrRules(addr net.IP, table int) func(*testing.T, *netlink.Handle) {
	return func(t *testing.T, h *netlink.Handle) {
		t.Helper()
		for _, r := range podnet.Rules(addr, table) {
			if err := h.RuleAdd(r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// otherRules adds rules for addr at priorities that are not the pod's.
func otherRules(addr net.IP) func(*testing.T, *netlink.Handle) {
	return func(t *testing.T, h *netlink.Handle) {
		t.Helper()
		to, from := netlink.NewRule(), netlink.NewRule()
		to.Priority, to.Dst, to.Table = 1000, podnet.HostNet(addr), podnet.MainTable
		from.Priority, from.Src, from.Table = 2000, podnet.HostNet(addr), 3
		for _, r := range []*netlink.Rule{to, from} {
			if err := h.RuleAdd(r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func both(a, b func(*testing.T, *netlink.Handle)) func(*testing.T, *netlink.Handle) {
	return func(t *testing.T, h *netlink.Handle) { a(t, h); b(t, h) }
}

func notVeth(addr net.IP) func(*testing.T, *netlink.Handle) {
	return func(t *testing.T, h *netlink.Handle) {
		t.Helper()
		if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb9", Flags: net.FlagUp}}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName("ifb9")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(addr), Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
	}
}

// state is the namespace's links (but lo), main-table routes and the
// rules that name an address, as text.
func state(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	var ls, rs, rules []string
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		if l.Attrs().Name != "lo" {
			ls = append(ls, l.Attrs().Name)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: podnet.MainTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		rs = append(rs, fmt.Sprintf("%s dev %s", r.Dst, names[r.LinkIndex]))
	}
	rl, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rl {
		switch {
		case r.Dst != nil:
			rules = append(rules, fmt.Sprintf("%d to %s lookup %d", r.Priority, r.Dst, r.Table))
		case r.Src != nil:
			rules = append(rules, fmt.Sprintf("%d from %s lookup %d", r.Priority, r.Src, r.Table))
		}
	}
	join := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		slices.Sort(s)
		return strings.Join(s, ",")
	}
	return fmt.Sprintf("links %s routes %s rules %s", join(ls), join(rs), join(rules))
}

// Bad answers from the socket are errors, not panics or loops.
func TestForAttrsStopsAtMalformed(t *testing.T) {
	b := attr(nil, 1, []byte("ok"))
	b = append(b, 0xff, 0x00, 0x02, 0x00) // length 255, past the end
	var got []uint16
	forAttrs(b, func(typ uint16, v []byte) { got = append(got, typ) })
	if !slices.Equal(got, []uint16{1}) {
		t.Fatalf("attributes %v, want [1] and a stop at the malformed one", got)
	}
}

// msg is a netlink message: header and body.
func msg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body)+3)
	ne.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b = append(b, body...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func errnoBody(errno int32) []byte { return ne.AppendUint32(make([]byte, 0, 20), uint32(-errno)) }

// The kernel's answers, as parseAnswer reads them: a dump over two reads,
// others' messages skipped, errors and acknowledgements, an interrupted or
// failed dump, and truncation, which must not be read past.
func TestParseAnswer(t *testing.T) {
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	out, done, err := parseAnswer(cat(msg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, 7, []byte("r1x")), msg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, 6, []byte("old")),
		msg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, 7, []byte("r2"))), 7, false, nil)
	if err != nil || done || len(out) != 2 || string(out[0]) != "r1x" || string(out[1]) != "r2" {
		t.Fatalf("first read of a dump: %q %v %v", out, done, err)
	}
	out, done, err = parseAnswer(cat(msg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, 7, []byte("r3")), msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, 7, errnoBody(0))), 7, false, out)
	if err != nil || !done || len(out) != 3 || string(out[2]) != "r3" {
		t.Fatalf("end of a dump: %q %v %v", out, done, err)
	}
	for _, tc := range []struct {
		name   string
		b      []byte
		single bool
		want   error
		n      int
	}{
		{"ack", msg(unix.NLMSG_ERROR, 0, 7, errnoBody(0)), false, nil, 0},
		{"error", msg(unix.NLMSG_ERROR, 0, 7, errnoBody(int32(unix.ENOENT))), false, unix.ENOENT, 0},
		{"an earlier request's error", cat(msg(unix.NLMSG_ERROR, 0, 6, errnoBody(int32(unix.EPERM))), msg(unix.NLMSG_ERROR, 0, 7, errnoBody(0))), false, nil, 0},
		{"a get's one answer", msg(unix.RTM_NEWLINK, 0, 7, []byte("link")), true, nil, 1},
		{"interrupted dump", msg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, 7, []byte("r")), false, unix.EINTR, 0},
		{"failed dump", msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, 7, errnoBody(int32(unix.ENOBUFS))), false, unix.ENOBUFS, 0},
		{"truncated message", msg(unix.RTM_NEWROUTE, 0, 7, []byte("route"))[:unix.NLMSG_HDRLEN+2], false, errTruncated, 0},
		{"length below the header", func() []byte { b := msg(unix.RTM_NEWROUTE, 0, 7, nil); ne.PutUint32(b, 4); return b }(), false, errTruncated, 0},
		{"truncated error", msg(unix.NLMSG_ERROR, 0, 7, []byte{1}), false, errTruncated, 0},
	} {
		out, done, err := parseAnswer(tc.b, 7, tc.single, nil)
		switch {
		case !done:
			t.Errorf("%s: not complete", tc.name)
		case tc.want == errTruncated && (err == nil || !strings.Contains(err.Error(), "truncated")):
			t.Errorf("%s: %v, want a truncation error", tc.name, err)
		case tc.want != errTruncated && !errors.Is(err, tc.want) && (err != nil || tc.want != nil):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		case len(out) != tc.n:
			t.Errorf("%s: %d messages, want %d", tc.name, len(out), tc.n)
		}
	}
}

var errTruncated = errors.New("truncated")
