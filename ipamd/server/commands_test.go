package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/proto"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/proto/datapath"
)

// wired is what the node holds for a pod's address: its veth, its host
// route, its two rules.
type wired struct{ veth, route, to, from bool }

func (e *dpEnv) wired(t *testing.T, veth string, ip net.IP) wired {
	t.Helper()
	var w wired
	l, err := e.node.LinkByName(veth)
	w.veth = err == nil
	if w.veth {
		rs, err := e.node.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: podnet.HostNet(ip), LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil {
			t.Fatal(err)
		}
		w.route = len(rs) > 0
	}
	rules, err := e.node.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		w.to = w.to || (r.Priority == podnet.ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(ip))
		w.from = w.from || (r.Priority == podnet.FromPodPriority && r.Src != nil && r.Src.IP.Equal(ip))
	}
	return w
}

// add runs a committed ADD of pod in a new namespace.
func (e *dpEnv) add(t *testing.T, pod string) (*datapath.Reply, int) {
	t.Helper()
	podNS, _ := testenv.NewNetNS(t)
	c := dial(t, e.sock)
	r := exchange(t, c, e.request(pod), int(podNS))
	if r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("ADD %s: %+v (error %v)", pod, r, r.Error)
	}
	b, _ := proto.Marshal(&datapath.Continue{Applied: true})
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	// ipamd hangs up once the ADD is done, its lock released.
	if _, err := c.Recv(); err == nil {
		t.Fatal("ipamd answered the commit")
	}
	c.Close()
	return r, int(podNS)
}

func (e *dpEnv) del(t *testing.T, pod string, netnsGone bool) *datapath.Reply {
	t.Helper()
	r := exchange(t, dial(t, e.sock), &datapath.DelRequest{ClientVersion: e.version, ContainerId: "c-" + pod, IfName: "eth0",
		NetworkName: "aws-cni", PodNamespace: "ns", PodName: pod, NetnsGone: netnsGone, Reason: "PodDeleted"})
	if r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("DEL %s: %+v (error %v)", pod, r, r.Error)
	}
	return r
}

// berth-cni's DEL: ipamd releases the address after removing its rules and
// host route; the veth stays while the pod's namespace does (the runtime's
// deletion of it destroys the pair) and goes when it is gone. A repeated
// DEL finds nothing and succeeds.
func TestDatapathDel(t *testing.T) {
	e := startDatapath(t)
	key := func(pod string) datastore.Key {
		return datastore.Key{NetworkName: "aws-cni", ContainerID: "c-" + pod, IfName: "eth0"}
	}
	r, _ := e.add(t, "web-0")
	ip := net.ParseIP(r.Ipv4Addr)
	if w := e.wired(t, r.HostVeth, ip); w != (wired{true, true, true, true}) {
		t.Fatalf("after ADD: %+v", w)
	}
	d := e.del(t, "web-0", false)
	if d.Ipv4Addr != r.Ipv4Addr || d.RouteTableId != r.RouteTableId {
		t.Fatalf("DEL reply %+v, want the released %s (table %d)", d, r.Ipv4Addr, r.RouteTableId)
	}
	if w := e.wired(t, r.HostVeth, ip); w != (wired{veth: true}) {
		t.Fatalf("after DEL with the namespace there: %+v, want only the veth left", w)
	}
	if _, held := e.ds.Lookup(key("web-0")); held {
		t.Fatal("DEL left the address held")
	}
	if b, err := os.ReadFile(e.cpPath); err != nil || strings.Contains(string(b), r.Ipv4Addr) {
		t.Fatalf("checkpoint after DEL: %s %v", b, err)
	}
	if again := e.del(t, "web-0", true); again.Ipv4Addr != "" {
		t.Fatalf("repeated DEL released %s", again.Ipv4Addr)
	}
	if w := e.wired(t, r.HostVeth, ip); !w.veth {
		t.Fatal("a repeated DEL, which released nothing, deleted the veth")
	}

	r2, _ := e.add(t, "web-1")
	e.del(t, "web-1", true)
	if w := e.wired(t, r2.HostVeth, net.ParseIP(r2.Ipv4Addr)); w != (wired{}) {
		t.Fatalf("after DEL with the namespace gone: %+v, want nothing left", w)
	}
}

// CHECK passes on a wired pod and names what is wrong otherwise.
func TestDatapathCheck(t *testing.T) {
	e := startDatapath(t)
	r, podNS := e.add(t, "web-0")
	ip := net.ParseIP(r.Ipv4Addr)
	check := func(addr string, ns int) *datapath.Reply {
		return exchange(t, dial(t, e.sock), &datapath.CheckRequest{ClientVersion: e.version, ContainerId: "c-web-0", IfName: "eth0",
			NetworkName: "aws-cni", Netns: "/test/web-0", Ipv4Addr: addr, HostVeth: r.HostVeth, RouteTableId: r.RouteTableId}, ns)
	}
	if c := check(r.Ipv4Addr, podNS); c.Error != nil || c.Phase != podwire.PhaseDone {
		t.Fatalf("CHECK of a wired pod: %+v", c.Error)
	}
	if c := check("10.0.2.14", podNS); c.Error == nil || !strings.Contains(c.Error.Details, "ipamd holds no 10.0.2.14") {
		t.Fatalf("CHECK of an address ipamd does not hold for it: %+v", c.Error)
	}
	from := podnet.Rules(ip, int(r.RouteTableId))[1]
	if err := e.node.RuleDel(from); err != nil {
		t.Fatal(err)
	}
	if c := check(r.Ipv4Addr, podNS); c.Error == nil || !strings.Contains(c.Error.Details, "from "+r.Ipv4Addr+" lookup 2") {
		t.Fatalf("CHECK without the 'from' rule: %+v", c.Error)
	}
	if err := e.node.RuleAdd(from); err != nil {
		t.Fatal(err)
	}
	other, _ := testenv.NewNetNS(t)
	if c := check(r.Ipv4Addr, int(other)); c.Error == nil || !strings.Contains(c.Error.Details, "pod interface eth0") {
		t.Fatalf("CHECK against another namespace: %+v", c.Error)
	}
	if err := e.node.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: r.HostVeth}}); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if c := check(r.Ipv4Addr, podNS); c.Error == nil || !strings.Contains(c.Error.Details, "host veth "+r.HostVeth) {
		t.Fatalf("CHECK without the host veth: %+v", c.Error)
	}
}

// GC releases, with their wiring and veths, the addresses of attachments
// the runtime does not list, and only those of its network.
func TestDatapathGC(t *testing.T) {
	e := startDatapath(t)
	keep, _ := e.add(t, "keep")
	drop, _ := e.add(t, "drop")
	other := datastore.Key{NetworkName: "other-net", ContainerID: "c-x", IfName: "eth0"}
	if _, err := e.ds.Assign(other, datastore.Meta{PodNamespace: "ns", PodName: "x"}); err != nil {
		t.Fatal(err)
	}
	r := exchange(t, dial(t, e.sock), &datapath.GCRequest{ClientVersion: e.version, NetworkName: "aws-cni",
		ValidAttachments: []*datapath.Attachment{{ContainerId: "c-keep", IfName: "eth0"}, {ContainerId: "c-drop", IfName: "eth1"}}})
	if r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("GC: %+v", r.Error)
	}
	if w := e.wired(t, keep.HostVeth, net.ParseIP(keep.Ipv4Addr)); w != (wired{true, true, true, true}) {
		t.Fatalf("a valid attachment after GC: %+v", w)
	}
	if w := e.wired(t, drop.HostVeth, net.ParseIP(drop.Ipv4Addr)); w != (wired{}) {
		t.Fatalf("an attachment not listed after GC: %+v, want nothing left", w)
	}
	for k, want := range map[datastore.Key]bool{{NetworkName: "aws-cni", ContainerID: "c-keep", IfName: "eth0"}: true,
		{NetworkName: "aws-cni", ContainerID: "c-drop", IfName: "eth0"}: false, other: true} {
		if _, held := e.ds.Lookup(k); held != want {
			t.Errorf("%v held after GC: %v, want %v", k, held, want)
		}
	}
}

// An ADD in flight when GC comes is not in the runtime's list, which may
// predate it: GC leaves it, and it stands once committed.
func TestDatapathGCLeavesADDsInFlight(t *testing.T) {
	e := startDatapath(t)
	c := e.agentTurn(t, "in-flight")
	r := exchange(t, dial(t, e.sock), &datapath.GCRequest{ClientVersion: e.version, NetworkName: "aws-cni", ValidAttachments: []*datapath.Attachment{}})
	if r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("GC: %+v", r.Error)
	}
	b, _ := proto.Marshal(&datapath.Continue{Applied: true}) // the policy agent's turn
	done := exchange(t, c, b)
	if done.Error != nil || done.Phase != podwire.PhaseDone {
		t.Fatalf("ADD after GC: %+v", done.Error)
	}
	commit(t, c)
	key := datastore.Key{NetworkName: "aws-cni", ContainerID: "c-in-flight", IfName: "eth0"}
	time.Sleep(100 * time.Millisecond) // the commit's read
	if _, held := e.ds.Lookup(key); !held {
		t.Fatal("GC released an ADD that was in flight")
	}
	if w := e.wired(t, done.HostVeth, net.ParseIP(done.Ipv4Addr)); w != (wired{true, true, true, true}) {
		t.Fatalf("the ADD's wiring after GC: %+v", w)
	}
}

// GC's request lists every valid attachment: a node's worth (here 2,000
// runtime-style IDs) is read whole, and a request past the limit is
// refused with the reason, releasing nothing.
func TestDatapathGCRequestSize(t *testing.T) {
	e := startDatapath(t)
	keep, _ := e.add(t, "keep")
	gc := &datapath.GCRequest{ClientVersion: e.version, NetworkName: "aws-cni"}
	for i := range 2000 {
		gc.ValidAttachments = append(gc.ValidAttachments, &datapath.Attachment{ContainerId: fmt.Sprintf("%064x", i), IfName: "eth0"})
	}
	gc.ValidAttachments = append(gc.ValidAttachments, &datapath.Attachment{ContainerId: "c-keep", IfName: "eth0"})
	if r := exchange(t, dial(t, e.sock), gc); r.Error != nil {
		t.Fatalf("GC listing %d attachments: %+v", len(gc.ValidAttachments), r.Error)
	}
	if _, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-keep", IfName: "eth0"}); !held {
		t.Fatal("GC released a valid attachment listed last")
	}
	for i := range 700 {
		gc.ValidAttachments = append(gc.ValidAttachments, &datapath.Attachment{ContainerId: fmt.Sprintf("%064x", 5000+i), IfName: "eth0"})
	}
	r := exchange(t, dial(t, e.sock), gc)
	if r.Error == nil || !strings.Contains(r.Error.Details, "larger than") {
		t.Fatalf("GC past the request limit: %+v", r)
	}
	if w := e.wired(t, keep.HostVeth, net.ParseIP(keep.Ipv4Addr)); w != (wired{true, true, true, true}) {
		t.Fatalf("a refused GC changed the node: %+v", w)
	}
}

// A DEL whose plugin gave up while it waited for the attachment's lock
// (held by an ADD in flight) does not run after that ADD: it would release
// the address the ADD just gave.
func TestDatapathAbandonedDelDoesNotRunLater(t *testing.T) {
	e := startDatapath(t)
	add := e.answered(t, "web-0") // holds the attachment's lock until the commit
	del := dial(t, e.sock)
	b, err := proto.Marshal(wrap(&datapath.DelRequest{ClientVersion: e.version, ContainerId: "c-web-0", IfName: "eth0", NetworkName: "aws-cni"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := del.Send(b); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the DEL waits for the lock
	del.Close()
	time.Sleep(100 * time.Millisecond) // ipamd sees the hang-up
	commit(t, add)
	time.Sleep(300 * time.Millisecond) // a DEL that still ran would have by now
	if _, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-web-0", IfName: "eth0"}); !held {
		t.Fatal("an abandoned DEL released the address of the ADD it waited for")
	}
}
