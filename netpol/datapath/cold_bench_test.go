package datapath

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkProgramCold runs the ingress program once per iteration after
// the CPU caches and TLB have been churned by touching a buffer larger
// than the last-level cache: the state real traffic finds it in, where
// each cache line and page the fast path touches costs a memory access
// (BenchmarkProgram's hot loop hides that). Reports the median of the
// kernel's own timing of the single runs.
func BenchmarkProgramCold(b *testing.B) {
	d, pod, peer := testRunSetup(b)
	const syn, ack = 0x02, 0x10
	var churnMB int
	pol := manyRules(100000, peer, pod)
	if err := d.Apply(lo, Policy{Ingress: pol.Ingress}); err != nil {
		b.Fatal(err)
	}
	churn := make([]byte, 64<<20)
	// frame(i) is the i-th packet to run.
	cold := func(b *testing.B, frame func(i int) []byte) {
		churn := churn[:churnMB<<20]
		var per []time.Duration
		for i := 0; i < b.N; i++ {
			f := frame(i)
			for j := 0; j < len(churn); j += 64 {
				churn[j]++
			}
			_, d1, err := d.objs.NetpolIngress.Benchmark(f, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			per = append(per, d1)
		}
		slices.Sort(per)
		b.ReportMetric(float64(per[len(per)/2].Nanoseconds()), "ns/pkt-p50")
		b.ReportMetric(0, "ns/op")
	}
	for _, churnMB = range []int{1, 4} {
		b.Run(fmt.Sprintf("established/churn=%dMB", churnMB), func(b *testing.B) {
			if ret, _, err := d.objs.NetpolIngress.Test(tcpFrame(peer, pod, 2000, 8080, syn)); err != nil || int32(ret) != -1 {
				b.Fatalf("syn: %d %v", ret, err)
			}
			f := tcpFrame(peer, pod, 2000, 8080, ack)
			cold(b, func(int) []byte { return f })
		})
		b.Run(fmt.Sprintf("reply/churn=%dMB", churnMB), func(b *testing.B) {
			if ret, _, err := d.objs.NetpolEgress.Test(tcpFrame(pod, peer, 3000, 8080, syn)); err != nil || int32(ret) != -1 {
				b.Fatalf("syn: %d %v", ret, err)
			}
			f := tcpFrame(peer, pod, 8080, 3000, ack)
			cold(b, func(int) []byte { return f })
		})
		// A SYN of a new connection each run: judged by the rules (one
		// LPM walk through the 100,000 addresses) and tracked (an LRU
		// insert), what every connection costs once per isolated hook.
		b.Run(fmt.Sprintf("new-flow/churn=%dMB", churnMB), func(b *testing.B) {
			cold(b, func(i int) []byte { return tcpFrame(peer, pod, uint16(10000+i%50000), 8080, syn) })
		})
	}
}
