package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/proto/datapath"
	"github.com/berth-io/berth/proto/rpc"
)

// testPool grows the datastore on demand after a delay, or reports a
// reason; a unit-test stand-in for the pool manager.
type testPool struct {
	mu      sync.Mutex
	ds      *datastore.Store
	next    int
	reason  error
	changed chan struct{}
	growIn  time.Duration
	waits   int
}

func (p *testPool) Wait() func() {
	p.mu.Lock()
	p.waits++
	p.mu.Unlock()
	p.Kick()
	return func() {}
}

func (p *testPool) Kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reason != nil || p.growIn < 0 {
		return
	}
	p.next++
	ip := netip.AddrFrom4([4]byte{10, 0, 2, byte(p.next)})
	time.AfterFunc(p.growIn, func() { _ = p.ds.AddCIDR("eni-1", netip.PrefixFrom(ip, 32)) })
}

func (p *testPool) Blocked() (error, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason, p.changed
}

func start(t *testing.T, pool *testPool, ds *datastore.Store, wait time.Duration, setup ...func(*Server)) rpc.CNIBackendClient {
	t.Helper()
	cp := datastore.NewCheckpointer(filepath.Join(t.TempDir(), "ipam.json"), ds)
	s := New(ds, pool, cp, Node{PrimaryIP: netip.MustParseAddr("10.0.0.10"), VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, NetworkPolicyMode: "standard"},
		"v9.9.9", wait, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, f := range setup {
		f(s)
	}
	sock := filepath.Join(t.TempDir(), "ipamd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	rpc.RegisterCNIBackendServer(gs, s)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rpc.NewCNIBackendClient(conn)
}

func newDS() *datastore.Store {
	ds := datastore.New(time.Second, nil)
	ds.AddENI(datastore.ENI{ID: "eni-1", DeviceIndex: 1})
	return ds
}

// cardOne is network card 1 for UseCards: a datastore whose ENI eni-c1
// (device 0) holds addrs, a pool that never grows, the checkpoint at cpPath.
func cardOne(cpPath string, addrs ...string) (*datastore.Store, Card) {
	ds := datastore.New(time.Second, nil)
	ds.AddENI(datastore.ENI{ID: "eni-c1", DeviceIndex: 0, Card: 1})
	for _, a := range addrs {
		_ = ds.AddCIDR("eni-c1", netip.MustParsePrefix(a))
	}
	return ds, Card{Index: 1, Store: ds, Pool: &testPool{ds: ds, growIn: -1}, CP: datastore.NewCheckpointer(cpPath, ds)}
}

func addReq(id, version string) *rpc.AddNetworkRequest {
	return &rpc.AddNetworkRequest{ClientVersion: version, K8S_POD_NAME: "p-" + id, K8S_POD_NAMESPACE: "ns", ContainerID: id, IfName: "eth0", NetworkName: "aws-cni"}
}

func TestAddWaitsForThePool(t *testing.T) {
	ds := newDS()
	c := start(t, &testPool{ds: ds, growIn: 200 * time.Millisecond}, ds, 5*time.Second)
	begin := time.Now()
	r, err := c.AddNetwork(context.Background(), addReq("a", "v9.9.9"))
	if err != nil {
		t.Fatalf("ADD failed instead of waiting: %v", err)
	}
	if time.Since(begin) < 150*time.Millisecond {
		t.Fatal("ADD did not wait for the pool")
	}
	m := r.IPAllocationMetadata[0]
	if !r.Success || m.IPv4Addr != "10.0.2.1" || m.DeviceNumber != 1 || m.RouteTableId != 2 || r.VPCv4CIDRs[0] != "10.0.0.0/16" {
		t.Fatalf("reply %v", r)
	}
	again, err := c.AddNetwork(context.Background(), addReq("a", "v9.9.9"))
	if err != nil || again.IPAllocationMetadata[0].IPv4Addr != m.IPv4Addr {
		t.Fatalf("retried ADD got %v %v", again, err)
	}
}

func TestAddFailsWithTheReason(t *testing.T) {
	ds := newDS()
	c := start(t, &testPool{ds: ds, reason: errors.New("subnet has no free addresses")}, ds, 5*time.Second)
	_, err := c.AddNetwork(context.Background(), addReq("a", "v9.9.9"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "subnet has no free addresses") {
		t.Fatalf("got %v", err)
	}
	ds2 := newDS()
	c2 := start(t, &testPool{ds: ds2, growIn: -1}, ds2, 300*time.Millisecond)
	_, err = c2.AddNetwork(context.Background(), addReq("b", "v9.9.9"))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}
}

// A pod that asks for an interface on every network card fails with the
// reason, as in the VPC CNI without ENABLE_MULTI_NIC, and holds nothing:
// one interface is not what its workload expects.
func TestAddRefusesMultiNICPods(t *testing.T) {
	ds := newDS()
	c := start(t, &testPool{ds: ds}, ds, time.Second)
	r := addReq("multi", "v9.9.9")
	r.RequiresMultiNICAttachment = true
	_, err := c.AddNetwork(context.Background(), r)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "multi-nic-attachment") {
		t.Fatalf("got %v, want FailedPrecondition naming the annotation", err)
	}
	if n := len(ds.Allocations()); n != 0 {
		t.Fatalf("a refused ADD holds %d addresses", n)
	}
	if _, err := c.AddNetwork(context.Background(), addReq("single", "v9.9.9")); err != nil {
		t.Fatalf("a pod without the annotation: %v", err)
	}
}

func TestClientVersions(t *testing.T) {
	ds := newDS()
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.0/28"))
	c := start(t, &testPool{ds: ds}, ds, time.Second)
	for _, tc := range []struct {
		v  string
		ok bool
	}{{"v9.9.9", true}, {"v1.23.2", true}, {"v1.22.0", false}, {"", false}} {
		_, err := c.AddNetwork(context.Background(), addReq("c"+tc.v, tc.v))
		if (err == nil) != tc.ok {
			t.Errorf("client %q: %v", tc.v, err)
		}
		if !tc.ok && status.Code(err) != codes.FailedPrecondition {
			t.Errorf("client %q: code %v", tc.v, status.Code(err))
		}
	}
}

// DEL releases once; ipamd removes the pod's rules for the address it
// released (OnRelease), and a repeated DEL releases and removes nothing.
func TestDelIsIdempotent(t *testing.T) {
	ds := newDS()
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.0/28"))
	var mu sync.Mutex
	var dropped []string
	c := start(t, &testPool{ds: ds}, ds, time.Second, func(s *Server) {
		s.OnRelease(func(ip net.IP, table int, _ bool) {
			mu.Lock()
			defer mu.Unlock()
			// Before the release: once released, the address may be the
			// next pod's, and so would its rules.
			_, held := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "x", IfName: "eth0"})
			dropped = append(dropped, fmt.Sprintf("%s table %d held %v", ip, table, held))
		})
	})
	a, err := c.AddNetwork(context.Background(), addReq("x", "v9.9.9"))
	if err != nil {
		t.Fatal(err)
	}
	del := &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "x", IfName: "eth0", NetworkName: "aws-cni"}
	r, err := c.DelNetwork(context.Background(), del)
	if err != nil || !r.Success || r.IPAllocationMetadata[0].IPv4Addr != a.IPAllocationMetadata[0].IPv4Addr {
		t.Fatalf("del: %v %v", r, err)
	}
	r, err = c.DelNetwork(context.Background(), del)
	if err != nil || !r.Success || len(r.IPAllocationMetadata) != 0 {
		t.Fatalf("second del: %v %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := a.IPAllocationMetadata[0].IPv4Addr + " table 2 held true"; len(dropped) != 1 || dropped[0] != want {
		t.Fatalf("rules removed for %v, want once for %s", dropped, want)
	}
}

// An ADD on a node whose only free address is cooling gets it when the
// cooldown ends (1 s in newDS), well inside its deadline.
func TestAddWaitsForACoolingAddress(t *testing.T) {
	ds := newDS()
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.1/32"))
	c := start(t, &testPool{ds: ds, growIn: -1}, ds, 5*time.Second)
	if _, err := c.AddNetwork(context.Background(), addReq("old", "v9.9.9")); err != nil {
		t.Fatal(err)
	}
	del := &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "old", IfName: "eth0", NetworkName: "aws-cni"}
	if _, err := c.DelNetwork(context.Background(), del); err != nil {
		t.Fatal(err)
	}
	r, err := c.AddNetwork(context.Background(), addReq("new", "v9.9.9"))
	if err != nil {
		t.Fatalf("ADD did not get the address back from its cooldown: %v", err)
	}
	if ip := r.IPAllocationMetadata[0].IPv4Addr; ip != "10.0.2.1" {
		t.Fatalf("got %s", ip)
	}
}

// ReleaseOrphans releases, under each attachment's lock, the allocations
// whose pod is gone, removing their rules first, and leaves the others.
func TestReleaseOrphans(t *testing.T) {
	ds := newDS()
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.0/28"))
	cpPath := filepath.Join(t.TempDir(), "ipam.json")
	cp := datastore.NewCheckpointer(cpPath, ds)
	s := New(ds, &testPool{ds: ds}, cp, Node{}, "v9.9.9", time.Second, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var dropped []string
	s.OnRelease(func(ip net.IP, _ int, _ bool) { dropped = append(dropped, ip.String()) })
	for _, pod := range []string{"gone", "live"} {
		if _, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: pod, IfName: "eth0"}, datastore.Meta{PodName: pod}); err != nil {
			t.Fatal(err)
		}
	}
	goneIP, _ := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "gone", IfName: "eth0"})
	n, err := s.ReleaseOrphans(context.Background(), 0, func(a datastore.Allocation, _ int) bool { return a.Meta.PodName == "gone" })
	if err != nil || n != 1 {
		t.Fatalf("released %d, %v; want 1", n, err)
	}
	if _, held := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "gone", IfName: "eth0"}); held {
		t.Fatal("the orphan still holds its address")
	}
	if _, held := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "live", IfName: "eth0"}); !held {
		t.Fatal("the live pod lost its address")
	}
	if len(dropped) != 1 || dropped[0] != goneIP.IP.String() {
		t.Fatalf("rules removed for %v, want %s", dropped, goneIP.IP)
	}
	if cpAllocs, err := datastore.ReadCheckpoint(cpPath); err != nil || len(cpAllocs) != 1 {
		t.Fatalf("checkpoint after the sweep: %v, %v; want the live pod only", cpAllocs, err)
	}
}

// An allocation restore holds (its address not in the pool yet) is
// released by DEL and by the orphan sweep like any other, and leaves the
// checkpoint; its rules go with an unknown table (-1).
func TestHeldAllocationsAreReleased(t *testing.T) {
	ds := newDS()
	cpPath := filepath.Join(t.TempDir(), "ipam.json")
	cp := datastore.NewCheckpointer(cpPath, ds)
	s := New(ds, &testPool{ds: ds}, cp, Node{}, "v9.9.9", time.Second, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var dropped []string
	s.OnRelease(func(ip net.IP, table int, _ bool) { dropped = append(dropped, fmt.Sprintf("%s %d", ip, table)) })
	for i, pod := range []string{"deleted", "orphan"} {
		cp.Held().Add(datastore.Allocation{Key: datastore.Key{NetworkName: "aws-cni", ContainerID: pod, IfName: "eth0"},
			IP: netip.AddrFrom4([4]byte{10, 0, 7, byte(i + 1)}), Meta: datastore.Meta{PodName: pod}})
	}
	r, err := s.DelNetwork(context.Background(), &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "deleted", IfName: "eth0", NetworkName: "aws-cni"})
	if err != nil || len(r.IPAllocationMetadata) != 1 || r.IPAllocationMetadata[0].IPv4Addr != "10.0.7.1" {
		t.Fatalf("DEL of a held allocation: %v, %v", r, err)
	}
	if n, err := s.ReleaseOrphans(context.Background(), 0, func(a datastore.Allocation, _ int) bool { return a.Meta.PodName == "orphan" }); err != nil || n != 1 {
		t.Fatalf("orphan sweep released %d, %v; want the held orphan", n, err)
	}
	if cp.Held().Len() != 0 {
		t.Fatalf("%d still held", cp.Held().Len())
	}
	if want := []string{"10.0.7.1 -1", "10.0.7.2 -1"}; !slices.Equal(dropped, want) {
		t.Fatalf("rules removed for %v, want %v", dropped, want)
	}
	if a, err := datastore.ReadCheckpoint(cpPath); err != nil || len(a) != 0 {
		t.Fatalf("checkpoint: %v, %v; want empty", a, err)
	}
}

// With a pool on network card 1 (ENABLE_MULTI_NIC), a multi-NIC pod gets
// an address on each card, card 0's first, with card 1's route table
// (10000 + device + 100); DEL releases both. When card 1 cannot give one,
// the ADD fails naming the card and card 0's address goes back: all or
// none. A pod without the annotation takes card 0's only.
func TestAddMultiNIC(t *testing.T) {
	ds0 := newDS()
	_ = ds0.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.1/32"))
	_ = ds0.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.2/32"))
	_ = ds0.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.3/32")) // the one given back cools down
	ds1, card1 := cardOne(filepath.Join(t.TempDir(), "ipam-nic-1.json"), "10.0.9.1/32")
	c := start(t, &testPool{ds: ds0, growIn: -1}, ds0, 300*time.Millisecond, func(s *Server) { s.UseCards([]Card{card1}) })
	r := addReq("multi", "v9.9.9")
	r.RequiresMultiNICAttachment = true
	reply, err := c.AddNetwork(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	got := reply.IPAllocationMetadata
	if len(got) != 2 || !strings.HasPrefix(got[0].IPv4Addr, "10.0.2.") || got[0].RouteTableId != 2 || got[1].IPv4Addr != "10.0.9.1" || got[1].DeviceNumber != 0 || got[1].RouteTableId != 10100 {
		t.Fatalf("multi-NIC reply %v", got)
	}
	if a, _ := ds1.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "multi", IfName: "eth0"}); a.Meta.InterfacesCount != 2 {
		t.Errorf("card 1's allocation records %d interfaces, want 2", a.Meta.InterfacesCount)
	}

	// Card 1 is out of addresses and cannot grow: nothing is kept.
	r2 := addReq("multi-2", "v9.9.9")
	r2.RequiresMultiNICAttachment = true
	if _, err := c.AddNetwork(context.Background(), r2); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "network card 1") {
		t.Fatalf("ADD with card 1 dry: %v, want DeadlineExceeded naming card 1", err)
	}
	if n := len(ds0.Allocations()); n != 1 {
		t.Fatalf("card 0 holds %d allocations after the failed multi-NIC ADD, want 1 (the first pod's)", n)
	}
	if single, err := c.AddNetwork(context.Background(), addReq("single", "v9.9.9")); err != nil || len(single.IPAllocationMetadata) != 1 {
		t.Fatalf("a pod without the annotation: %v %v", single, err)
	}

	del, err := c.DelNetwork(context.Background(), &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "multi", IfName: "eth0", NetworkName: "aws-cni"})
	if err != nil || len(del.IPAllocationMetadata) != 2 || del.IPAllocationMetadata[1].IPv4Addr != "10.0.9.1" || del.IPAllocationMetadata[1].RouteTableId != 10100 {
		t.Fatalf("DEL of the multi-NIC pod: %v %v", del, err)
	}
	if n := len(ds1.Allocations()); n != 0 {
		t.Fatalf("card 1 holds %d allocations after the DEL", n)
	}
}

// TestOneInterfacePodTakesAnotherCardsAddress: as in the VPC CNI, a pod
// with one interface takes card 1's address when card 0 has none free,
// rather than wait for card 0's pool. Card 0's comes first when it has
// one; a repeated ADD gets the address the pod holds, on whichever card;
// DEL and the orphan sweep find it there, the sweep asking about the
// pod's eth0.
func TestOneInterfacePodTakesAnotherCardsAddress(t *testing.T) {
	ds0 := newDS()
	ds1, card1 := cardOne(filepath.Join(t.TempDir(), "ipam-nic-1.json"), "10.0.9.1/32", "10.0.9.2/32")
	var s *Server
	c := start(t, &testPool{ds: ds0, growIn: -1}, ds0, 300*time.Millisecond, func(srv *Server) {
		s = srv
		s.UseCards([]Card{card1})
	})
	ctx := context.Background()
	key := datastore.Key{NetworkName: "aws-cni", ContainerID: "spill", IfName: "eth0"}
	reply, err := c.AddNetwork(ctx, addReq("spill", "v9.9.9"))
	if err != nil {
		t.Fatalf("ADD with card 0 dry and card 1 warm: %v", err)
	}
	got := reply.IPAllocationMetadata
	if len(got) != 1 || !strings.HasPrefix(got[0].IPv4Addr, "10.0.9.") || got[0].RouteTableId != 10100 {
		t.Fatalf("reply %v, want one card-1 address with table 10100", got)
	}
	if a, ok := ds1.Lookup(key); !ok || a.Meta.InterfacesCount != 1 {
		t.Fatalf("card 1's allocation %+v (%v), want one recording 1 interface", a, ok)
	}

	// Card 0 gets an address: the repeated ADD keeps card 1's, a new pod takes card 0's.
	_ = ds0.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.1/32"))
	again, err := c.AddNetwork(ctx, addReq("spill", "v9.9.9"))
	if err != nil || again.IPAllocationMetadata[0].IPv4Addr != got[0].IPv4Addr || len(ds0.Allocations()) != 0 {
		t.Fatalf("repeated ADD: %v %v, card 0 allocations %v; want the same card-1 address and none on card 0", again, err, ds0.Allocations())
	}
	if home, err := c.AddNetwork(ctx, addReq("home", "v9.9.9")); err != nil || home.IPAllocationMetadata[0].IPv4Addr != "10.0.2.1" {
		t.Fatalf("with card 0 warm: %v %v, want 10.0.2.1", home, err)
	}

	del, err := c.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "spill", IfName: "eth0", NetworkName: "aws-cni"})
	if err != nil || len(del.IPAllocationMetadata) != 1 || del.IPAllocationMetadata[0].RouteTableId != 10100 {
		t.Fatalf("DEL: %v %v", del, err)
	}
	if n := len(ds1.Allocations()); n != 0 {
		t.Fatalf("card 1 holds %d after the DEL", n)
	}

	// Gone while ipamd could not hear its DEL: the sweep asks about eth0.
	if _, err := c.AddNetwork(ctx, addReq("orphan", "v9.9.9")); err != nil {
		t.Fatal(err)
	}
	var asked []int
	n, err := s.ReleaseOrphans(ctx, 0, func(a datastore.Allocation, i int) bool {
		if a.Meta.PodName != "p-orphan" {
			return false
		}
		asked = append(asked, i)
		return i == 0
	})
	if err != nil || n != 1 || len(ds1.Allocations()) != 0 || len(asked) == 0 || slices.ContainsFunc(asked, func(i int) bool { return i != 0 }) {
		t.Fatalf("sweep released %d (%v), asked about interfaces %v, card 1 holds %v; want 1 released, eth0 asked", n, err, asked, ds1.Allocations())
	}

	// GC of the runtime's attachments finds it on card 1 too.
	_ = ds1.AddCIDR("eni-c1", netip.MustParsePrefix("10.0.9.3/32"))
	if r, err := c.AddNetwork(ctx, addReq("gc", "v9.9.9")); err != nil || r.IPAllocationMetadata[0].IPv4Addr != "10.0.9.3" {
		t.Fatalf("ADD: %v %v, want 10.0.9.3", r, err)
	}
	gc := s.gcPods(ctx, ctx, &datapath.GCRequest{ClientVersion: "v9.9.9", NetworkName: "aws-cni", ValidAttachments: []*datapath.Attachment{{ContainerId: "home", IfName: "eth0"}}})
	if gc.Error != nil || len(ds1.Allocations()) != 0 || len(ds0.Allocations()) != 1 {
		t.Fatalf("GC: %v; card 0 holds %v, card 1 %v; want home's only", gc.Error, ds0.Allocations(), ds1.Allocations())
	}

	// No card has one free (card 1's cool down): the ADD waits for card
	// 0's pool, then fails.
	if _, err := c.AddNetwork(ctx, addReq("none", "v9.9.9")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("ADD with every card dry: %v, want DeadlineExceeded", err)
	}
	if n := testutil.ToFloat64(s.m.NoIP); n != 1 {
		t.Errorf("awscni_no_available_ip_addresses = %v, want 1", n)
	}
}

// annotations records ANNOTATE_POD_IP's patches; Set fails for failPod.
type annotations struct {
	mu         sync.Mutex
	failPod    string
	set, clear []string
}

func (a *annotations) Set(_ context.Context, _, name, ip string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if name == a.failPod {
		return errors.New("patch timed out")
	}
	a.set = append(a.set, name+" "+ip)
	return nil
}

func (a *annotations) Clear(_ context.Context, _, name, ip string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clear = append(a.clear, name+" "+ip)
	return nil
}

// A pod with one interface on card 1 is undone there when its ADD fails
// after the assignment (annotation or checkpoint), and its annotation is
// cleared on failure and on DEL, as for a pod on card 0. An ADD repeated
// with another interface count is refused rather than reusing the address
// as another interface.
func TestOneInterfacePodOnAnotherCardUndone(t *testing.T) {
	var srv *Server
	serve := func(t *testing.T, cpPath string) (*datastore.Store, *annotations, rpc.CNIBackendClient) {
		ds0 := newDS()
		ds1, card1 := cardOne(cpPath, "10.0.9.1/32", "10.0.9.2/32")
		ann := &annotations{failPod: "p-unpatched"}
		c := start(t, &testPool{ds: ds0, growIn: -1}, ds0, 200*time.Millisecond, func(s *Server) {
			s.UseCards([]Card{card1})
			s.AnnotatePodIPs(ann)
			srv = s
		})
		return ds1, ann, c
	}
	ctx := context.Background()

	t.Run("annotation", func(t *testing.T) {
		ds1, ann, c := serve(t, filepath.Join(t.TempDir(), "ipam-nic-1.json"))
		if _, err := c.AddNetwork(ctx, addReq("unpatched", "v9.9.9")); status.Code(err) != codes.Unavailable {
			t.Fatalf("ADD whose annotation fails: %v, want Unavailable", err)
		}
		if n := len(ds1.Allocations()); n != 0 || len(ann.clear) != 1 || !strings.HasPrefix(ann.clear[0], "p-unpatched 10.0.9.") {
			t.Fatalf("after the failed ADD card 1 holds %d, annotations cleared %v; want none held, its annotation cleared", n, ann.clear)
		}
		r, err := c.AddNetwork(ctx, addReq("web", "v9.9.9"))
		if err != nil {
			t.Fatal(err)
		}
		ip := r.IPAllocationMetadata[0].IPv4Addr
		multi := addReq("web", "v9.9.9")
		multi.RequiresMultiNICAttachment = true
		if _, err := c.AddNetwork(ctx, multi); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("ADD repeated as a multi-NIC pod: %v, want FailedPrecondition", err)
		}
		if n := testutil.ToFloat64(srv.m.NoIP); n != 0 {
			t.Errorf("awscni_no_available_ip_addresses = %v after ADDs refused for other reasons, want 0", n)
		}
		if _, err := c.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "web", IfName: "eth0", NetworkName: "aws-cni"}); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ann.set, "p-web "+ip) || !slices.Contains(ann.clear, "p-web "+ip) {
			t.Fatalf("annotations set %v, cleared %v; want p-web %s set and cleared", ann.set, ann.clear, ip)
		}
	})
	t.Run("checkpoint", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ds1, _, c := serve(t, filepath.Join(file, "ipam-nic-1.json")) // under a file: never written
		if _, err := c.AddNetwork(ctx, addReq("web", "v9.9.9")); status.Code(err) != codes.Internal {
			t.Fatalf("ADD whose card-1 checkpoint cannot be written: %v, want Internal", err)
		}
		if n := len(ds1.Allocations()); n != 0 {
			t.Fatalf("card 1 holds %d after the ADD failed", n)
		}
	})
}
