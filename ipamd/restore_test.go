package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-io/berth/internal/vethname"
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

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/pool"
)

// restore is restoreOn for card 0 alone.
func restore(ctx context.Context, ds *datastore.Store, cp *datastore.Checkpointer, path, vethPrefix string, log *slog.Logger) error {
	return restoreOn(ctx, ds, cp, path, vethPrefix, 0, func(netip.Addr) bool { return true }, log)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// inNS runs f on a thread inside ns: restore and podGone use the
// process's netlink handle, which follows the thread's namespace.
func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	if err := testenv.OnThreadIn(ns, func() error { f(); return nil }); err != nil {
		t.Error(err)
	}
}

// podVethWithRoute makes what berth-cni leaves on the host for a pod: a veth
// and "<ip>/32 dev <veth> scope link" in the main table.
func podVethWithRoute(t *testing.T, h *netlink.Handle, name, ip string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	for _, n := range []string{name, name + "p"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := h.LinkByName(name)
	dst := &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(32, 32)}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("route %s: %v", ip, err)
	}
}

// A checkpoint ipamd cannot decode no longer stops it: the file is moved
// aside and the pods' addresses are rebuilt from their host routes, so a
// new pod never gets one of them; the sweep's test releases them once the
// veth goes.
func TestRestoreRebuildsFromHostWhenCheckpointIsCorrupt(t *testing.T) {
	testenv.RequireRoot(t, "veths and routes in a netns")
	for name, body := range map[string]string{
		"empty":     ``,
		"truncated": `{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","contai`,
	} {
		t.Run(name, func(t *testing.T) {
			ns, h := testenv.NewNetNS(t)
			podVethWithRoute(t, h, "eniaaaa", "10.0.3.7")
			podVethWithRoute(t, h, "othera", "10.0.3.8") // not a pod veth: not ours
			l, _ := h.LinkByName("eniaaaa")
			if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 4, 0).To4(), Mask: net.CIDRMask(24, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "ipam.json")
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			ds := storeWith10030(t)
			cp := datastore.NewCheckpointer(path, ds)
			var err error
			inNS(t, ns, func() { err = restore(context.Background(), ds, cp, path, "eni", quiet()) })
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("moved aside: %v", aside)
			}
			if b, _ := os.ReadFile(aside[0]); string(b) != body {
				t.Fatalf("moved-aside file holds %q", b)
			}
			key := datastore.HostKey("eniaaaa")
			if a, ok := ds.Lookup(key); !ok || a.IP != netip.MustParseAddr("10.0.3.7") {
				t.Fatalf("rebuilt allocation: %+v %v; all %+v", a, ok, ds.Allocations())
			}
			if n := len(ds.Allocations()); n != 1 {
				t.Fatalf("%d allocations, want 1: %+v", n, ds.Allocations())
			}
			got, err := datastore.ReadCheckpoint(path)
			if err != nil || len(got) != 1 || got[0].Key != key {
				t.Fatalf("new checkpoint: %+v %v", got, err)
			}
			for i := 0; i < 15; i++ {
				a, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "new" + string(rune('a'+i)), IfName: "eth0"}, datastore.Meta{})
				if err != nil || a.IP == netip.MustParseAddr("10.0.3.7") {
					t.Fatalf("Assign = %+v %v", a, err)
				}
			}
			a, _ := ds.Lookup(key)
			var gone bool
			inNS(t, ns, func() { gone = !newVethFinder("eni").present(a) })
			if gone {
				t.Fatal("podGone while its veth is there")
			}
			// A new sandbox of the pod: same veth name, another address.
			if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 3, 7).To4(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
				t.Fatal(err)
			}
			inNS(t, ns, func() { gone = !newVethFinder("eni").present(a) })
			if !gone {
				t.Fatal("the sweep would not release a rebuilt allocation its veth no longer routes")
			}
			podVethWithRoute(t, h, "eniaaab", "10.0.3.9")
			other := datastore.Allocation{Key: datastore.HostKey("eniaaab"), IP: netip.MustParseAddr("10.0.3.9")}
			inNS(t, ns, func() { gone = !newVethFinder("eni").present(other) })
			if gone {
				t.Fatal("podGone for a veth that routes its address")
			}
			if err := h.LinkDel(l); err != nil {
				t.Fatal(err)
			}
			inNS(t, ns, func() { gone = !newVethFinder("eni").present(a) })
			if !gone {
				t.Fatal("the sweep would not release a rebuilt allocation whose veth is gone")
			}
		})
	}
}

// An entry without an IPv4 address (a VPC CNI in IPv6 mode wrote it) is
// skipped, as the VPC CNI skips it; the others are restored.
func TestRestoreSkipsEntriesWithoutIPv4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	body := `{"version":"vpc-cni-ipam/1","allocations":[` +
		`{"networkName":"aws-cni","containerID":"v6","ifName":"eth0","ipv6":"2001:db8::1","allocationTimestamp":1},` +
		`{"networkName":"aws-cni","containerID":"v4","ifName":"eth0","ipv4":"10.0.3.2","allocationTimestamp":1}]}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := storeWith10030(t)
	if err := restore(context.Background(), ds, datastore.NewCheckpointer(path, ds), path, "eni", quiet()); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if a, ok := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "v4", IfName: "eth0"}); !ok || a.IP != netip.MustParseAddr("10.0.3.2") {
		t.Fatalf("IPv4 entry not restored: %+v", ds.Allocations())
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("a readable checkpoint was moved aside: %v", aside)
	}
}

// An allocation whose pod has no veth is released at restart only when
// it is old enough: a young one may be a VPC CNI plugin's ADD between
// AddNetwork's answer and its wiring, and releasing it would hand the
// pod's address to the next one. The sweep judges it later.
func TestRestoreKeepsYoungAllocationsWithoutVeth(t *testing.T) {
	testenv.RequireRoot(t, "a netns without the pods' veths")
	path := filepath.Join(t.TempDir(), "ipam.json")
	now := time.Now()
	body := fmt.Sprintf(`{"version":"vpc-cni-ipam/1","allocations":[`+
		`{"networkName":"aws-cni","containerID":"young","ifName":"eth0","ipv4":"10.0.3.2","allocationTimestamp":%d,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"young"}},`+
		`{"networkName":"aws-cni","containerID":"old","ifName":"eth0","ipv4":"10.0.3.3","allocationTimestamp":%d,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"old"}}]}`,
		now.Add(-time.Second).UnixNano(), now.Add(-time.Minute).UnixNano())
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := storeWith10030(t)
	ns, _ := testenv.NewNetNS(t)
	var err error
	inNS(t, ns, func() {
		err = restore(context.Background(), ds, datastore.NewCheckpointer(path, ds), path, "eni", quiet())
	})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, ok := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "young", IfName: "eth0"}); !ok {
		t.Error("a second-old allocation without its veth yet was released")
	}
	if _, ok := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "old", IfName: "eth0"}); ok {
		t.Error("a minute-old allocation without a veth was kept")
	}
}

// Temp files of a write a crash interrupted go at start-up.
func TestRestoreRemovesTempLeftovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	for _, n := range []string{".ipam.json.tmp-1", ".ipam.json.tmp-2"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(`{"vers`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ds := datastore.New(30*time.Second, nil)
	if err := restore(context.Background(), ds, datastore.NewCheckpointer(path, ds), path, "eni", quiet()); err != nil {
		t.Fatalf("restore: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "ipam.json" {
		t.Fatalf("state dir holds %s", got)
	}
}

// ec2 is a node whose EC2 listing can change under the pool.
type ec2 struct {
	cloud.Cloud // unused methods
	mu          sync.Mutex
	inst        cloud.Instance
	enis        []cloud.ENI
}

func (e *ec2) Instance() cloud.Instance { return e.inst }
func (e *ec2) list() ([]cloud.ENI, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]cloud.ENI, len(e.enis))
	for i, x := range e.enis {
		x.Secondary = append([]netip.Addr(nil), x.Secondary...)
		out[i] = x
	}
	return out, nil
}
func (e *ec2) AttachedENIs(context.Context) ([]cloud.ENI, error) { return e.list() }
func (e *ec2) MetadataENIs(context.Context) ([]cloud.ENI, error) { return e.list() }

// A live pod whose address EC2 did not list at start-up (an assignment
// just before a crash, not visible yet) keeps it: restore holds it instead
// of dropping it, its rules survive the prune, and when the pool's
// reconcile adopts the address it goes back to the pod, not to a new one.
func TestRestoreHoldsALivePodAddressEC2ListsLater(t *testing.T) {
	primary := netip.MustParseAddr("10.0.0.10")
	node := &ec2{inst: cloud.Instance{ID: "i-1", Type: "m5.large", PrimaryENI: "eni-0", PrimaryIP: primary},
		enis: []cloud.ENI{{ID: "eni-0", Device: 0, PrimaryIP: primary, Attached: true,
			Secondary: []netip.Addr{netip.MustParseAddr("10.0.0.20")}}}}
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ds := datastore.New(cfg.IPCooldown, nil)
	path := filepath.Join(t.TempDir(), "ipam.json")
	cp := datastore.NewCheckpointer(path, ds)
	p := pool.New(cfg, node, ds, nil, quiet())
	if err := p.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No pod name: a VPC CNI gRPC ADD without Kubernetes arguments, so no
	// veth to check; with a live veth the path is the same.
	live := datastore.Key{NetworkName: "aws-cni", ContainerID: "live", IfName: "eth0"}
	liveIP := netip.MustParseAddr("10.0.0.21")
	if err := os.WriteFile(path, []byte(`{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"live","ifName":"eth0","ipv4":"10.0.0.21","allocationTimestamp":1}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := restore(context.Background(), ds, cp, path, "eni", quiet()); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got, err := datastore.ReadCheckpoint(path); err != nil || len(got) != 1 || got[0].Key != live {
		t.Fatalf("checkpoint after restore lost the live pod: %+v %v", got, err)
	}
	if !liveAddrs([]*card{{ds: ds, cp: cp}})[liveIP] {
		t.Fatal("the prune would delete the live pod's rules")
	}

	// EC2 catches up; the pool's reconcile adopts the address.
	node.mu.Lock()
	node.enis[0].Secondary = append(node.enis[0].Secondary, liveIP)
	node.mu.Unlock()
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, ok := ds.Lookup(live); !ok || a.IP != liveIP || a.ENI != "eni-0" {
		t.Fatalf("live pod's allocation after reconcile: %+v %v", a, ok)
	}
	a, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "new", IfName: "eth0"}, datastore.Meta{})
	if err != nil || a.IP != netip.MustParseAddr("10.0.0.20") {
		t.Fatalf("new pod got %+v (%v), want 10.0.0.20", a, err)
	}
	if a, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "new2", IfName: "eth0"}, datastore.Meta{}); !errors.Is(err, datastore.ErrNoFreeIP) {
		t.Fatalf("second new pod got %+v (%v): the live pod's address was free", a, err)
	}
	if got, _ := datastore.ReadCheckpoint(path); len(got) != 1 || got[0].Key != live || got[0].IP != liveIP {
		t.Fatalf("checkpoint after the claim: %+v", got)
	}
}

// While the address's ENI is not in the pool (unmanaged, or not adopted
// yet) the address is not free; when the pool adopts the ENI, the address
// goes to its pod in the same step.
func TestHeldAddressOnAnENIAdoptedLater(t *testing.T) {
	ds := datastore.New(30*time.Second, nil)
	held := netip.MustParseAddr("10.0.5.5")
	key := datastore.Key{NetworkName: "aws-cni", ContainerID: "c", IfName: "eth0"}
	ds.Held().Add(datastore.Allocation{Key: key, IP: held})
	if _, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "new", IfName: "eth0"}, datastore.Meta{}); !errors.Is(err, datastore.ErrNoFreeIP) {
		t.Fatalf("Assign before the ENI is adopted: %v", err)
	}
	ds.AddENI(datastore.ENI{ID: "eni-9", DeviceIndex: 2})
	if err := ds.AddCIDR("eni-9", netip.MustParsePrefix("10.0.5.0/28")); err != nil {
		t.Fatal(err)
	}
	if a, ok := ds.Lookup(key); !ok || a.IP != held || a.ENI != "eni-9" {
		t.Fatalf("held allocation after its ENI was adopted: %+v %v", a, ok)
	}
	if ds.Held().Len() != 0 {
		t.Fatal("still held")
	}
}

// storeWith10030 is a store with one ENI holding 10.0.3.0/28, free.
func storeWith10030(t *testing.T) *datastore.Store {
	t.Helper()
	ds := datastore.New(30*time.Second, nil)
	ds.AddENI(datastore.ENI{ID: "eni-1", DeviceIndex: 1})
	if err := ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.3.0/28")); err != nil {
		t.Fatal(err)
	}
	return ds
}

// Pods keep the veths they were made with when AWS_VPC_K8S_CNI_VETHPREFIX
// changes. A restart with the new prefix must find them under the old one:
// releasing their addresses would hand a running pod's address to the next
// pod. The sweep must not release them either, and the rebuild from host
// routes must count them.
func TestRestoreFindsPodsMadeUnderAnotherVethPrefix(t *testing.T) {
	testenv.RequireRoot(t, "veths in a netns")
	ns, h := testenv.NewNetNS(t)
	podVethWithRoute(t, h, VethName("eni", "default", "web-0"), "10.0.3.2")
	path := filepath.Join(t.TempDir(), "ipam.json")
	body := `{"version":"vpc-cni-ipam/1","allocations":[` +
		`{"networkName":"aws-cni","containerID":"c0","ifName":"eth0","ipv4":"10.0.3.2","allocationTimestamp":1,"metadata":{"k8sPodNamespace":"default","k8sPodName":"web-0"}},` +
		`{"networkName":"aws-cni","containerID":"c1","ifName":"eth0","ipv4":"10.0.3.3","allocationTimestamp":1,"metadata":{"k8sPodNamespace":"default","k8sPodName":"web-1"}}]}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := storeWith10030(t)
	var err error
	inNS(t, ns, func() {
		err = restore(context.Background(), ds, datastore.NewCheckpointer(path, ds), path, "pod", quiet())
	})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	live, ok := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c0", IfName: "eth0"})
	if !ok || live.IP != netip.MustParseAddr("10.0.3.2") {
		t.Fatalf("the pod under the old prefix lost its address: %+v", ds.Allocations())
	}
	if _, ok := ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c1", IfName: "eth0"}); ok {
		t.Fatal("a pod with no veth under any prefix was kept")
	}
	var gone bool
	inNS(t, ns, func() { gone = !newVethFinder("pod").present(live) })
	if gone {
		t.Fatal("the sweep would release the pod under the old prefix")
	}
	var rebuilt []datastore.Allocation
	inNS(t, ns, func() { rebuilt, err = hostAllocations(context.Background(), "pod", time.Now()) })
	if err != nil || len(rebuilt) != 1 || rebuilt[0].IP != live.IP {
		t.Fatalf("rebuilt from host routes: %+v %v", rebuilt, err)
	}
	// A new sandbox of the pod: the veth of its name routes another
	// address. The earlier sandbox's allocation is an orphan.
	l, _ := h.LinkByName(VethName("eni", "default", "web-0"))
	if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 3, 2).To4(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 3, 8).To4(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, func() { gone = !newVethFinder("pod").present(live) })
	if !gone {
		t.Fatal("the sweep would keep an earlier sandbox's address while a later sandbox of the pod runs")
	}
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, func() { gone = !newVethFinder("pod").present(live) })
	if !gone {
		t.Fatal("the sweep would keep a pod whose veth is gone")
	}
}

// Network card 1's checkpoint (ipam-nic-1.json) is judged by the pods'
// veths of their second interface, named after "<pod>.1": a pod whose
// eth0 veth is there but routes another address does not keep card 1's
// address, one whose second veth routes it does. A pod with one interface
// that got card 1's address keeps it by its eth0 veth.
func TestRestoreCardOneByItsOwnVeth(t *testing.T) {
	testenv.RequireRoot(t, "veths and routes in a netns")
	ns, h := testenv.NewNetNS(t)
	podVethWithRoute(t, h, vethname.For("eni", "ns", vethname.Interface("web", 1)), "10.0.3.7")
	podVethWithRoute(t, h, vethname.For("eni", "ns", "gone"), "10.0.2.9") // eth0's only
	podVethWithRoute(t, h, vethname.For("eni", "ns", "solo"), "10.0.3.9")
	path := filepath.Join(t.TempDir(), "ipam-nic-1.json")
	old := time.Now().Add(-time.Minute).UnixNano()
	body := fmt.Sprintf(`{"version":"vpc-cni-ipam/1","allocations":[
		{"networkName":"aws-cni","containerID":"c1","ifName":"eth0","ipv4":"10.0.3.7","allocationTimestamp":%d,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"web","interfacesCount":2}},
		{"networkName":"aws-cni","containerID":"c2","ifName":"eth0","ipv4":"10.0.3.8","allocationTimestamp":%d,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"gone","interfacesCount":2}},
		{"networkName":"aws-cni","containerID":"c3","ifName":"eth0","ipv4":"10.0.3.9","allocationTimestamp":%d,"metadata":{"k8sPodNamespace":"ns","k8sPodName":"solo","interfacesCount":1}}]}`, old, old, old)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := datastore.New(30*time.Second, nil)
	ds.AddENI(datastore.ENI{ID: "eni-c1", DeviceIndex: 0, Card: 1})
	if err := ds.AddCIDR("eni-c1", netip.MustParsePrefix("10.0.3.0/28")); err != nil {
		t.Fatal(err)
	}
	c := &card{index: 1, ds: ds, cp: datastore.NewCheckpointer(path, ds), path: path}
	var err error
	inNS(t, ns, func() { err = restoreCard(context.Background(), []*card{{index: 0}, c}, c, "eni", quiet()) })
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, a := range ds.Allocations() {
		if a.Card != 1 {
			t.Errorf("%s restored on card %d", a.IP, a.Card)
		}
		kept = append(kept, a.IP.String())
	}
	slices.Sort(kept)
	if want := []string{"10.0.3.7", "10.0.3.9"}; !slices.Equal(kept, want) {
		t.Fatalf("card 1 after restore: %v, want web's and solo's %v", kept, want)
	}
}
