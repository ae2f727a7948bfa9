package datapath

import (
	"fmt"
	"net/netip"
	"testing"

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
