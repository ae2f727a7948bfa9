package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/internal/version"
	"github.com/berth-io/berth/proto/datapath"
)

// A prevResult with null entries is bad input, not a crash: DEL and CHECK
// read past them.
func TestPrevResultWithNulls(t *testing.T) {
	conf, _, err := loadNetConf([]byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni",
		"prevResult":{"cniVersion":"1.1.0","interfaces":[null,{"name":"enia"},null],"ips":[null,{"address":"10.0.0.5/32"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := fromPrev(conf)
	if err != nil {
		t.Fatal(err)
	}
	if st.hostName != "enia" || !st.ip.Equal(net.IPv4(10, 0, 0, 5)) {
		t.Fatalf("read %+v", st)
	}
}

// The route table a DEL without ipamd tears down with, from each layout a
// node may hold pods of: berth's and the VPC CNI's since v1.20 (the pod
// interface's "mac"), berth's before this layout (the dummy's "mac"), and
// the VPC CNI's before v1.20 (from the dummy's device number).
func TestPrevResultLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, eth0Mac, dummyMac, device string
		table                           int
	}{
		{"berth and VPC CNI v1.20+", "3", "0", "2", 3},
		{"berth and VPC CNI v1.20+, primary ENI", "254", "0", "0", 254},
		{"berth before", "1e:35:d4:0a:86:63", "3", "2", 3},
		{"VPC CNI before v1.20", "", "0", "2", 3},
		{"VPC CNI before v1.20, primary ENI", "", "0", "0", 254},
	} {
		conf, _, err := loadNetConf(fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"aws-cni","type":"berth-cni",
			"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eni6ccf8ece94d","mac":"4a:d8:3a:50:55:33"},
			{"name":"eth0","mac":%q,"sandbox":"/var/run/netns/x"},{"name":"dummy6ccf8ece94d","mac":%q,"sandbox":%q}],
			"ips":[{"address":"10.0.3.17/32","interface":1}]}}`, tc.eth0Mac, tc.dummyMac, tc.device))
		if err != nil {
			t.Fatal(err)
		}
		st, err := fromPrev(conf)
		if err != nil {
			t.Fatal(err)
		}
		if st.table != tc.table || st.hostName != "eni6ccf8ece94d" || !st.ip.Equal(net.IPv4(10, 0, 3, 17)) {
			t.Errorf("%s: read %+v, want table %d", tc.name, st, tc.table)
		}
	}
}

// Without the pod's name the host veth cannot be named: ADD says which
// arguments are missing (code 4), before it reaches ipamd.
func TestAddNeedsThePodsName(t *testing.T) {
	for _, a := range []string{"", "K8S_POD_NAMESPACE=ns", "IgnoreUnknown=1;K8S_POD_NAME=p"} {
		err := cmdAdd(&skel.CmdArgs{ContainerID: "c1", Netns: "/var/run/netns/x", IfName: "eth0", Args: a,
			StdinData: []byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":"/nonexistent"}`)})
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("CNI_ARGS %q: %v, want code %d", a, err, types.ErrInvalidEnvironmentVariables)
		}
	}
}

// dpCall is one command a fakeDatapath read: the request, and whether a
// network namespace descriptor came with it.
type dpCall struct {
	req   *datapath.Request
	netns bool
}

// fakeDatapath answers every command on a new datapath socket with reply
// and hands on what it read.
func fakeDatapath(t *testing.T, reply *datapath.Reply) (string, <-chan dpCall) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dp.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	calls := make(chan dpCall, 16)
	rb, err := proto.Marshal(reply)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			buf, oob := make([]byte, 16<<10), make([]byte, unix.CmsgSpace(4))
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			call := dpCall{req: &datapath.Request{}}
			if err == nil {
				err = proto.Unmarshal(buf[:n], call.req)
			}
			if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) == 1 {
				if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) == 1 {
					typ, terr := unix.IoctlRetInt(fds[0], unix.NS_GET_NSTYPE)
					call.netns = terr == nil && typ == unix.CLONE_NEWNET
					unix.Close(fds[0])
				}
			}
			if err == nil {
				calls <- call
				_, _ = c.Write(rb)
			}
			c.Close()
		}
	}()
	return sock, calls
}

// DEL asks ipamd, which releases the address and tears the host side down
// (ipamd/server's tests); the plugin touches the kernel only when no ipamd
// is listening, tearing down what prevResult names, and not even then when
// ipamd's checkpoint gives the address to another attachment. An ipamd that
// answers with an error, or not at all, is left to release it later.
func TestDelAsksIpamdFirst(t *testing.T) {
	testenv.RequireRoot(t, "rules in a network namespace")
	ns, h := testenv.NewNetNS(t)
	ip := net.IPv4(10, 0, 9, 9)
	const veth = "eni0123456789a"
	wire := func() {
		t.Helper()
		if _, err := h.LinkByName(veth); err != nil {
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth, Flags: net.FlagUp}, PeerName: "peer0"}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := h.LinkByName(veth)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
		for _, r := range podnet.Rules(ip, 3) {
			if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				t.Fatal(err)
			}
		}
	}
	// wired is what is left: the veth, the host route, the two rules.
	wired := func() string {
		t.Helper()
		_, err := h.LinkByName(veth)
		out := fmt.Sprintf("veth %v", err == nil)
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: podnet.HostNet(ip)}, netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf(" route %v", len(rs) > 0)
		rules, err := h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		to, from := false, false
		for _, r := range rules {
			to = to || (r.Priority == podnet.ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(ip))
			from = from || (r.Priority == podnet.FromPodPriority && r.Src != nil && r.Src.IP.Equal(ip) && r.Table == 3)
		}
		return out + fmt.Sprintf(" to %v from %v", to, from)
	}
	const all, none = "veth true route true to true from true", "veth false route false to false from false"
	cpPath := filepath.Join(t.TempDir(), "ipam.json")
	prevWithVeth := fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":%q},{"name":"eth0","sandbox":"/gone"},{"name":"dummy0123456789a","mac":"3","sandbox":"1"}],
		"ips":[{"address":"10.0.9.9/32","interface":1}]}`, veth)
	prevNoVeth := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/gone"},{"name":"eth1","sandbox":"/gone"},{"name":"dummy0123456789a","mac":"3","sandbox":"1"}],
		"ips":[{"address":"10.0.9.9/32","interface":0}]}`
	del := func(socket, netns, prev string) error {
		t.Helper()
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q,"npaSocket":%q,"ipamStateFile":%q,"prevResult":%s}`,
			socket, filepath.Join(t.TempDir(), "npa.sock"), cpPath, prev)
		return testenv.OnThreadIn(ns, func() error {
			return cmdDel(&skel.CmdArgs{ContainerID: "old", Netns: netns, IfName: "eth0", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1", StdinData: []byte(conf)})
		})
	}
	mustDel := func(socket, netns, prev string) {
		t.Helper()
		if err := del(socket, netns, prev); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	down := filepath.Join(t.TempDir(), "down.sock")
	// A socket file nobody listens on (ipamd killed): ECONNREFUSED.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	// ipamd answers: the plugin leaves the kernel to it.
	sock, calls := fakeDatapath(t, &datapath.Reply{Phase: "done", Ipv4Addr: ip.String()})
	wire()
	for _, netns := range []string{"/gone", t.TempDir()} {
		mustDel(sock, netns, prevWithVeth)
		got := (<-calls).req.GetDel()
		want := &datapath.DelRequest{ClientVersion: version.Version, ContainerId: "old", IfName: "eth0", NetworkName: "aws-cni",
			PodNamespace: "ns", PodName: "p", PodUid: "u1", NetnsGone: netns == "/gone", Reason: "PodDeleted"}
		if !proto.Equal(got, want) {
			t.Fatalf("DEL sent %v, want %v", got, want)
		}
		if w := wired(); w != all {
			t.Fatalf("DEL that ipamd answered left %q; want everything left to ipamd", w)
		}
	}
	// ipamd answers with an error, or not in time: nothing is touched
	// (ipamd releases it all once the veth is gone), and the DEL succeeds.
	errSock, _ := fakeDatapath(t, &datapath.Reply{Error: &datapath.Error{Code: 999, Msg: "incompatible berth-cni", Details: "install the berth-cni of the same release"}})
	mustDel(errSock, "/gone", prevWithVeth)
	if w := wired(); w != all {
		t.Fatalf("DEL that ipamd refused left %q; want nothing touched", w)
	}
	// ipamd accepts the DEL and is gone before it answers (killed
	// mid-release): the same.
	dying := filepath.Join(t.TempDir(), "dying.sock")
	dl, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: dying, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	go func() {
		for {
			c, err := dl.AcceptUnix()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 1<<16))
			c.Close()
		}
	}()
	mustDel(dying, "/gone", prevWithVeth)
	if w := wired(); w != all {
		t.Fatalf("DEL whose ipamd hung up: %q left; want nothing touched", w)
	}
	// No ipamd: prevResult says what to remove; the veth only when the
	// namespace is gone.
	for _, socket := range []string{down, stale} {
		wire()
		mustDel(socket, "/gone", prevWithVeth)
		if w := wired(); w != none {
			t.Fatalf("DEL with no ipamd (%s), namespace gone: %q left", filepath.Base(socket), w)
		}
	}
	wire()
	mustDel(down, t.TempDir(), prevWithVeth)
	if w := wired(); w != "veth true route false to false from false" {
		t.Fatalf("DEL with no ipamd, namespace there: %q left, want only the veth", w)
	}
	wire()
	mustDel(down, "/gone", prevNoVeth)
	if w := wired(); w != none {
		t.Fatalf("DEL with no ipamd, no veth in prevResult: %q left, want the veth that routes the address gone too", w)
	}
	// No ipamd, and its checkpoint gives the address to another pod (this
	// DEL is a retry after ipamd released it): that pod's wiring stays.
	wire()
	cp := `{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"new","ifName":"eth0","ipv4":"10.0.9.9"}]}`
	if err := os.WriteFile(cpPath, []byte(cp), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, prev := range []string{prevWithVeth, prevNoVeth} {
		mustDel(down, "/gone", prev)
		if w := wired(); w != all {
			t.Fatalf("DEL with no ipamd of an address now another pod's: %q left, want everything kept", w)
		}
	}
	// A checkpoint that cannot be read cannot say whose the address is:
	// nothing is touched either.
	if err := os.WriteFile(cpPath, []byte(`{"version":"vpc-cni-ipam/1","allocations":[{"networkName"`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDel(down, "/gone", prevWithVeth)
	if w := wired(); w != all {
		t.Fatalf("DEL with no ipamd and an unreadable checkpoint: %q left, want everything kept", w)
	}
}

// inNS runs f on a thread in ns, as the runtime runs the plugin in the
// node's namespace, and fails the test on its error.
func inNS(t *testing.T, ns netns.NsHandle, f func() error) {
	t.Helper()
	if err := testenv.OnThreadIn(ns, f); err != nil {
		t.Fatal(err)
	}
}

// CHECK sends prevResult's address, host veth and table with the pod's
// namespace to ipamd (whose checks ipamd/server's tests cover) and returns
// its verdict as a CNI error.
func TestCheckAsksIpamd(t *testing.T) {
	testenv.RequireRoot(t, "network namespaces")
	pod, _ := testenv.NewNetNS(t)
	podPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(pod))
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"eni0123456789a"},{"name":"eth0","sandbox":"x"},{"name":"dummy0123456789a","mac":"3","sandbox":"1"}],
		"ips":[{"address":"10.0.7.7/32","interface":1}]}`
	check := func(sock, netns, prev string) error {
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q,"prevResult":%s}`, sock, prev)
		return cmdCheck(&skel.CmdArgs{ContainerID: "c1", Netns: netns, IfName: "eth0", StdinData: []byte(conf)})
	}
	sock, calls := fakeDatapath(t, &datapath.Reply{Phase: "done"})
	if err := check(sock, podPath, prev); err != nil {
		t.Fatalf("CHECK that ipamd passes: %v", err)
	}
	call := <-calls
	want := &datapath.CheckRequest{ClientVersion: version.Version, ContainerId: "c1", IfName: "eth0", NetworkName: "aws-cni", Netns: podPath,
		Ipv4Addr: "10.0.7.7", HostVeth: "eni0123456789a", RouteTableId: 3}
	if !proto.Equal(call.req.GetCheck(), want) || !call.netns {
		t.Fatalf("CHECK sent %v (namespace attached: %v), want %v with the namespace", call.req, call.netns, want)
	}
	failSock, _ := fakeDatapath(t, &datapath.Reply{Error: &datapath.Error{Code: 999, Msg: "CHECK failed", Details: "no rule 'from 10.0.7.7 lookup 3' (priority 1536)"}})
	for _, tc := range []struct {
		name, sock, netns, prev string
		code                    uint
		want                    string
	}{
		{"ipamd's verdict", failSock, podPath, prev, 999, "no rule 'from 10.0.7.7 lookup 3'"},
		{"ipamd down", filepath.Join(t.TempDir(), "down.sock"), podPath, prev, types.ErrTryAgainLater, "ipamd is not reachable"},
		{"no such netns", sock, filepath.Join(t.TempDir(), "none"), prev, types.ErrInvalidNetNS, "none"},
		{"no host veth in prevResult", sock, podPath, `{"cniVersion":"1.1.0","ips":[{"address":"10.0.7.7/32"}]}`, types.ErrInvalidNetworkConfig, ""},
	} {
		var e *types.Error
		if err := check(tc.sock, tc.netns, tc.prev); !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Details, tc.want) {
			t.Errorf("%s: %v, want code %d with %q", tc.name, err, tc.code, tc.want)
		}
	}
	if len(calls) != 0 {
		t.Fatal("a CHECK that could not be asked reached ipamd")
	}
}

// GC sends the network and the runtime's valid attachments to ipamd
// (which releases the rest; ipamd/server's tests) and returns its error.
func TestGCAsksIpamd(t *testing.T) {
	sock, calls := fakeDatapath(t, &datapath.Reply{Phase: "done"})
	gc := func(sock string) error {
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q,
			"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"eth1"}]}`, sock)
		return cmdGC(&skel.CmdArgs{StdinData: []byte(conf)})
	}
	if err := gc(sock); err != nil {
		t.Fatal(err)
	}
	want := &datapath.GCRequest{ClientVersion: version.Version, NetworkName: "aws-cni",
		ValidAttachments: []*datapath.Attachment{{ContainerId: "c1", IfName: "eth0"}, {ContainerId: "c2", IfName: "eth1"}}}
	if got := (<-calls).req.GetGc(); !proto.Equal(got, want) {
		t.Fatalf("GC sent %v, want %v", got, want)
	}
	var e *types.Error
	if err := gc(filepath.Join(t.TempDir(), "down.sock")); !errors.As(err, &e) || e.Code != types.ErrTryAgainLater {
		t.Fatalf("GC with ipamd down: %v, want code %d", err, types.ErrTryAgainLater)
	}
	failSock, _ := fakeDatapath(t, &datapath.Reply{Error: &datapath.Error{Code: 11, Msg: "GC incomplete", Details: "persist 2 releases: disk full"}})
	if err := gc(failSock); !errors.As(err, &e) || e.Code != 11 || !strings.Contains(e.Details, "disk full") {
		t.Fatalf("GC that ipamd could not finish: %v", err)
	}
	// The spec's text also names the list cni.dev/attachments: it counts.
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q,
		"cni.dev/attachments":[{"containerID":"c3","ifname":"eth0"}]}`, sock)
	if err := cmdGC(&skel.CmdArgs{StdinData: []byte(conf)}); err != nil {
		t.Fatal(err)
	}
	want = &datapath.GCRequest{ClientVersion: version.Version, NetworkName: "aws-cni", ValidAttachments: []*datapath.Attachment{{ContainerId: "c3", IfName: "eth0"}}}
	if got := (<-calls).req.GetGc(); !proto.Equal(got, want) {
		t.Fatalf("GC with cni.dev/attachments sent %v, want %v", got, want)
	}
	// No list at all is not "nothing is valid": ipamd is not asked.
	conf = fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q}`, sock)
	if err := cmdGC(&skel.CmdArgs{StdinData: []byte(conf)}); !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("GC without a list: %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
	select {
	case c := <-calls:
		t.Fatalf("GC without a list asked ipamd: %v", c.req)
	default:
	}
	// An empty list is a node without pods: everything goes.
	conf = fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","datapathSocket":%q,"cni.dev/valid-attachments":[]}`, sock)
	if err := cmdGC(&skel.CmdArgs{StdinData: []byte(conf)}); err != nil {
		t.Fatal(err)
	}
	if got := (<-calls).req.GetGc(); len(got.ValidAttachments) != 0 {
		t.Fatalf("GC with an empty list sent %v", got)
	}
}

// The plugin's log follows AWS_VPC_K8S_PLUGIN_LOG_LEVEL as aws-node writes
// it into the conflist (DEBUG, INFO, WARN, ERROR, any case); an unknown
// level logs at info.
func TestPluginLogLevel(t *testing.T) {
	for level, want := range map[string]string{"Debug": "diwe", "INFO": "iwe", "warn": "we", "ERROR": "e", "chatty": "iwe"} {
		path := filepath.Join(t.TempDir(), "plugin.log")
		log := logger(&NetConf{PluginLogFile: path, PluginLogLevel: level})
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, m := range []string{"d", "i", "w", "e"} {
			if strings.Contains(string(b), `"msg":"`+m+`"`) {
				got += m
			}
		}
		if got != want {
			t.Errorf("level %q logged %q, want %q", level, got, want)
		}
	}
}

// AWS_VPC_K8S_PLUGIN_LOG_FILE=stderr: the log goes to the runtime's stderr,
// never to stdout, which carries the result.
func TestPluginLogToStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	logger(&NetConf{PluginLogFile: "stderr", PluginLogLevel: "info"}).Info("to stderr")
	os.Stderr = saved
	w.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"msg":"to stderr"`) {
		t.Fatalf("stderr got %q", b)
	}
}
