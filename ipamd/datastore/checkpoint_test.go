package datastore

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

const goodEntry = `{"networkName":"aws-cni","containerID":"c4","ifName":"eth0","ipv4":"10.0.0.4","allocationTimestamp":1,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"p4"}}`

// A checkpoint that cannot be decoded is ErrCorruptCheckpoint, which the
// caller recovers from, rather than an error that stops ipamd.
func TestLoadCheckpointCorrupt(t *testing.T) {
	for name, body := range map[string]string{
		"empty":     ``,
		"truncated": `{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","contai`,
		"version":   `{"version":"vpc-cni-ipam/9","allocations":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadCheckpoint(path, discard()); !errors.Is(err, ErrCorruptCheckpoint) {
				t.Fatalf("LoadCheckpoint = %v, want ErrCorruptCheckpoint", err)
			}
		})
	}
}

// The VPC CNI skips entries without an IPv4 address; so does ipamd, keeping
// the others.
func TestLoadCheckpointSkipsEntriesWithoutIPv4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	body := `{"version":"vpc-cni-ipam/1","allocations":[` +
		`{"networkName":"aws-cni","containerID":"c6","ifName":"eth0","ipv6":"2001:db8::1","allocationTimestamp":1},` +
		`{"networkName":"aws-cni","containerID":"c7","ifName":"eth0","ipv4":"2001:db8::2","allocationTimestamp":1},` +
		`{"networkName":"aws-cni","containerID":"c8","ifName":"eth0","ipv4":"bogus","allocationTimestamp":1},` +
		goodEntry + `]}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCheckpoint(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key.ContainerID != "c4" || got[0].IP != netip.MustParseAddr("10.0.0.4") || got[0].Meta.PodName != "p4" {
		t.Fatalf("LoadCheckpoint = %+v, want only c4", got)
	}
}

func TestMoveAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	to, err := MoveAside(path, time.Unix(1000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := path + ".corrupt-1000"; to != want {
		t.Fatalf("moved to %s, want %s", to, want)
	}
	if b, err := os.ReadFile(to); err != nil || string(b) != "{" {
		t.Fatalf("moved file: %q %v", b, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("checkpoint still there: %v", err)
	}
}

// A crash between CreateTemp and Rename leaves a temp file per crash; they
// go at start-up, the checkpoint and other files stay.
func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	for _, n := range []string{".ipam.json.tmp-123", ".ipam.json.tmp-456", "ipam.json", "other.json", ".other.tmp-1"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTemps(path); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if got := strings.Join(left, " "); got != ".other.tmp-1 ipam.json other.json" {
		t.Fatalf("left %s", got)
	}
	// write's temp files match what RemoveTemps removes.
	s, _ := newStore(t)
	if m, _ := filepath.Match(tempPattern(path), ".ipam.json.tmp-789"); !m {
		t.Fatal("temp pattern does not match write's names")
	}
	if err := NewCheckpointer(path, s).Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A held allocation stays in the checkpoint until its address joins the
// store; then it is reserved in the same step, never handed out.
func TestHeldAllocationReservedWhenItsCIDRIsAdded(t *testing.T) {
	for _, cidr := range []string{"10.0.2.5/32", "10.0.2.0/28"} {
		t.Run(cidr, func(t *testing.T) {
			s, _ := newStore(t)
			path := filepath.Join(t.TempDir(), "ipam.json")
			cp := NewCheckpointer(path, s)
			live := Allocation{Key: Key{"aws-cni", "live", "eth0"}, IP: netip.MustParseAddr("10.0.2.5"), Meta: Meta{PodNamespace: "ns", PodName: "live"}}
			cp.Held().Add(live)
			if err := cp.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got, err := ReadCheckpoint(path); err != nil || len(got) != 1 || got[0].Key != live.Key {
				t.Fatalf("checkpoint with a held allocation: %+v %v", got, err)
			}
			// An ADD of the held attachment (a runtime's ADD without DEL)
			// gets no second address: the held one would be left free in
			// the pool once EC2 lists it.
			if a, err := s.Assign(live.Key, Meta{}); !errors.Is(err, ErrHeld) {
				t.Fatalf("Assign of the held attachment = %+v, %v; want ErrHeld", a, err)
			}
			p := netip.MustParsePrefix(cidr)
			if err := s.AddCIDR("eni-2", p); err != nil {
				t.Fatalf("AddCIDR: %v", err)
			}
			if cp.Held().Len() != 0 {
				t.Fatal("still held after its CIDR joined")
			}
			if a, ok := s.Lookup(live.Key); !ok || a.IP != live.IP || a.ENI != "eni-2" || a.Device != 1 {
				t.Fatalf("Lookup = %+v %v", a, ok)
			}
			// The pool adopting the same CIDR later changes nothing.
			if err := s.AddCIDR("eni-2", p); err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				a, err := s.Assign(key(i), Meta{})
				if errors.Is(err, ErrNoFreeIP) {
					break
				}
				if err != nil || a.IP == live.IP {
					t.Fatalf("Assign = %+v, %v: the held address went to a new pod", a, err)
				}
			}
			if st := s.Stats(); st.Assigned != 1<<(32-p.Bits()) || st.Free != 0 {
				t.Fatalf("stats %+v", st)
			}
			if err := cp.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, _ := ReadCheckpoint(path)
			n := 0
			for _, a := range got {
				if a.Key == live.Key {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("checkpoint has %d entries for the held pod", n)
			}
		})
	}
}

// A Sync waiting behind a write in flight gives up when its context ends:
// a disk that stalls must not hold every ADD and DEL with it. Here the
// write in flight is one that never ends.
func TestSyncWaiterHonoursItsContext(t *testing.T) {
	s := New(time.Second, nil)
	c := NewCheckpointer(filepath.Join(t.TempDir(), "ipam.json"), s)
	c.mu.Lock()
	c.writing = true // another Sync leads a write that is stuck
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Sync(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Sync: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync waited for the stuck write past its context")
	}
}

// A Sync that arrives while another's write is failing gets a write of
// its own: that write began before its change and did not carry it. Before,
// it returned the other's error, so one transient EIO failed every ADD and
// DEL queued behind it.
func TestSyncAfterAFailedWriteItDidNotJoin(t *testing.T) {
	s := New(time.Second, nil)
	c := NewCheckpointer(filepath.Join(t.TempDir(), "ipam.json"), s)
	started, fail := make(chan struct{}), make(chan struct{})
	first := true
	c.writeFile = func() error {
		if first {
			first = false
			close(started)
			<-fail
			return errors.New("EIO")
		}
		return c.write()
	}
	leader := make(chan error, 1)
	go func() { leader <- c.Sync(context.Background()) }()
	<-started
	waiter := make(chan error, 1)
	go func() { waiter <- c.Sync(context.Background()) }()
	// Let the waiter register its request before the write fails.
	for {
		c.mu.Lock()
		n := c.want
		c.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(fail)
	if err := <-leader; err == nil {
		t.Fatal("the failed write's own Sync succeeded")
	}
	if err := <-waiter; err != nil {
		t.Fatalf("the later Sync: %v, want a write of its own", err)
	}
	if _, err := os.Stat(c.path); err != nil {
		t.Fatalf("no checkpoint written for the later Sync: %v", err)
	}
}
