package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/berth-io/berth/internal/nsrun"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The test network: a "host" namespace with one veth pair per pod, wired
// like berth-cni does (pod /32, default route via a link-local gateway
// with a static neighbour, host /32 route to the pod), so the programs see
// what they see on a node.
const gateway = "169.254.1.1"

var (
	nodeIP  = netip.MustParseAddr("10.99.255.1")
	nodeIP6 = netip.MustParseAddr("fd99:ffff::1")
	// IPv6 pods route via a link-local gateway, as IPv4 ones do.
	gateway6 = netip.MustParseAddr("fe80::1")
)

type testNet struct {
	host string
	pods []*testPod
	pin  string
}

type testPod struct {
	ns      string
	ip      netip.Addr
	ip6     netip.Addr
	ifindex int // host veth
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newTestNet builds the host namespace with n pods and a unique pin dir;
// everything is removed when the test ends.
func newTestNet(t testing.TB, n int) *testNet {
	t.Helper()
	testenv.RequireRoot(t, "netns, veth and bpf programs")
	id := randSuffix()
	tn := &testNet{host: "npt-h-" + id, pin: pinDir(t)}
	addNetNS(t, tn.host)
	hh := nsHandle(t, tn.host)
	lo, err := hh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{nodeIP, nodeIP6} {
		if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
	}
	if err := inNS(tn.host, func() error {
		return errors.Join(
			os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644),
			os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644),
			noDAD(),
		)
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := &testPod{ns: fmt.Sprintf("npt-p%d-%s", i, id), ip: netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}),
			ip6: netip.AddrFrom16([16]byte{0xfd, 0x99, 15: byte(i + 1)})}
		addNetNS(t, p.ns)
		if err := inNS(p.ns, noDAD); err != nil {
			t.Fatal(err)
		}
		tn.wire(t, p, fmt.Sprintf("hv%d", i), 0)
		tn.pods = append(tn.pods, p)
	}
	return tn
}

// wire creates p's veth pair (host end hostName, with ifindex index if
// not 0) and wires it as berth-cni does.
func (tn *testNet) wire(t testing.TB, p *testPod, hostName string, index int) {
	t.Helper()
	hh := nsHandle(t, tn.host)
	ph := nsHandle(t, p.ns)
	pfd, err := netns.GetFromName(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, Index: index, Flags: net.FlagUp},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pfd))}
	err = hh.LinkAdd(veth)
	pfd.Close()
	if err != nil {
		t.Fatalf("veth for %s: %v", p.ns, err)
	}
	hl, err := hh.LinkByName(veth.Name)
	if err != nil {
		t.Fatal(err)
	}
	p.ifindex = hl.Attrs().Index
	pl, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	plo, err := ph.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	gw := net.ParseIP(gateway)
	steps := []error{
		ph.LinkSetUp(plo),
		ph.LinkSetUp(pl),
		ph.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(p.ip)}),
		ph.RouteReplace(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}),
		ph.RouteReplace(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gw}),
		ph.NeighSet(&netlink.Neigh{LinkIndex: pl.Attrs().Index, IP: gw, HardwareAddr: hl.Attrs().HardwareAddr, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}),
		hh.RouteReplace(&netlink.Route{LinkIndex: p.ifindex, Dst: ipNet(p.ip), Scope: netlink.SCOPE_LINK}),
		hh.NeighSet(&netlink.Neigh{LinkIndex: p.ifindex, IP: p.ip.AsSlice(), HardwareAddr: pl.Attrs().HardwareAddr, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}),
		// IPv6: the host finds the pod by neighbour discovery, which
		// the programs must let through whatever the policy.
		ph.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(p.ip6), Flags: unix.IFA_F_NODAD}),
		ph.NeighSet(&netlink.Neigh{LinkIndex: pl.Attrs().Index, IP: gateway6.AsSlice(), HardwareAddr: hl.Attrs().HardwareAddr, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V6}),
		ph.RouteReplace(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gateway6.AsSlice()}),
		hh.RouteReplace(&netlink.Route{LinkIndex: p.ifindex, Dst: ipNet(p.ip6), Scope: netlink.SCOPE_LINK}),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatalf("wire %s: %v", p.ns, err)
	}
}

// pinDir returns a unique pin dir under /sys/fs/bpf, removed when the
// test ends, with bpffs unmounted again if Open mounted it and nothing
// else is pinned there.
func pinDir(t testing.TB) string {
	t.Helper()
	dir := "/sys/fs/bpf/berth-test-" + randSuffix()
	unmount := !isBPFFS("/sys/fs/bpf")
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove pin dir: %v", err)
		}
		if unmount && bpffsEmpty("/sys/fs/bpf") {
			_ = unix.Unmount("/sys/fs/bpf", 0)
		}
	})
	return dir
}

// bpffsEmpty reports whether dir holds nothing but the kernel's preloaded
// iterators (maps.debug, progs.debug).
func bpffsEmpty(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Name() != "maps.debug" && e.Name() != "progs.debug" {
			return false
		}
	}
	return true
}

// noDAD turns off duplicate address detection for new interfaces of the
// calling thread's namespace: addresses are usable at once.
func noDAD() error {
	return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644)
}

func ipNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func addNetNS(t testing.TB, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
}

func nsHandle(t testing.TB, name string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// inNS runs fn on a thread inside the named namespace. Sockets fn opens
// stay in that namespace afterwards.
func inNS(name string, fn func() error) error { return nsrun.In(name, fn) }

func (tn *testNet) open(t testing.TB) *Datapath {
	t.Helper()
	d, err := Open(Config{PinDir: tn.pin, NodeIPs: []netip.Addr{nodeIP, nodeIP6}, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// attach attaches in the host namespace, where the ifindexes live.
func (tn *testNet) attach(t testing.TB, d *Datapath, p *testPod) {
	t.Helper()
	if err := inNS(tn.host, func() error { return d.Attach(p.ifindex) }); err != nil {
		t.Fatalf("attach %s: %v", p.ns, err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// serveTCP starts an echo server on port in p's namespace.
func serveTCP(t testing.TB, p *testPod, port int) {
	t.Helper()
	var ln net.Listener
	if err := inNS(p.ns, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)) // both families
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

const denyWait = 400 * time.Millisecond

// dial connects from ns (a pod's or the host's) to dst:port.
func dial(ns string, dst netip.Addr, port int) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(port)).String(), denyWait)
		return err
	})
	return c, err
}

// canTCP reports whether a TCP connection and one round trip work.
func canTCP(ns string, dst netip.Addr, port int) bool {
	c, err := dial(ns, dst, port)
	if err != nil {
		return false
	}
	defer c.Close()
	return roundTrip(c) == nil
}

// roundTrip sends one byte and waits for its echo.
func roundTrip(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(denyWait)); err != nil {
		return err
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err
}

// canUDP reports whether a datagram from src reaches dst:port.
func canUDP(t testing.TB, src, dst *testPod, port int) bool {
	t.Helper()
	return canUDPSize(t, src, dst, port, 4)
}

// canUDPSize is canUDP with a datagram of size bytes (above the veths'
// 1500-byte MTU the sender fragments it).
func canUDPSize(t testing.TB, src, dst *testPod, port, size int) bool {
	t.Helper()
	var srv, cli *net.UDPConn
	if err := inNS(dst.ns, func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: dst.ip.AsSlice(), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := inNS(src.ns, func() (err error) {
		cli, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst.ip.AsSlice(), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(denyWait))
	b := make([]byte, size+1)
	n, _, err := srv.ReadFromUDP(b)
	return err == nil && n == size
}

// canSCTP sends a raw IPv4 packet of protocol 132 (an SCTP common header:
// ports, verification tag, checksum) from src and reports whether dst's
// raw socket receives it. The kernel has no SCTP stack to answer it.
func canSCTP(t testing.TB, src, dst *testPod, sport, dport uint16) bool {
	t.Helper()
	return canRaw(t, src, dst, 132, []byte{byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport), 1, 2, 3, 4, 0, 0, 0, 0})
}

// canRaw sends payload (plus a random tag) as an IPv4 packet of protocol
// proto from src over a raw socket and reports whether a raw socket in
// dst receives it.
func canRaw(t testing.TB, src, dst *testPod, proto int, payload []byte) bool {
	t.Helper()
	var rfd, sfd int
	if err := inNS(dst.ns, func() (err error) {
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, proto)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	tv := unix.NsecToTimeval(denyWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	if err := inNS(src.ns, func() (err error) {
		sfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, proto)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	tag := randSuffix()[:4] // short: with a nil payload, less than an L4 header
	pkt := append(slices.Clone(payload), tag...)
	if err := unix.Sendto(sfd, pkt, 0, &unix.SockaddrInet4{Addr: dst.ip.As4()}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	deadline := time.Now().Add(denyWait)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(rfd, buf, 0)
		if err != nil {
			return false
		}
		// The IP header comes first; match our tag at the end.
		if n > 20 && string(buf[n-len(tag):n]) == tag {
			return true
		}
	}
	return false
}

// canPing sends an ICMP echo request (ICMPv6 with v6) from src to dst
// over a raw socket and reports whether the echo reply comes back.
func canPing(t testing.TB, src, dst *testPod, v6 bool) bool {
	t.Helper()
	family, proto, request, reply := unix.AF_INET, unix.IPPROTO_ICMP, byte(8), byte(0)
	var to unix.Sockaddr = &unix.SockaddrInet4{Addr: dst.ip.As4()}
	if v6 {
		family, proto, request, reply = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128, 129
		to = &unix.SockaddrInet6{Addr: dst.ip6.As16()}
	}
	var fd int
	if err := inNS(src.ns, func() (err error) {
		fd, err = unix.Socket(family, unix.SOCK_RAW, proto)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(denyWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	id := [2]byte{}
	_, _ = rand.Read(id[:])
	pkt := []byte{request, 0, 0, 0, id[0], id[1], 0, 1, 'b', 'e', 'r', 't', 'h', '!'}
	if !v6 { // the kernel fills in the ICMPv6 checksum, not the ICMP one
		var sum uint32
		for i := 0; i < len(pkt); i += 2 {
			sum += uint32(pkt[i])<<8 | uint32(pkt[i+1])
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		pkt[2], pkt[3] = byte(^sum>>8), byte(^sum)
	}
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	deadline := time.Now().Add(denyWait)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return false
		}
		off := 0 // an IPv4 raw socket hands over the IP header too
		if !v6 {
			off = int(buf[0]&0xf) * 4
		}
		if n >= off+8 && buf[off] == reply && buf[off+4] == id[0] && buf[off+5] == id[1] {
			return true
		}
	}
	return false
}
