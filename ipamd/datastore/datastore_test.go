package datastore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	c := &clock{t: time.Unix(1000, 0)}
	s := New(30*time.Second, c.now)
	s.AddENI(ENI{ID: "eni-1", DeviceIndex: 0, IsPrimary: true})
	s.AddENI(ENI{ID: "eni-2", DeviceIndex: 1})
	return s, c
}

func key(i int) Key { return Key{"aws-cni", fmt.Sprintf("c%d", i), "eth0"} }

func TestAssignReleaseCooldown(t *testing.T) {
	s, clk := newStore(t)
	if err := s.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.5/32")); err != nil {
		t.Fatal(err)
	}
	a, err := s.Assign(key(1), Meta{PodName: "p1"})
	if err != nil || a.IP != netip.MustParseAddr("10.0.0.5") || a.ENI != "eni-1" {
		t.Fatalf("assign: %+v %v", a, err)
	}
	again, err := s.Assign(key(1), Meta{})
	if err != nil || again.IP != a.IP {
		t.Fatalf("a retried ADD must get the same IP: %+v %v", again, err)
	}
	if _, err := s.Assign(key(2), Meta{}); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("dry pool: %v", err)
	}
	if _, ok := s.Release(key(1)); !ok {
		t.Fatal("release")
	}
	if _, ok := s.Release(key(1)); ok {
		t.Fatal("double release reported ok")
	}
	if _, err := s.Assign(key(2), Meta{}); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("address reused during its cooldown: %v", err)
	}
	clk.add(31 * time.Second)
	if b, err := s.Assign(key(2), Meta{}); err != nil || b.IP != a.IP {
		t.Fatalf("after cooldown: %+v %v", b, err)
	}
}

func TestFreshBeforeCooling(t *testing.T) {
	s, _ := newStore(t)
	_ = s.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.5/32"))
	a, _ := s.Assign(key(1), Meta{})
	s.Release(key(1))
	// A fresh prefix arrives while .5 cools: it is used, not blocked behind .5.
	if err := s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.16/28")); err != nil {
		t.Fatal(err)
	}
	b, err := s.Assign(key(2), Meta{})
	if err != nil || b.IP == a.IP || b.ENI != "eni-2" || b.Device != 1 {
		t.Fatalf("assign: %+v %v", b, err)
	}
	st := s.Stats()
	if st.Total != 17 || st.Assigned != 1 || st.Cooling != 1 || st.Prefixes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRemoveCIDRInUse(t *testing.T) {
	s, clk := newStore(t)
	p := netip.MustParsePrefix("10.0.1.16/28")
	_ = s.AddCIDR("eni-2", p)
	_, _ = s.Assign(key(1), Meta{})
	if err := s.RemoveCIDR("eni-2", p); !errors.Is(err, ErrCIDRInUse) {
		t.Fatalf("remove in use: %v", err)
	}
	s.Release(key(1))
	// The freed address cools: giving it back to EC2 now would let another
	// node's pod receive the old pod's late packets.
	if err := s.RemoveCIDR("eni-2", p); !errors.Is(err, ErrCIDRInUse) {
		t.Fatalf("remove while an address cools: %v", err)
	}
	clk.add(31 * time.Second)
	if err := s.RemoveCIDR("eni-2", p); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Total != 0 || st.Free != 0 {
		t.Fatalf("stats after remove %+v", st)
	}
	if _, err := s.Assign(key(2), Meta{}); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("removed addresses still handed out: %v", err)
	}
}

func TestConcurrentAssignNeverDuplicates(t *testing.T) {
	s, _ := newStore(t)
	for i := 0; i < 8; i++ {
		_ = s.AddCIDR("eni-2", netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/28", i)))
	}
	var mu sync.Mutex
	seen := map[netip.Addr]Key{}
	var wg sync.WaitGroup
	for i := 0; i < 128; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a, err := s.Assign(key(i), Meta{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := seen[a.IP]; dup {
				t.Errorf("%s given to %s and %s", a.IP, other, a.Key)
			}
			seen[a.IP] = a.Key
		}(i)
	}
	wg.Wait()
	if _, err := s.Assign(key(999), Meta{}); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("129th assign: %v", err)
	}
}

func TestCheckpointRoundTripAndGroupCommit(t *testing.T) {
	s, _ := newStore(t)
	_ = s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.16/28"))
	path := filepath.Join(t.TempDir(), "ipam.json")
	cp := NewCheckpointer(path, s)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Assign(key(i), Meta{PodNamespace: "ns", PodName: fmt.Sprintf("p%d", i), InterfacesCount: 1}); err != nil {
				t.Error(err)
			}
			if err := cp.Sync(context.Background()); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if w := cp.Writes(); w >= 16 || w < 1 {
		t.Logf("writes: %d (group commit shares writes under contention)", w)
	}
	got, err := ReadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16 {
		t.Fatalf("checkpoint has %d allocations", len(got))
	}
	// Restore into a fresh store with the same ENIs.
	s2, _ := newStore(t)
	_ = s2.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.16/28"))
	for _, a := range got {
		if err := s2.Restore(a); err != nil {
			t.Fatal(err)
		}
	}
	if st := s2.Stats(); st.Assigned != 16 || st.Free != 0 {
		t.Fatalf("restored stats %+v", st)
	}
	if err := s2.Restore(Allocation{Key: key(77), IP: got[0].IP}); err == nil {
		t.Fatal("restoring an address held by another key succeeded")
	}
}

func TestCheckpointFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	s, _ := newStore(t)
	_ = s.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.9/32"))
	_, _ = s.Assign(Key{"aws-cni", "abc", "eth0"}, Meta{PodNamespace: "default", PodName: "web", InterfacesCount: 1})
	if err := NewCheckpointer(path, s).Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := `{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"abc","ifName":"eth0","ipv4":"10.0.0.9","allocationTimestamp":1000000000000,"metadata":{"k8sPodNamespace":"default","k8sPodName":"web","interfacesCount":1}}]}`
	if string(b) != want {
		t.Fatalf("checkpoint\n got %s\nwant %s", b, want)
	}
}

// Changed also fires when a freed address ends its cooldown, so a waiter
// for an address learns of it without polling.
func TestChangedFiresWhenACooldownEnds(t *testing.T) {
	s, k := oneAddressAssigned(t)
	s.Release(k)
	ch := s.Changed()
	if _, err := s.Assign(Key{NetworkName: "n", ContainerID: "b", IfName: "eth0"}, Meta{}); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("a cooling address was handed out: %v", err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the end of the cooldown woke nobody")
	}
	if _, err := s.Assign(Key{NetworkName: "n", ContainerID: "b", IfName: "eth0"}, Meta{}); err != nil {
		t.Fatal(err)
	}
}

// A waiter that subscribed before the release is woken too.
func TestChangedFiresForACooldownThatStartedLater(t *testing.T) {
	s, k := oneAddressAssigned(t)
	ch := s.Changed() // the pool is dry: an ADD waits
	s.Release(k)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the end of a cooldown that began after the wait woke nobody")
	}
}

// DropCIDR is for addresses EC2 no longer gives the node: it keeps one a
// pod holds, but not one that is merely cooling.
func TestDropCIDR(t *testing.T) {
	s, _ := newStore(t)
	_ = s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.1/32"))
	_ = s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.2/32"))
	held, _ := s.Assign(key(1), Meta{})
	cooling, _ := s.Assign(key(2), Meta{})
	s.Release(key(2))
	if err := s.DropCIDR("eni-2", netip.PrefixFrom(held.IP, 32)); !errors.Is(err, ErrCIDRInUse) {
		t.Fatalf("drop an address a pod holds: %v", err)
	}
	if err := s.DropCIDR("eni-2", netip.PrefixFrom(cooling.IP, 32)); err != nil {
		t.Fatalf("drop a cooling address EC2 took back: %v", err)
	}
	if st := s.Stats(); st.Total != 1 || st.Assigned != 1 || st.Cooling != 0 {
		t.Fatalf("stats after drop %+v", st)
	}
}

// RemoveENI takes all of an ENI's addresses or none: while a pod holds or
// a freed address cools on it, every address stays usable in the pool.
func TestRemoveENIAllOrNothing(t *testing.T) {
	s, clk := newStore(t)
	_ = s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.1/32"))
	_ = s.AddCIDR("eni-2", netip.MustParsePrefix("10.0.1.2/32"))
	if _, err := s.Assign(key(1), Meta{}); err != nil { // takes .2, the newest
		t.Fatal(err)
	}
	if err := s.RemoveENI("eni-2"); !errors.Is(err, ErrCIDRInUse) {
		t.Fatalf("remove an ENI a pod uses: %v", err)
	}
	if st := s.Stats(); st.Total != 2 || st.Free != 1 || len(s.CIDRs("eni-2")) != 2 {
		t.Fatalf("a refused RemoveENI took addresses: %+v %v", st, s.CIDRs("eni-2"))
	}
	s.Release(key(1))
	if err := s.RemoveENI("eni-2"); !errors.Is(err, ErrCIDRInUse) {
		t.Fatalf("remove an ENI with a cooling address: %v", err)
	}
	clk.add(31 * time.Second)
	if err := s.RemoveENI("eni-2"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Total != 0 || st.Free != 0 || st.ENIs != 1 {
		t.Fatalf("stats after remove %+v", st)
	}
}

// An ENI added to while RemoveENI runs (reconcile adopting what EC2 lists)
// loses the new address with it or refuses it: no address may outlive its
// ENI, free forever and never addable again.
func TestRemoveENIRacingAddCIDR(t *testing.T) {
	extra := netip.MustParsePrefix("10.0.0.1/32") // sorts first: removed first
	for run := 0; run < 5; run++ {
		s, _ := newStore(t)
		// Many prefixes: a RemoveENI long enough for the adder to run
		// inside it, were it not one lock hold.
		for j := 0; j < 1024; j++ {
			_ = s.AddCIDR("eni-2", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(j >> 4), byte(j << 4)}), 28))
		}
		var removed atomic.Bool
		adding := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			// Adopt the extra address again and again until RemoveENI is done.
			for n := 0; !removed.Load(); n++ {
				_ = s.AddCIDR("eni-2", extra)
				if n == 0 {
					close(adding)
				}
			}
		})
		<-adding
		if err := s.RemoveENI("eni-2"); err != nil {
			t.Error(err)
		}
		removed.Store(true)
		wg.Wait()
		onENIs := 0
		for _, e := range s.ENIs() {
			for _, c := range s.CIDRs(e.ID) {
				onENIs += 1 << (32 - c.Prefix.Bits())
			}
		}
		if st := s.Stats(); st.Total != onENIs {
			t.Fatalf("run %d: %d addresses in the pool, %d of them on a known ENI", run, st.Total, onENIs)
		}
		if err := s.AddCIDR("eni-1", extra); err != nil {
			t.Fatalf("run %d: add %s after its ENI went: %v", run, extra, err)
		}
	}
}

// oneAddressAssigned is a store (50 ms cooldown) whose only address is
// assigned to the returned key.
func oneAddressAssigned(t *testing.T) (*Store, Key) {
	t.Helper()
	s := New(50*time.Millisecond, nil)
	s.AddENI(ENI{ID: "eni-1"})
	if err := s.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.1/32")); err != nil {
		t.Fatal(err)
	}
	k := Key{NetworkName: "n", ContainerID: "a", IfName: "eth0"}
	if _, err := s.Assign(k, Meta{}); err != nil {
		t.Fatal(err)
	}
	return s, k
}

// A waiter is woken when the earliest cooling address becomes usable,
// also when the store's timer was armed for a later one (a release after
// an earlier timer fired). Before, it slept until the later end, and an
// ADD waiting its 30 s could time out with an address usable meanwhile.
func TestWaiterWokenAtTheEarliestCoolingEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(30*time.Second, nil)
		s.AddENI(ENI{ID: "eni-1"})
		if err := s.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.0/30")); err != nil {
			t.Fatal(err)
		}
		key := func(i int) Key { return Key{NetworkName: "n", ContainerID: fmt.Sprint(i), IfName: "eth0"} }
		for i := range 4 {
			if _, err := s.Assign(key(i), Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		s.Release(key(0)) // t0: usable at t0+30, the timer's end
		time.Sleep(10 * time.Second)
		s.Release(key(1)) // usable at t0+40
		time.Sleep(25 * time.Second)
		if _, err := s.Assign(key(4), Meta{}); err != nil { // t0+35: key(0)'s
			t.Fatal(err)
		}
		s.Release(key(2)) // a new timer, for t0+65
		time.Sleep(time.Second)
		start := time.Now()
		changed := s.Changed()
		if _, err := s.Assign(key(5), Meta{}); !errors.Is(err, ErrNoFreeIP) {
			t.Fatalf("t0+36: %v, want no free address yet", err)
		}
		<-changed
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("woken %s after t0+36, want at t0+40 (4 s)", d)
		}
		if _, err := s.Assign(key(5), Meta{}); err != nil {
			t.Fatalf("after the wake: %v", err)
		}
	})
}
