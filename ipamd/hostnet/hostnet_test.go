package hostnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/testenv"
)

// Privileged tests build throwaway namespaces from unshared threads. The
// namespaces are anonymous: they live as long as a handle or socket refers
// to them, so closing the handles (t.Cleanup, or the process exiting on a
// crash) deletes them with everything inside; nothing is left in
// /run/netns.

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newNS creates an empty network namespace with lo up.
func newNS(t *testing.T) (netns.NsHandle, *netlink.Handle) { return testenv.NewNetNS(t) }

// runIn runs f on a throwaway thread inside ns.
func runIn(t *testing.T, ns netns.NsHandle, f func() error) error {
	t.Helper()
	c := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			c <- err
			return
		}
		c <- f()
	}()
	return <-c
}

// sysctl reads /proc/sys/<key> inside ns.
func sysctl(t *testing.T, ns netns.NsHandle, key string) string {
	t.Helper()
	var v []byte
	if err := runIn(t, ns, func() (err error) {
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	}); err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return strings.TrimSpace(string(v))
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// addVeth creates name (with mac) in h's namespace and its peer in
// peerNS, both up.
func addVeth(t *testing.T, h *netlink.Handle, name string, mac net.HardwareAddr, peer string, peerNS netns.NsHandle, peerH *netlink.Handle) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}, PeerName: peer,
		PeerNamespace: netlink.NsFd(peerNS)}
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", name, peer, err)
	}
	l := must[netlink.Link](t)(h.LinkByName(name))
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	p := must[netlink.Link](t)(peerH.LinkByName(peer))
	if err := peerH.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
}

func addAddr(t *testing.T, h *netlink.Handle, link string, p string) {
	t.Helper()
	l := must[netlink.Link](t)(h.LinkByName(link))
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(p))}); err != nil {
		t.Fatalf("addr %s on %s: %v", p, link, err)
	}
}

func newHost(t *testing.T, cfg Config) *Host {
	t.Helper()
	h, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func TestRouteTable(t *testing.T) {
	for _, c := range []struct{ dev, card, want int }{
		{0, 0, 254},
		{1, 0, 2},
		{2, 0, 3},
		{14, 0, 15},
		{0, 1, 10100},
		{1, 1, 10101},
		{3, 2, 10203},
	} {
		if got := RouteTable(c.dev, c.card); got != c.want {
			t.Errorf("RouteTable(%d, %d) = %d, want %d", c.dev, c.card, got, c.want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	vpc := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
	for _, c := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"defaults", Config{VPCCIDRs: vpc}, nil},
		{"external SNAT needs no VPC CIDR", Config{ExternalSNAT: true}, nil},
		{"no VPC CIDR", Config{}, []string{"no VPC CIDR"}},
		{"MTU too small", Config{VPCCIDRs: vpc, MTU: 500}, []string{"MTU 500"}},
		{"MTU too large", Config{VPCCIDRs: vpc, MTU: 9002}, []string{"MTU 9002"}},
		{"reserved prefix", Config{VPCCIDRs: vpc, VethPrefix: "eth"}, []string{`"eth" is reserved`}},
		{"long prefix", Config{VPCCIDRs: vpc, VethPrefix: "podif"}, []string{"at most 4"}},
		{"wildcard prefix", Config{VPCCIDRs: vpc, VethPrefix: "e*"}, []string{"invalid character"}},
		{"IPv6 and invalid CIDRs, all reported", Config{
			VPCCIDRs:         []netip.Prefix{netip.MustParsePrefix("fd00::/64")},
			ExcludeSNATCIDRs: []netip.Prefix{{}},
			MTU:              100,
		}, []string{"VPC CIDR fd00::/64", "excluded SNAT CIDR invalid Prefix", "MTU 100"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := New(c.cfg, nil)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if h.cfg.MTU != DefaultMTU || h.cfg.VethPrefix != "eni" {
					t.Errorf("defaults: MTU %d, prefix %q", h.cfg.MTU, h.cfg.VethPrefix)
				}
				if err := h.Close(); err != nil {
					t.Fatal(err)
				}
				if err := h.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestClosedHostRefuses(t *testing.T) {
	h, err := New(Config{VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for name, err := range map[string]error{
		"SetupPrimary":       h.SetupPrimary(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.0.1")),
		"SetupENI":           h.SetupENI(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1, 0, netip.MustParseAddr("10.0.0.5"), netip.MustParsePrefix("10.0.0.0/24")),
		"TeardownENI":        h.TeardownENI(ctx, 1, 0),
		"TeardownPrimary":    h.TeardownPrimary(ctx),
		"PruneStalePodRules": h.PruneStalePodRules(ctx, nil),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestMergeSpans(t *testing.T) {
	el := func(s string, end bool) string {
		if end {
			return s + "(end)"
		}
		return s
	}
	for _, c := range []struct {
		name string
		in   []string
		want []string
	}{
		{"one", []string{"10.0.0.0/16"}, []string{el("10.0.0.0", false), el("10.1.0.0", true)}},
		{"unmasked input", []string{"10.0.3.7/16"}, []string{el("10.0.0.0", false), el("10.1.0.0", true)}},
		{"contained", []string{"10.0.1.0/24", "10.0.0.0/16"}, []string{el("10.0.0.0", false), el("10.1.0.0", true)}},
		{"adjacent", []string{"10.0.1.0/24", "10.0.0.0/24"}, []string{el("10.0.0.0", false), el("10.0.2.0", true)}},
		{"disjoint, sorted", []string{"192.168.0.0/16", "10.0.0.0/8"},
			[]string{el("10.0.0.0", false), el("11.0.0.0", true), el("192.168.0.0", false), el("192.169.0.0", true)}},
		{"to the top", []string{"255.255.255.255/32", "255.255.255.0/24"}, []string{el("255.255.255.0", false)}},
		{"everything", []string{"10.0.0.0/8", "0.0.0.0/0"}, []string{el("0.0.0.0", false)}},
		{"empty", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, s := range c.in {
				ps = append(ps, netip.MustParsePrefix(s))
			}
			var got []string
			for _, e := range intervalElements(mergeSpans(ps)) {
				a, _ := netip.AddrFromSlice(e.Key)
				got = append(got, el(a.String(), e.IntervalEnd))
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestCheckENI(t *testing.T) {
	subnet := netip.MustParsePrefix("10.0.2.0/24")
	for _, c := range []struct {
		name      string
		dev, card int
		ip        string
		subnet    netip.Prefix
		gw        string // "" = invalid
	}{
		{"ok", 1, 0, "10.0.2.10", subnet, "10.0.2.1"},
		{"unmasked subnet", 2, 0, "10.0.2.10", netip.MustParsePrefix("10.0.2.77/24"), "10.0.2.1"},
		{"device 0", 0, 0, "10.0.2.10", subnet, ""},
		{"device 0 of card 1", 0, 1, "10.0.2.10", subnet, "10.0.2.1"},
		{"card 100", 1, 100, "10.0.2.10", subnet, ""},
		{"device 100", 100, 0, "10.0.2.10", subnet, ""},
		{"outside subnet", 1, 0, "10.0.3.10", subnet, ""},
		{"the gateway", 1, 0, "10.0.2.1", subnet, ""},
		{"network address", 1, 0, "10.0.2.0", subnet, ""},
		{"IPv6", 1, 0, "fd00::5", netip.MustParsePrefix("fd00::/64"), ""},
		{"/31", 1, 0, "10.0.2.1", netip.MustParsePrefix("10.0.2.0/31"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			gw, err := checkENI(c.dev, c.card, netip.MustParseAddr(c.ip), c.subnet)
			if c.gw == "" {
				if !errors.Is(err, ErrInvalidArg) {
					t.Fatalf("checkENI: %v, want ErrInvalidArg", err)
				}
				return
			}
			if err != nil || gw.String() != c.gw {
				t.Fatalf("checkENI = %v, %v; want %s", gw, err, c.gw)
			}
		})
	}
}
