package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/protobuf/proto"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/internal/unixsock"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/proto/datapath"
)

// The datapath socket against the real kernel: a node namespace and pod
// namespaces made for the test, berth-cni's side of the exchange
// (podwire.Conn) as the client.

type dpEnv struct {
	ds      *datastore.Store
	cpPath  string
	sock    string
	nodeNS  netns.NsHandle
	node    *netlink.Handle
	version string
	stop    func() // closes the listener and waits for ServeDatapath
	cancel  func() // cancels ServeDatapath's context (ipamd shutting down)
}

func startDatapath(t *testing.T) *dpEnv {
	t.Helper()
	testenv.RequireRoot(t, "namespaces and veths")
	e := &dpEnv{ds: newDS(), cpPath: filepath.Join(t.TempDir(), "ipam.json"), sock: filepath.Join(t.TempDir(), "dp.sock"), version: "v9.9.9"}
	if err := e.ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.0/28")); err != nil {
		t.Fatal(err)
	}
	e.nodeNS, e.node = testenv.NewNetNS(t)
	cp := datastore.NewCheckpointer(e.cpPath, e.ds)
	s := New(e.ds, &testPool{ds: e.ds, growIn: -1}, cp, Node{NetworkPolicyMode: "standard"}, e.version, time.Second,
		NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.OnRelease(func(ip net.IP, table int, deleteVeth bool) {
		// ipamd's hook (run.go), in the test's node namespace.
		if err := testenv.OnThreadIn(e.nodeNS, func() error { return podnet.TeardownHost("", ip, table, deleteVeth) }); err != nil {
			t.Errorf("release hook: %v", err)
		}
	})
	ln, err := unixsock.ListenSeqpacket(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e.cancel = cancel
	go func() { done <- s.ServeDatapath(ctx, ln, e.nodeNS) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			ln.Close()
			if err := <-done; err != nil {
				t.Errorf("ServeDatapath: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

func (e *dpEnv) request(pod string) *datapath.AddRequest {
	return &datapath.AddRequest{ClientVersion: e.version, ContainerId: "c-" + pod, IfName: "eth0", NetworkName: "aws-cni",
		PodNamespace: "ns", PodName: pod, Netns: "/test/" + pod, VethPrefix: "eni", Mtu: 9001}
}

func dial(t *testing.T, sock string) *podwire.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, err := podwire.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wrap is the Request that carries a command.
func wrap(m proto.Message) proto.Message {
	switch c := m.(type) {
	case *datapath.AddRequest:
		return &datapath.Request{Command: &datapath.Request_Add{Add: c}}
	case *datapath.DelRequest:
		return &datapath.Request{Command: &datapath.Request_Del{Del: c}}
	case *datapath.CheckRequest:
		return &datapath.Request{Command: &datapath.Request_Check{Check: c}}
	case *datapath.GCRequest:
		return &datapath.Request{Command: &datapath.Request_Gc{Gc: c}}
	}
	return m
}

// exchange sends m (a command, a message, or raw bytes) with fds and
// returns ipamd's next reply.
func exchange(t *testing.T, c *podwire.Conn, m any, fds ...int) *datapath.Reply {
	t.Helper()
	b, ok := m.([]byte)
	if !ok {
		var err error
		if b, err = proto.Marshal(wrap(m.(proto.Message))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send(b, fds...); err != nil {
		t.Fatal(err)
	}
	rb, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	r := &datapath.Reply{}
	if err := proto.Unmarshal(rb, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDatapathAddWiresThePod(t *testing.T) {
	e := startDatapath(t)
	podNS, pod := testenv.NewNetNS(t)
	r := exchange(t, dial(t, e.sock), e.request("web-0"), int(podNS))
	if r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("reply %+v (error %v)", r, r.Error)
	}
	ip := net.ParseIP(r.Ipv4Addr).To4()
	if ip == nil || r.HostVeth != vethname.For("eni", "ns", "web-0") || r.DeviceNumber != 1 || r.RouteTableId != 2 || r.NetworkPolicyMode != "standard" {
		t.Fatalf("reply %+v", r)
	}
	// The node's side: the veth up with the MAC the pod's neighbour names,
	// the /32 route to the pod, both rules.
	host, err := e.node.LinkByName(r.HostVeth)
	if err != nil || host.Attrs().Flags&net.FlagUp == 0 || host.Attrs().HardwareAddr.String() != r.HostMac || host.Attrs().MTU != 9001 {
		t.Fatalf("host veth: %v %+v", err, host)
	}
	routes, err := e.node.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: podnet.HostNet(ip)}, netlink.RT_FILTER_DST)
	if err != nil || len(routes) != 1 || routes[0].LinkIndex != host.Attrs().Index {
		t.Fatalf("host route to %s: %v %+v", ip, err, routes)
	}
	rules, err := e.node.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var to, from bool
	for _, ru := range rules {
		to = to || (ru.Priority == podnet.ToPodPriority && ru.Dst != nil && ru.Dst.IP.Equal(ip) && ru.Table == podnet.MainTable)
		from = from || (ru.Priority == podnet.FromPodPriority && ru.Src != nil && ru.Src.IP.Equal(ip) && ru.Table == 2)
	}
	if !to || !from {
		t.Fatalf("rules to=%v from=%v: %+v", to, from, rules)
	}
	// The pod's side.
	eth0, err := pod.LinkByName("eth0")
	if err != nil || eth0.Attrs().Flags&net.FlagUp == 0 || eth0.Attrs().HardwareAddr.String() != r.PodMac {
		t.Fatalf("pod eth0: %v %+v", err, eth0)
	}
	addrs, _ := pod.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || !addrs[0].IP.Equal(ip) || addrs[0].Mask.String() != net.CIDRMask(32, 32).String() {
		t.Fatalf("pod addresses %+v", addrs)
	}
	neigh, _ := pod.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
	if len(neigh) != 1 || !neigh[0].IP.Equal(podnet.Gateway) || neigh[0].State != netlink.NUD_PERMANENT || neigh[0].HardwareAddr.String() != r.HostMac {
		t.Fatalf("pod neighbours %+v", neigh)
	}
	// On disk before the reply.
	b, err := os.ReadFile(e.cpPath)
	if err != nil || !strings.Contains(string(b), `"ipv4":"`+r.Ipv4Addr+`"`) || !strings.Contains(string(b), `"containerID":"c-web-0"`) {
		t.Fatalf("checkpoint %s: %v", b, err)
	}
}

// commit is berth-cni's last word on an ADD it will report: ipamd keeps
// the pod's wiring, and the plugin hangs up.
func commit(t *testing.T, c *podwire.Conn) {
	t.Helper()
	b, _ := proto.Marshal(&datapath.Continue{Applied: true})
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// ipamd keeps the pod's wiring only once the plugin commits: not when it
// hangs up after the answer, nor when it sends an error instead.
func TestDatapathKeepsOnlyCommittedADDs(t *testing.T) {
	e := startDatapath(t)
	commit(t, e.answered(t, "kept"))
	key := datastore.Key{NetworkName: "aws-cni", ContainerID: "c-kept", IfName: "eth0"}
	time.Sleep(200 * time.Millisecond) // an undo, were there one, takes a few ms
	if _, held := e.ds.Lookup(key); !held {
		t.Fatal("a committed ADD lost its address")
	}
	if _, err := e.node.LinkByName(vethname.For("eni", "ns", "kept")); err != nil {
		t.Fatalf("a committed ADD lost its veth: %v", err)
	}

	// The plugin exits with an error after the answer (bad configuration,
	// say): it hangs up without committing.
	e.answered(t, "failed").Close()
	e.gone(t, "failed")

	// The plugin sends an error instead of the commit: ipamd undoes, then
	// hangs up.
	c := e.answered(t, "withdrawn")
	b, _ := proto.Marshal(&datapath.Continue{Error: "berth-cni withdrew the request"})
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Recv(); err == nil {
		t.Fatalf("ipamd answered a withdrawal with %x instead of hanging up", m)
	}
	e.gone(t, "withdrawn")
}

// ServeDatapath returns only once the ADDs in flight have ended: one the
// plugin abandoned is undone, its address released and checkpointed, before
// the server is gone (ipamd's shutdown; the tests' temp directories, which
// a late checkpoint used to recreate).
func TestServeDatapathWaitsForADDsInFlight(t *testing.T) {
	e := startDatapath(t)
	e.answered(t, "abandoned").Close() // no commit: ipamd undoes the ADD
	e.stop()
	if _, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-abandoned", IfName: "eth0"}); held {
		t.Fatal("ServeDatapath returned before the abandoned ADD gave its address back")
	}
	allocs, err := datastore.ReadCheckpoint(e.cpPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 0 {
		t.Fatalf("ServeDatapath returned before the checkpoint dropped the abandoned ADD: %+v", allocs)
	}
	if _, err := e.node.LinkByName(vethname.For("eni", "ns", "abandoned")); err == nil {
		t.Fatal("ServeDatapath returned before the abandoned ADD's veth was removed")
	}
}

// An ADD of an attachment waits for the one before it to be decided, and
// one that fails does not take back an address the pod already held.
func TestDatapathOneADDOfAPodAtATime(t *testing.T) {
	e := startDatapath(t)
	podNS, _ := testenv.NewNetNS(t)
	first := dial(t, e.sock)
	r1 := exchange(t, first, e.request("retried"), int(podNS))
	if r1.Phase != podwire.PhaseDone {
		t.Fatalf("first reply %+v", r1)
	}
	// The runtime retries while the first is undecided: the retry waits.
	second := dial(t, e.sock)
	b, _ := proto.Marshal(wrap(e.request("retried")))
	if err := second.Send(b, int(podNS)); err != nil {
		t.Fatal(err)
	}
	got := make(chan *datapath.Reply, 1)
	go func() {
		rb, err := second.Recv()
		r := &datapath.Reply{}
		if err == nil {
			_ = proto.Unmarshal(rb, r)
		}
		got <- r
	}()
	select {
	case r := <-got:
		t.Fatalf("the retry was answered while the first ADD was undecided: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	first.Close() // the first plugin is killed: undone, then the retry runs
	r2 := <-got
	if r2.Error != nil || r2.Phase != podwire.PhaseDone || r2.Ipv4Addr == "" {
		t.Fatalf("retry reply %+v", r2)
	}
	commit(t, second)

	// ADD again without DEL (a runtime that lost the answer): the pod has
	// eth0 already, so the ADD fails, as CNI requires, and takes neither
	// the pod's links nor its address.
	third := dial(t, e.sock)
	r3 := exchange(t, third, e.request("retried"), int(podNS))
	if r3.Error == nil || !strings.Contains(r3.Error.Details, "already exists") {
		t.Fatalf("ADD without DEL: %+v, want an error that eth0 exists", r3)
	}
	third.Close()
	e.stop() // every ADD, and its undo, has ended
	if _, err := e.node.LinkByName(r2.HostVeth); err != nil {
		t.Fatalf("the refused ADD took the pod's veth: %v", err)
	}
	a, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-retried", IfName: "eth0"})
	if !held || a.IP.String() != r2.Ipv4Addr {
		t.Fatalf("after a failed ADD without DEL the pod holds %v (%v), want %s", a.IP, held, r2.Ipv4Addr)
	}
}

// gone checks that an ADD that did not complete left nothing: no veth on
// the node, no address held, none in the checkpoint.
func (e *dpEnv) gone(t *testing.T, pod string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, "the failed ADD of "+pod+" to be undone", func() bool {
		_, err := e.node.LinkByName(vethname.For("eni", "ns", pod))
		_, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-" + pod, IfName: "eth0"})
		b, _ := os.ReadFile(e.cpPath)
		return err != nil && !held && !strings.Contains(string(b), `"c-`+pod+`"`)
	})
}

// answered runs an ADD of pod up to ipamd's answer and returns the
// connection, before the plugin's commit.
func (e *dpEnv) answered(t *testing.T, pod string) *podwire.Conn {
	t.Helper()
	podNS, _ := testenv.NewNetNS(t)
	c := dial(t, e.sock)
	if r := exchange(t, c, e.request(pod), int(podNS)); r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("reply %+v (error %v)", r, r.Error)
	}
	return c
}

// agentTurn starts an ADD of pod with the policy agent's turn and
// returns the connection at that turn.
func (e *dpEnv) agentTurn(t *testing.T, pod string) *podwire.Conn {
	t.Helper()
	podNS, _ := testenv.NewNetNS(t)
	req := e.request(pod)
	req.PolicyAgent = true
	c := dial(t, e.sock)
	if r := exchange(t, c, req, int(podNS)); r.Phase != podwire.PhaseLinks {
		t.Fatalf("first reply %+v", r)
	}
	return c
}

func TestDatapathPolicyAgentTurn(t *testing.T) {
	e := startDatapath(t)
	podNS, pod := testenv.NewNetNS(t)
	req := e.request("np-0")
	req.PolicyAgent = true
	c := dial(t, e.sock)
	r := exchange(t, c, req, int(podNS))
	if r.Phase != podwire.PhaseLinks || r.NetworkPolicyMode != "standard" || r.HostVeth != vethname.For("eni", "ns", "np-0") {
		t.Fatalf("first reply %+v", r)
	}
	// The agent's turn: the veth is there, the pod has no address yet.
	if _, err := e.node.LinkByName(r.HostVeth); err != nil {
		t.Fatalf("no host veth during the agent's turn: %v", err)
	}
	eth0, err := pod.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := pod.AddrList(eth0, netlink.FAMILY_V4); len(addrs) != 0 {
		t.Fatalf("the pod has an address before its policy: %+v", addrs)
	}
	r = exchange(t, c, &datapath.Continue{Applied: true})
	if r.Error != nil || r.Phase != podwire.PhaseDone || r.Ipv4Addr == "" {
		t.Fatalf("final reply %+v", r)
	}
	commit(t, c)

	// The agent failed: the ADD fails and is undone.
	c = e.agentTurn(t, "np-1")
	r = exchange(t, c, &datapath.Continue{Error: "EnforceNpToPod: agent down"})
	if r.Error == nil || r.Error.Code != 999 || r.Error.Msg != "network policy setup failed" || !strings.Contains(r.Error.Details, "agent down") {
		t.Fatalf("reply %+v", r)
	}
	e.gone(t, "np-1")

	// berth-cni is killed during the agent's turn: the same.
	c = e.agentTurn(t, "np-2")
	c.Close()
	e.gone(t, "np-2")
}

func TestDatapathBadRequests(t *testing.T) {
	e := startDatapath(t)
	podNS, _ := testenv.NewNetNS(t)
	file, err := os.CreateTemp(t.TempDir(), "not-a-namespace")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	good := e.request("bad")
	mtu := e.request("bad")
	mtu.Mtu = 100
	old := e.request("bad")
	old.ClientVersion = "v9.9.8"
	noPod := e.request("bad")
	noPod.PodName = ""
	multiNIC := e.request("bad")
	multiNIC.RequiresMultiNicAttachment = true
	goodBytes, err := proto.Marshal(wrap(good))
	if err != nil {
		t.Fatal(err)
	}
	// Field 99, a varint: not in datapath.Request.
	unknown := append(append([]byte{}, goodBytes...), 0x98, 0x06, 0x01)
	// Field 99 inside the AddRequest (an older or newer plugin's field).
	addBytes, err := proto.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	addBytes = append(addBytes, 0x98, 0x06, 0x01)
	nested := append([]byte{0x0a, byte(len(addBytes))}, addBytes...)
	// What a berth-cni before the Request wrapper sent: a bare AddRequest.
	bare := addBytes[:len(addBytes)-3]
	for _, tc := range []struct {
		name string
		req  any
		fds  []int
		code uint32
		want string
	}{
		{"unknown field", unknown, []int{int(podNS)}, 6, "fields this ipamd does not know"},
		{"unknown field of the ADD", nested, []int{int(podNS)}, 6, "fields this ipamd does not know"},
		{"bare AddRequest", bare, []int{int(podNS)}, 6, "another release"},
		{"CHECK without an address", &datapath.CheckRequest{ClientVersion: e.version, ContainerId: "c", IfName: "eth0", NetworkName: "n", HostVeth: "eni1"}, []int{int(podNS)}, 7, "IPv4 address"},
		{"CHECK without a namespace", &datapath.CheckRequest{ClientVersion: e.version, ContainerId: "c", IfName: "eth0", NetworkName: "n", HostVeth: "eni1", Ipv4Addr: "10.0.2.1"}, nil, 8, "no network namespace descriptor"},
		{"DEL without ids", &datapath.DelRequest{ClientVersion: e.version}, nil, 7, "containerID, ifName and networkName are required"},
		{"GC without a network", &datapath.GCRequest{ClientVersion: e.version}, nil, 7, "network's name"},
		{"DEL of another version", &datapath.DelRequest{ClientVersion: "v9.9.8", ContainerId: "c", IfName: "eth0", NetworkName: "n"}, nil, 999, `does not accept berth-cni "v9.9.8"`},
		{"undecodable", []byte{0x0a, 0x40, 'x'}, []int{int(podNS)}, 6, "proto"},
		{"missing ids", &datapath.AddRequest{ClientVersion: e.version}, []int{int(podNS)}, 7, "containerID, ifName and networkName are required"},
		{"bad mtu", mtu, []int{int(podNS)}, 7, "mtu 100"},
		{"no pod name", noPod, []int{int(podNS)}, 4, "K8S_POD_NAMESPACE and K8S_POD_NAME are required"},
		{"no namespace", good, nil, 8, "no network namespace descriptor"},
		{"not a namespace", good, []int{int(file.Fd())}, 8, "not a network namespace"},
		{"other version", old, []int{int(podNS)}, 999, `does not accept berth-cni "v9.9.8"`},
		{"multi-NIC pod", multiNIC, []int{int(podNS)}, 2, "multi-nic-attachment"},
	} {
		r := exchange(t, dial(t, e.sock), tc.req, tc.fds...)
		if r.Error == nil || r.Error.Code != tc.code || !strings.Contains(r.Error.Details, tc.want) {
			t.Errorf("%s: reply %+v error %+v, want code %d with %q", tc.name, r, r.Error, tc.code, tc.want)
		}
	}
	if n := len(e.ds.Allocations()); n != 0 {
		t.Fatalf("bad requests hold %d addresses", n)
	}
}

func TestDatapathNetlinkFailureIsUndone(t *testing.T) {
	e := startDatapath(t)
	podNS, pod := testenv.NewNetNS(t)
	// The pod already has an eth0: the veth's peer cannot be created.
	if err := pod.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"}); err != nil {
		t.Fatal(err)
	}
	r := exchange(t, dial(t, e.sock), e.request("dup"), int(podNS))
	if r.Error == nil || r.Error.Code != 999 || r.Error.Msg != "pod network setup failed" {
		t.Fatalf("reply %+v", r)
	}
	e.gone(t, "dup")
	// The server goes on serving.
	podNS2, _ := testenv.NewNetNS(t)
	if r := exchange(t, dial(t, e.sock), e.request("next"), int(podNS2)); r.Error != nil || r.Phase != podwire.PhaseDone {
		t.Fatalf("next pod %+v %v", r, r.Error)
	}
}

// A commit that arrives together with the plugin's hang-up (it commits,
// then exits at once) is a commit: the hang-up counts only after every
// message before it. (A select between the message and a cancelled
// context, both ready, lost the commit in about half the runs.)
func TestNextWordReadsACommitBeforeTheHangUp(t *testing.T) {
	for range 100 {
		cont := make(chan *datapath.Continue, 2)
		cont <- &datapath.Continue{Applied: true}
		close(cont)
		if m, err := nextWord(context.Background(), cont, time.Second); err != nil || !m.Applied {
			t.Fatalf("nextWord = %+v, %v; want the commit", m, err)
		}
		if _, err := nextWord(context.Background(), cont, time.Second); err == nil || !strings.Contains(err.Error(), "hung up") {
			t.Fatalf("after the last message: %v, want a hang-up", err)
		}
	}
	if _, err := nextWord(context.Background(), make(chan *datapath.Continue), 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("silent plugin: %v", err)
	}
}

// ipamd shutting down cancels the ADDs in flight: one waiting for the
// plugin's turn is undone at once, not after the turn's two minutes, and
// ServeDatapath returns.
func TestServeDatapathCancelsADDsOnShutdown(t *testing.T) {
	e := startDatapath(t)
	_ = e.agentTurn(t, "stuck")
	e.cancel()
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second): // the turn's own timeout is two minutes
		t.Fatal("ServeDatapath did not return after its context ended")
	}
	e.gone(t, "stuck")
}

// ipamd stopping right after its answer: a commit the plugin could send is
// kept, and one it could not fails at the plugin. Before, ipamd could
// undo an ADD whose commit the plugin had sent, and so reported, leaving
// a running pod without its network and its address free for another.
func TestDatapathCommitRacingShutdown(t *testing.T) {
	for i := range 6 {
		e := startDatapath(t)
		pod := fmt.Sprintf("late-%d", i)
		c := e.answered(t, pod)
		e.cancel()
		if i%2 == 1 {
			time.Sleep(20 * time.Millisecond) // ipamd gives up before the commit
		}
		b, _ := proto.Marshal(&datapath.Continue{Applied: true})
		sendErr := c.Send(b)
		e.stop()
		_, held := e.ds.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c-" + pod, IfName: "eth0"})
		_, linkErr := e.node.LinkByName(vethname.For("eni", "ns", pod))
		switch {
		case sendErr == nil && (!held || linkErr != nil):
			t.Fatalf("%s: the commit was sent, but ipamd undid the ADD (held %v, veth %v)", pod, held, linkErr)
		case sendErr != nil && held:
			t.Fatalf("%s: the commit failed (%v), but ipamd kept the address", pod, sendErr)
		}
		t.Logf("%s: commit sent: %v", pod, sendErr == nil)
	}
}

// berth-cni connects before it has put its ADD together and hangs up if
// that fails: ipamd reads that as a hang-up, not as a bad request to warn
// about and answer.
func TestReadRequestHangUp(t *testing.T) {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "dp.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUnix("unixpacket", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, fd, rerr := readRequest(s); rerr != errHungUp || fd != -1 {
		t.Fatalf("readRequest after a hang-up: %+v, descriptor %d; want errHungUp", rerr, fd)
	}
}
