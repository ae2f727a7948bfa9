package datastore

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAssignSync is ipamd's per-ADD bookkeeping: assign, then a
// durable checkpoint of 100 allocations.
func BenchmarkAssignSync(b *testing.B) {
	s := New(time.Millisecond, nil)
	s.AddENI(ENI{ID: "eni-1"})
	for i := 0; i < 16; i++ {
		_ = s.AddCIDR("eni-1", netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/28", i)))
	}
	for i := 0; i < 100; i++ {
		_, _ = s.Assign(Key{"aws-cni", fmt.Sprintf("held-%d", i), "eth0"}, Meta{PodNamespace: "ns", PodName: fmt.Sprintf("p%d", i)})
	}
	cp := NewCheckpointer(filepath.Join(b.TempDir(), "ipam.json"), s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := Key{"aws-cni", "bench", "eth0"}
		if _, err := s.Assign(k, Meta{}); err != nil {
			b.Fatal(err)
		}
		if err := cp.Sync(context.Background()); err != nil {
			b.Fatal(err)
		}
		s.Release(k)
	}
}
