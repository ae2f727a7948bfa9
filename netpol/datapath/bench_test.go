package datapath

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkDatapath measures pod-to-pod TCP over real veths, both pods
// enforced: request/response on one connection (RR) and
// connect/request/close (CRR, every connection a new flow judged by the
// rules), with no program, with allow-all, and with egress and ingress
// each isolated to 1,000 or 100,000 single-CIDR rules, the matching one
// last. Reported as ratios to no program measured in the same run,
// alternating with it, since absolute rates drift on shared machines.
func BenchmarkDatapath(b *testing.B) {
	tn := newTestNet(b, 2)
	client, server := tn.pods[0], tn.pods[1]
	serveTCP(b, server, 8080)
	d := tn.open(b)

	// Rounds alternate no program and the case under test (detached and
	// attached again, the state kept), and the median of the rounds'
	// ratios is reported: the machine's drift cancels out.
	const rounds, rrTime, crrTime = 11, 200 * time.Millisecond, 150 * time.Millisecond
	// Kernel run-time stats of the programs (enabled only for a last
	// measurement per case: they cost two clock reads a run): ns per
	// packet is exact where the rates are noisy.
	progTime := func() (time.Duration, uint64) {
		var rt time.Duration
		var n uint64
		for _, p := range []*ebpf.Program{d.objs.NetpolIngress, d.objs.NetpolEgress} {
			st, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			rt += st.Runtime
			n += st.RunCount
		}
		return rt, n
	}
	type result struct{ rr, crr, rrNs, crrNs float64 }
	nsPerRun := func(f func()) float64 {
		t0, n0 := progTime()
		f()
		t1, n1 := progTime()
		if n1 == n0 {
			return 0
		}
		return float64(t1-t0) / float64(n1-n0)
	}
	measure := func() result {
		conn, err := dial(client.ns, server.ip, 8080)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		var r result
		r.rrNs = nsPerRun(func() { r.rr = rate(b, rrTime, func() error { return roundTrip(conn) }) })
		// The whole loop runs in the client's namespace: sockets are
		// made in the namespace of the thread that creates them.
		if err := inNS(client.ns, func() error {
			t0, n0 := progTime()
			defer func() {
				if t1, n1 := progTime(); n1 > n0 {
					r.crrNs = float64(t1-t0) / float64(n1-n0)
				}
			}()
			r.crr = rate(b, crrTime, func() error {
				c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(server.ip, 8080).String(), denyWait)
				if err != nil {
					return err
				}
				// RST instead of TIME_WAIT: thousands of connections
				// a second would exhaust the ephemeral ports.
				_ = c.(*net.TCPConn).SetLinger(0)
				defer c.Close()
				return roundTrip(c)
			})
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		return r
	}
	setAttached := func(on bool) {
		for _, p := range tn.pods {
			if on {
				tn.attach(b, d, p)
			} else if err := d.detach(p.ifindex); err != nil {
				b.Fatal(err)
			}
		}
	}

	// The floor of any TCX policy: a program that only returns "next",
	// on the same four hooks.
	noop, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer noop.Close()
	var noopLinks []link.Link
	setNoop := func(on bool) {
		if !on {
			for _, l := range noopLinks {
				_ = l.Close()
			}
			noopLinks = nil
			return
		}
		for _, p := range tn.pods {
			for _, h := range hooks {
				if err := inNS(tn.host, func() error {
					l, err := link.AttachTCX(link.TCXOptions{Interface: p.ifindex, Program: noop, Attach: h.attach})
					noopLinks = append(noopLinks, l)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	defer setNoop(false)

	b.ResetTimer()
	var rr, crr []float64
	for range rounds {
		ref := measure()
		setNoop(true)
		r := measure()
		setNoop(false)
		rr, crr = append(rr, r.rr/ref.rr), append(crr, r.crr/ref.crr)
	}
	b.ReportMetric(median(rr), "rr-ratio-noop")
	b.ReportMetric(median(crr), "crr-ratio-noop")
	b.Logf("noop: rr ratios %.3f, crr ratios %.3f", rr, crr)

	cases := []struct {
		name string
		n    int
	}{{"allowall", 0}, {"rules1k", 1000}, {"rules100k", 100000}}
	var baseRR, baseCRR []float64
	for _, c := range cases {
		for _, p := range tn.pods {
			pol := AllowAll
			if c.n > 0 {
				pol = manyRules(c.n, client.ip, server.ip)
			}
			start := time.Now()
			if err := d.Apply(p.ifindex, pol); err != nil {
				b.Fatal(err)
			}
			b.Logf("%s: Apply took %v", c.name, time.Since(start).Round(time.Millisecond))
		}
		rr, crr = nil, nil
		for range rounds {
			setAttached(false)
			ref := measure()
			setAttached(true)
			r := measure()
			rr, crr = append(rr, r.rr/ref.rr), append(crr, r.crr/ref.crr)
			baseRR, baseCRR = append(baseRR, ref.rr), append(baseCRR, ref.crr)
		}
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Fatalf("enable bpf stats: %v", err)
		}
		withStats := measure()
		stats.Close()
		b.ReportMetric(median(rr), "rr-ratio-"+c.name)
		b.ReportMetric(median(crr), "crr-ratio-"+c.name)
		b.ReportMetric(withStats.rrNs, "rr-ns/pkt-"+c.name)
		b.ReportMetric(withStats.crrNs, "crr-ns/pkt-"+c.name)
		b.Logf("%s: rr ratios %.3f, crr ratios %.3f; program ns/packet rr %.0f crr %.0f", c.name, rr, crr, withStats.rrNs, withStats.crrNs)
	}
	b.ReportMetric(median(baseRR), "rr/s-noprog")
	b.ReportMetric(median(baseCRR), "crr/s-noprog")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// rate runs op for d and returns operations per second.
func rate(b *testing.B, d time.Duration, op func() error) float64 {
	b.Helper()
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if err := op(); err != nil {
			b.Fatalf("after %d operations: %v", n, err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// manyRules isolates both directions, each to n rules of one /32 and
// TCP 8080, the pod pair's addresses in the last rule.
func manyRules(n int, client, server netip.Addr) Policy {
	var in, out []Rule
	for i := range n - 1 {
		ip := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
		r := Rule{ID: uint32(i + 1), CIDRs: []netip.Prefix{netip.PrefixFrom(ip, 32)}, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}}
		in, out = append(in, r), append(out, r)
	}
	port := []PortRange{{Protocol: ProtoTCP, Start: 8080}}
	in = append(in, Rule{ID: uint32(n), CIDRs: []netip.Prefix{netip.PrefixFrom(client, 32)}, Ports: port})
	out = append(out, Rule{ID: uint32(n), CIDRs: []netip.Prefix{netip.PrefixFrom(server, 32)}, Ports: port})
	return Policy{Ingress: Direction{Isolated: true, Rules: in}, Egress: Direction{Isolated: true, Rules: out}}
}
