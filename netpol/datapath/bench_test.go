package datapath

import (
	"fmt"
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
// in short slices alternating with it, since absolute rates drift on
// shared machines.
func BenchmarkDatapath(b *testing.B) {
	tn := newTestNet(b, 2)
	client, server := tn.pods[0], tn.pods[1]
	serveTCP(b, server, 8080)
	d := tn.open(b)

	// Each pair of short slices measures no program and the case under
	// test (detached and attached again, the state kept), in alternating
	// order (ABBA: drift within a pair cancels too), and the median of the
	// pairs' ratios is reported: a burst of other load spoils a few pairs,
	// not the result. Many short pairs resolve a few percent where a few
	// long rounds did not.
	const pairs, rrTime, crrTime = 41, 60 * time.Millisecond, 80 * time.Millisecond
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
	// rr and crr are rates; rrCPU and crrCPU the process's CPU time per
	// operation (client, server and the kernel's packet path in their
	// context: netperf's service demand), which other load on the machine
	// hardly disturbs.
	type result struct{ rr, crr, rrNs, crrNs, rrCPU, crrCPU float64 }
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
		r.rrNs = nsPerRun(func() { r.rr, r.rrCPU = rate(b, rrTime, func() error { return roundTrip(conn) }) })
		// The whole loop runs in the client's namespace: sockets are
		// made in the namespace of the thread that creates them.
		if err := inNS(client.ns, func() error {
			t0, n0 := progTime()
			defer func() {
				if t1, n1 := progTime(); n1 > n0 {
					r.crrNs = float64(t1-t0) / float64(n1-n0)
				}
			}()
			r.crr, r.crrCPU = rate(b, crrTime, func() error {
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

	var baseRR, baseCRR []float64
	// compare runs the pairs with set(false) and set(true) and returns
	// each pair's ratios of on to off.
	compare := func(set func(bool)) (rr, crr, rrCPU, crrCPU []float64) {
		for i := range pairs {
			var r [2]result
			for j := range 2 {
				on := (i+j)%2 == 1
				set(on)
				r[btoi(on)] = measure()
			}
			set(false)
			rr, crr = append(rr, r[1].rr/r[0].rr), append(crr, r[1].crr/r[0].crr)
			rrCPU, crrCPU = append(rrCPU, r[0].rrCPU/r[1].rrCPU), append(crrCPU, r[0].crrCPU/r[1].crrCPU)
			baseRR, baseCRR = append(baseRR, r[0].rr), append(baseCRR, r[0].crr)
		}
		return rr, crr, rrCPU, crrCPU
	}

	b.ResetTimer()
	rr, crr, rrCPU, crrCPU := compare(setNoop)
	b.ReportMetric(median(rr), "rr-ratio-noop")
	b.ReportMetric(median(rrCPU), "rr-cpu-ratio-noop")
	b.ReportMetric(median(crrCPU), "crr-cpu-ratio-noop")
	b.ReportMetric(median(crr), "crr-ratio-noop")
	b.Logf("noop: rr ratios %s, crr ratios %s; cpu per op ratios rr %s, crr %s", quartiles(rr), quartiles(crr), quartiles(rrCPU), quartiles(crrCPU))

	cases := []struct {
		name string
		n    int
	}{{"allowall", 0}, {"rules1k", 1000}, {"rules100k", 100000}}
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
		rr, crr, rrCPU, crrCPU := compare(setAttached)
		setAttached(true)
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Fatalf("enable bpf stats: %v", err)
		}
		withStats := measure()
		stats.Close()
		b.ReportMetric(median(rr), "rr-ratio-"+c.name)
		b.ReportMetric(median(crr), "crr-ratio-"+c.name)
		b.ReportMetric(median(rrCPU), "rr-cpu-ratio-"+c.name)
		b.ReportMetric(median(crrCPU), "crr-cpu-ratio-"+c.name)
		b.ReportMetric(withStats.rrNs, "rr-ns/pkt-"+c.name)
		b.ReportMetric(withStats.crrNs, "crr-ns/pkt-"+c.name)
		b.Logf("%s: rr ratios %s, crr ratios %s; cpu per op ratios rr %s, crr %s; program ns/packet rr %.0f crr %.0f",
			c.name, quartiles(rr), quartiles(crr), quartiles(rrCPU), quartiles(crrCPU), withStats.rrNs, withStats.crrNs)
	}
	b.ReportMetric(median(baseRR), "rr/s-noprog")
	b.ReportMetric(median(baseCRR), "crr/s-noprog")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// quartiles formats the first quartile, median and third quartile.
func quartiles(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	return fmt.Sprintf("q1 %.3f median %.3f q3 %.3f (%d pairs)", s[n/4], s[n/2], s[3*n/4], n)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// rate runs op for d and returns operations per second and the
// process's CPU time (user and system, all threads) per operation.
func rate(b *testing.B, d time.Duration, op func() error) (perSec, cpuPerOp float64) {
	b.Helper()
	n := 0
	cpu0 := cpuTime(b)
	start := time.Now()
	for time.Since(start) < d {
		if err := op(); err != nil {
			b.Fatalf("after %d operations: %v", n, err)
		}
		n++
	}
	perSec = float64(n) / time.Since(start).Seconds()
	return perSec, (cpuTime(b) - cpu0).Seconds() / float64(n)
}

// cpuTime is the process's CPU time: the kernel reports the precise sum
// of its threads' run time, which includes the softirq packet processing
// done in their context.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
