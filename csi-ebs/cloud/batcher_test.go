package cloud

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBatcherMergesConcurrentGets(t *testing.T) {
	var calls, keys atomic.Int32
	b := newBatcher(20*time.Millisecond, 500, func(_ context.Context, ks []string) (map[string]int, error) {
		calls.Add(1)
		keys.Add(int32(len(ks)))
		out := map[string]int{}
		for _, k := range ks {
			if k != "missing" {
				out[k] = len(k)
			}
		}
		return out, nil
	})
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("key-%d", i%50) // duplicates share one slot
			v, ok, err := b.get(context.Background(), k)
			if err != nil || !ok || v != len(k) {
				t.Errorf("get %s = %d, %t, %v", k, v, ok, err)
			}
		}()
	}
	wg.Wait()
	if c := calls.Load(); c > 2 {
		t.Errorf("%d fetches for 100 concurrent gets, want 1 (2 if the window split them)", c)
	}
	if k := keys.Load(); k > 100 || k < 50 {
		t.Errorf("%d keys fetched, want 50 distinct", k)
	}
	if _, ok, err := b.get(context.Background(), "missing"); ok || err != nil {
		t.Errorf("missing key: ok=%t err=%v", ok, err)
	}
}

func TestBatcherFullBatchRunsEarly(t *testing.T) {
	var calls atomic.Int32
	b := newBatcher(time.Hour, 3, func(_ context.Context, ks []string) (map[string]bool, error) {
		calls.Add(1)
		out := map[string]bool{}
		for _, k := range ks {
			out[k] = true
		}
		return out, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, k := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, err := b.get(ctx, k); !ok || err != nil {
				t.Errorf("get %s: %t %v", k, ok, err)
			}
		}()
	}
	wg.Wait()
	if calls.Load() != 1 {
		t.Errorf("%d fetches, want 1", calls.Load())
	}
}

func TestBatcherCallerContext(t *testing.T) {
	b := newBatcher(time.Hour, 10, func(context.Context, []string) (map[string]int, error) { return nil, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, _, err := b.get(ctx, "x"); err == nil {
		t.Fatal("want the caller's deadline")
	}
}

func TestClientToken(t *testing.T) {
	a, b := ClientToken("pvc-1", 0), ClientToken("pvc-1", 0)
	if a != b || len(a) != 64 {
		t.Fatalf("token %q/%q", a, b)
	}
	if g := ClientToken("pvc-1", 1); g == a || len(g) > 64 {
		t.Fatalf("generation token %q", g)
	}
	if ClientToken("pvc-2", 0) == a {
		t.Fatal("names collide")
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{"vol-0123456789abcdef0": true, "vol-12345678": true, "fake-vol-id": false,
		"vol-": false, "vol-XYZ12345": false, "snap-0123456789abcdef0": false} {
		if got := validID("vol", id); got != want {
			t.Errorf("validID(vol, %q) = %t", id, got)
		}
	}
}
