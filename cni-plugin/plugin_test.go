package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
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

// DEL tears down the address ipamd released. When ipamd answers that it
// holds nothing for the attachment (a repeated DEL, or an address released
// earlier and perhaps another pod's by now), the prevResult's address is
// left alone; only with ipamd down does prevResult say what to remove.
func TestDelTearsDownWhatIpamdReleased(t *testing.T) {
	testenv.RequireRoot(t, "rules in a network namespace")
	sock, f, _ := serve(t)
	ns, h := testenv.NewNetNS(t)
	ip := net.IPv4(10, 0, 9, 9)
	addRule := func() {
		if err := h.RuleAdd(podnet.Rules(ip, podnet.MainTable)[0]); err != nil {
			t.Fatal(err)
		}
	}
	hasRule := func() bool {
		rs, err := h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Priority == podnet.ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(ip) {
				return true
			}
		}
		return false
	}
	del := func(socket string) {
		t.Helper()
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","ipamdSocket":%q,"npaSocket":%q,
			"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eni0123456789a"},{"name":"eth0","sandbox":"/gone"}],"ips":[{"address":"10.0.9.9/32","interface":1}]}}`,
			socket, filepath.Join(t.TempDir(), "npa.sock"))
		inNS(t, ns, func() error {
			return cmdDel(&skel.CmdArgs{ContainerID: "old", Netns: "/gone", IfName: "eth0", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: []byte(conf)})
		})
	}

	addRule()
	f.delReply = &rpc.DelNetworkReply{Success: true}
	del(sock)
	if !hasRule() {
		t.Fatal("DEL removed the rule of an address ipamd did not release")
	}
	f.delReply = &rpc.DelNetworkReply{Success: true, IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: ip.String(), RouteTableId: podnet.MainTable}}}
	del(sock)
	if hasRule() {
		t.Fatal("DEL left the rule of the address ipamd released")
	}
	addRule()
	del(filepath.Join(t.TempDir(), "down.sock"))
	if hasRule() {
		t.Fatal("DEL with ipamd down left the prevResult address's rule")
	}
}

// inNS runs f on a thread in ns.
func inNS(t *testing.T, ns netns.NsHandle, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
