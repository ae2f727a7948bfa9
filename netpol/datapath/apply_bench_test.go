package datapath

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-io/berth/internal/testenv"
)

// BenchmarkApply measures replacing a pod's policy of n single-CIDR rules
// with another of the same size (write new sets and rules, swap, wait for
// running programs, delete the old ones).
func BenchmarkApply(b *testing.B) {
	testenv.RequireRoot(b, "bpf maps")
	tn := &testNet{pin: pinDir(b)}
	d := tn.open(b)
	client, server := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
	for _, n := range []int{10, 1000, 100000} {
		pol := manyRules(n, client, server)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := d.Apply(1, pol); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPeerAppears: 1,000 pods (map state only, no veths) selected by
// one policy whose rule lists 1,000 peers; a peer appears and every pod is
// re-applied, as the agent does, then the peer leaves. Shared rules (the
// agent's) against the same rules unshared (a set per pod, rewritten by
// each Apply). Reports the wall time of re-applying all pods and the map
// writes it took.
func BenchmarkPeerAppears(b *testing.B) {
	testenv.RequireRoot(b, "bpf maps")
	const pods, peers = 1000, 1000
	for _, shared := range []bool{true, false} {
		b.Run(fmt.Sprintf("pods=%d/peers=%d/shared=%v", pods, peers, shared), func(b *testing.B) {
			tn := &testNet{pin: pinDir(b)}
			d := tn.open(b)
			policy := func(n int) Policy {
				r := Rule{ID: 7, Shared: shared, Ports: []PortRange{{Protocol: ProtoTCP, Start: 8080}}}
				for i := range n {
					r.CIDRs = append(r.CIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i / 250), byte(i%250 + 1)}), 32))
				}
				return ingressOnly(r)
			}
			applyAll := func(p Policy) time.Duration {
				start := time.Now()
				for i := range pods {
					if err := d.Apply(i+1, p); err != nil {
						b.Fatal(err)
					}
				}
				return time.Since(start)
			}
			applyAll(policy(peers))
			var appear, leave time.Duration
			var sa, sl Stats
			for b.Loop() {
				s0 := d.Stats()
				appear += applyAll(policy(peers + 1))
				s1 := d.Stats()
				leave += applyAll(policy(peers))
				s2 := d.Stats()
				sa, sl = statsDelta(s0, s1), statsDelta(s1, s2)
			}
			n := float64(b.N)
			b.ReportMetric(appear.Seconds()/n*1000, "appear-ms")
			b.ReportMetric(float64(sa.PeerWrites+sa.PeerDeletes), "appear-peer-writes")
			b.ReportMetric(float64(sa.RulesetSwaps), "appear-swaps")
			b.ReportMetric(leave.Seconds()/n*1000, "leave-ms")
			b.ReportMetric(float64(sl.PeerWrites+sl.PeerDeletes), "leave-peer-writes")
			b.ReportMetric(float64(sl.RulesetSwaps), "leave-swaps")
			b.ReportMetric(float64(countEntriesB(b, d)), "peer-entries")
			for i := range pods {
				if err := d.Remove(i + 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func countEntriesB(b *testing.B, d *Datapath) int {
	n := 0
	var k netpolPeerKey
	var v netpolPeerVal
	it := d.objs.PeerSets.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}
