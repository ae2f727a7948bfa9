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

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/proto/rpc"
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

// DEL tears down what is left of the address ipamd released: the host
// route and the veth (ipamd removed the rules before releasing it). When
// ipamd answers that it holds nothing for the attachment (a repeated DEL,
// or an address released earlier and perhaps another pod's by now), the
// prevResult's address is left alone; only with ipamd down does
// prevResult say what to remove, rules included.
func TestDelTearsDownWhatIpamdReleased(t *testing.T) {
	testenv.RequireRoot(t, "rules in a network namespace")
	sock, f, _ := serve(t)
	ns, h := testenv.NewNetNS(t)
	ip := net.IPv4(10, 0, 9, 9)
	const veth = "eni0123456789a"
	wire := func() {
		t.Helper()
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}, PeerName: "peer0"}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(veth)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
		if err := h.RuleAdd(podnet.Rules(ip, podnet.MainTable)[0]); err != nil {
			t.Fatal(err)
		}
	}
	wired := func() (link, rule bool) {
		t.Helper()
		_, err := h.LinkByName(veth)
		rs, rerr := h.RuleList(netlink.FAMILY_V4)
		if rerr != nil {
			t.Fatal(rerr)
		}
		for _, r := range rs {
			rule = rule || (r.Priority == podnet.ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(ip))
		}
		return err == nil, rule
	}
	cpPath := filepath.Join(t.TempDir(), "ipam.json")
	del := func(socket string) {
		t.Helper()
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","ipamdSocket":%q,"npaSocket":%q,"ipamStateFile":%q,
			"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":%q},{"name":"eth0","sandbox":"/gone"}],"ips":[{"address":"10.0.9.9/32","interface":1}]}}`,
			socket, filepath.Join(t.TempDir(), "npa.sock"), cpPath, veth)
		inNS(t, ns, func() error {
			return cmdDel(&skel.CmdArgs{ContainerID: "old", Netns: "/gone", IfName: "eth0", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: []byte(conf)})
		})
	}

	wire()
	f.setDelReply(&rpc.DelNetworkReply{Success: true})
	del(sock)
	if link, rule := wired(); !link || !rule {
		t.Fatalf("DEL of an address ipamd did not release: veth %v, rule %v; want both left", link, rule)
	}
	f.setDelReply(&rpc.DelNetworkReply{Success: true, IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: ip.String(), RouteTableId: podnet.MainTable}}})
	del(sock)
	if link, rule := wired(); link || !rule {
		t.Fatalf("DEL of the address ipamd released: veth %v, rule %v; want the veth gone, the rule left to ipamd", link, rule)
	}
	if err := h.RuleDel(podnet.Rules(ip, podnet.MainTable)[0]); err != nil {
		t.Fatal(err)
	}
	wire()
	del(filepath.Join(t.TempDir(), "down.sock"))
	if link, rule := wired(); link || rule {
		t.Fatalf("DEL with ipamd down: veth %v, rule %v; want both gone", link, rule)
	}
	// ipamd down, and its checkpoint gives the address to another pod (this
	// DEL is a retry after ipamd released it): that pod's rule stays.
	wire()
	cp := `{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"new","ifName":"eth0","ipv4":"10.0.9.9"}]}`
	if err := os.WriteFile(cpPath, []byte(cp), 0o600); err != nil {
		t.Fatal(err)
	}
	del(filepath.Join(t.TempDir(), "down.sock"))
	if link, rule := wired(); !link || !rule {
		t.Fatalf("DEL with ipamd down of an address now another pod's: veth %v, rule %v; want both kept (a newer sandbox of the pod may have both)", link, rule)
	}
	// The same, with a prevResult that names no host veth.
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","ipamdSocket":%q,"npaSocket":%q,"ipamStateFile":%q,
		"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/gone"}],"ips":[{"address":"10.0.9.9/32","interface":0}]}}`,
		filepath.Join(t.TempDir(), "down.sock"), filepath.Join(t.TempDir(), "npa.sock"), cpPath)
	inNS(t, ns, func() error {
		return cmdDel(&skel.CmdArgs{ContainerID: "old", Netns: "/gone", IfName: "eth0", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: []byte(conf)})
	})
	if link, rule := wired(); !link || !rule {
		t.Fatalf("DEL without a host veth in prevResult, ipamd down, address now another pod's: veth %v, rule %v; want both kept", link, rule)
	}
	// A late DEL of an earlier sandbox: ipamd releases its address, but the
	// veth of that name is a newer sandbox's, routing another address.
	l, err := h.LinkByName(veth)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: podnet.HostNet(net.IPv4(10, 0, 9, 10)), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	f.setDelReply(&rpc.DelNetworkReply{Success: true, IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: ip.String(), RouteTableId: podnet.MainTable}}})
	del(sock)
	if link, _ := wired(); !link {
		t.Fatal("a late DEL deleted the newer sandbox's veth of the same name")
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

// CHECK against a pod wired as ipamd wires it, on a secondary ENI's table:
// it passes, then fails when the "from" rule is gone, and when ipamd's
// checkpoint no longer holds the address for the attachment.
func TestCheckVerifiesRulesAndReservation(t *testing.T) {
	testenv.RequireRoot(t, "namespaces and veths")
	home, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	node, h := testenv.NewNetNS(t)
	pod, _ := testenv.NewNetNS(t)
	ip, table := net.IPv4(10, 0, 7, 7), 3
	l, err := podnet.Create(h, home, pod, "eth0", "eni0123456789a", 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Assign(ip, table); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "ipam.json")
	writeCP := func(ipv4 string) {
		b := fmt.Sprintf(`{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"c1","ifName":"eth0","ipv4":%q}]}`, ipv4)
		if err := os.WriteFile(cpPath, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","ipamStateFile":%q,
		"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eni0123456789a","mac":%q},{"name":"eth0","sandbox":"x"},{"name":"dummy0123456789a","mac":"%d","sandbox":"1"}],
		"ips":[{"address":"10.0.7.7/32","interface":1}]}}`, cpPath, l.HostMAC, table)
	args := &skel.CmdArgs{ContainerID: "c1", Netns: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(pod)), IfName: "eth0", StdinData: []byte(conf)}
	check := func() error { return testenv.OnThreadIn(node, func() error { return cmdCheck(args) }) }

	writeCP("10.0.7.7")
	if err := check(); err != nil {
		t.Fatalf("CHECK of a wired pod: %v", err)
	}
	writeCP("10.0.7.8")
	if err := check(); err == nil || !strings.Contains(err.Error(), "ipamd holds no") {
		t.Fatalf("CHECK with the address not ipamd's: %v", err)
	}
	writeCP("10.0.7.7")
	if err := h.RuleDel(podnet.Rules(ip, table)[1]); err != nil {
		t.Fatal(err)
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "from 10.0.7.7 lookup 3") {
		t.Fatalf("CHECK without the 'from' rule: %v", err)
	}
	if err := h.RuleAdd(podnet.Rules(ip, table)[1]); err != nil {
		t.Fatal(err)
	}
	args.Netns = filepath.Join(dir, "no-such-netns")
	var e *types.Error
	if err := check(); !errors.As(err, &e) || e.Code != types.ErrInvalidNetNS {
		t.Fatalf("CHECK with a missing netns: %v, want code %d", err, types.ErrInvalidNetNS)
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
