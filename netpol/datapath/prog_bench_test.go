package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/berth-io/berth/internal/testenv"
)

// lo is the ifindex BPF_PROG_TEST_RUN packets carry: the loopback device.
const lo = 1

// testRunSetup opens a datapath for BPF_PROG_TEST_RUN benchmarks and
// returns it with the pod's and a peer's address.
func testRunSetup(b *testing.B) (d *Datapath, pod, peer netip.Addr) {
	testenv.RequireRoot(b, "bpf programs")
	tn := &testNet{pin: pinDir(b)}
	return tn.open(b), netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("10.99.0.1")
}

// tcpFrame is an Ethernet + IPv4 + TCP frame with the given flags.
func tcpFrame(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	f := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return f
}

// BenchmarkProgram runs the ingress program on crafted frames with
// BPF_PROG_TEST_RUN (the kernel runs it in a loop and times it), for the
// per-packet cost of each path without the noise of real traffic. Test
// runs see the loopback device, so the state is written for ifindex 1.
func BenchmarkProgram(b *testing.B) {
	d, pod, peer := testRunSetup(b)
	stranger := netip.MustParseAddr("192.0.2.1")
	const syn, ack = 0x02, 0x10

	run := func(b *testing.B, frame []byte) {
		ret, per, err := d.objs.NetpolIngress.Benchmark(frame, b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
		b.ReportMetric(float64(int32(ret)), "verdict")
	}
	for _, n := range []int{1, 1000, 100000} {
		// n single-CIDR rules (one merged set), the peer among them.
		pol := manyRules(n, peer, pod)
		if err := d.Apply(lo, Policy{Ingress: pol.Ingress}); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("allowed-untracked/cidrs=%d", n), func(b *testing.B) {
			// A mid-stream segment creates no conntrack entry, so every
			// run is judged by the rules like a new flow.
			run(b, tcpFrame(peer, pod, 1000, 8080, ack))
		})
		b.Run(fmt.Sprintf("denied/cidrs=%d", n), func(b *testing.B) {
			run(b, tcpFrame(stranger, pod, 1000, 8080, syn))
		})
		b.Run(fmt.Sprintf("established/cidrs=%d", n), func(b *testing.B) {
			if ret, _, err := d.objs.NetpolIngress.Test(tcpFrame(peer, pod, 2000, 8080, syn)); err != nil || int32(ret) != -1 {
				b.Fatalf("syn: %d %v", ret, err)
			}
			run(b, tcpFrame(peer, pod, 2000, 8080, ack))
		})
		b.Run(fmt.Sprintf("reply/cidrs=%d", n), func(b *testing.B) {
			// The pod opened the flow (egress is open): the reply finds
			// the entry under the reversed tuple.
			if ret, _, err := d.objs.NetpolEgress.Test(tcpFrame(pod, peer, 3000, 80, syn)); err != nil || int32(ret) != -1 {
				b.Fatalf("syn: %d %v", ret, err)
			}
			run(b, tcpFrame(peer, pod, 80, 3000, ack))
		})
	}
	// Rules with Excepts still share one set when their ports match.
	for _, n := range []int{10, 1000} {
		var rules []Rule
		for i := range n {
			rules = append(rules, Rule{ID: uint32(i + 1), CIDRs: []netip.Prefix{pfx("172.16.0.0/12")},
				Except: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 32)}})
		}
		if err := d.Apply(lo, ingressOnly(rules...)); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("denied/except-rules=%d", n), func(b *testing.B) {
			run(b, tcpFrame(stranger, pod, 1000, 8080, syn))
		})
	}
	// The rule loop: one rule per distinct port set, the packet's last.
	for _, n := range []int{10, 1000} {
		var rules []Rule
		for i := range n {
			rules = append(rules, Rule{ID: uint32(i + 1), AnyPeer: true, Ports: []PortRange{{Protocol: ProtoTCP, Start: uint16(10000 + i)}}})
		}
		rules = append(rules, Rule{ID: uint32(n + 1), AnyPeer: true, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}})
		if err := d.Apply(lo, ingressOnly(rules...)); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("allowed-untracked/port-sets=%d", n+1), func(b *testing.B) {
			run(b, tcpFrame(peer, pod, 1000, 8080, ack))
		})
	}
}
