package ipamd_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/test/e2e"
)

// TestChainedPortmap: with a CNI 1.0 conflist (Debian's portmap predates
// CNI 1.1), berth-cni chains with the reference portmap plugin and a
// hostPort reaches the pod.
func TestChainedPortmap(t *testing.T) {
	cl := newCluster(t, "10.73.0.0/16", "10.73.0.0/20")
	n := cl.startNodeWith(t, "m5.large", "", "", []string{"--cni-version=1.0.0", "--chain-portmap=true"})
	nsName := fmt.Sprintf("pod-pm-%d", time.Now().UnixNano()%1e6)
	p := &pod{name: "pm", ns: "default", netns: e2e.NewNetNS(t, nsName)}
	p.rt = &libcni.RuntimeConf{ContainerID: "c-" + nsName, NetNS: p.netns, IfName: "eth0",
		Args:           [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pm"}, {"IgnoreUnknown", "1"}},
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 6060, "protocol": "tcp"}}}}
	if err := e2e.InNetNS(n.inst.NetNS, func() error {
		_, err := n.cni.AddNetworkList(context.Background(), n.conf(t), p.rt)
		return err
	}); err != nil {
		t.Fatalf("ADD through berth-cni + portmap: %v", err)
	}
	p.listen(t, 6060)
	// From another node, through the VPC router, to this node's hostPort.
	other := cl.startNode(t, "m5.large")
	client, err := other.add(t, "client")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.dial(net.JoinHostPort(n.inst.PrimaryIP, "18080")); err != nil {
		t.Fatalf("hostPort 18080 on %s: %v", n.inst.PrimaryIP, err)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), n.conf(t), p.rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

// TestChainedBandwidthAndTuning: with ENABLE_BANDWIDTH_PLUGIN and
// DISABLE_POD_V6, as aws-node's users set them, the conflist chains the
// reference bandwidth and tuning plugins after berth-cni: a pod's
// bandwidth limits shape its host veth (ingress) and an ifb device
// (egress), IPv6 is off in the pod, and DEL removes the ifb.
func TestChainedBandwidthAndTuning(t *testing.T) {
	cl := newCluster(t, "10.80.0.0/16", "10.80.0.0/20")
	n := cl.startNodeWith(t, "m5.large", "", "", []string{"--cni-version=1.0.0", "--chain-portmap=false"},
		"ENABLE_BANDWIDTH_PLUGIN=true", "DISABLE_POD_V6=true")
	nsName := fmt.Sprintf("pod-bw-%d", time.Now().UnixNano()%1e6)
	netnsPath := e2e.NewNetNS(t, nsName)
	rt := &libcni.RuntimeConf{ContainerID: "c-" + nsName, NetNS: netnsPath, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "bw"}, {"IgnoreUnknown", "1"}},
		CapabilityArgs: map[string]any{"bandwidth": map[string]any{
			"ingressRate": 10_000_000, "ingressBurst": 1_000_000, "egressRate": 20_000_000, "egressBurst": 1_000_000}}}
	conf := n.conf(t)
	if err := e2e.InNetNS(n.inst.NetNS, func() error {
		_, err := n.cni.AddNetworkList(context.Background(), conf, rt)
		return err
	}); err != nil {
		t.Fatalf("ADD through berth-cni + bandwidth + tuning: %v", err)
	}
	hostVeth := vethname.For("eni", "default", "bw")
	var tbf, ifbs int
	if err := e2e.InNetNS(n.inst.NetNS, func() error {
		l, err := netlink.LinkByName(hostVeth)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "tbf" {
				tbf++
			}
		}
		ifbs = countLinks("ifb")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if tbf != 1 || ifbs != 1 {
		t.Fatalf("after ADD: %d tbf qdiscs on %s, %d ifb devices; want 1 and 1", tbf, hostVeth, ifbs)
	}
	var v6off []byte
	if err := e2e.InNetNS(nsName, func() (err error) {
		v6off, err = os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(v6off)) != "1" {
		t.Errorf("IPv6 in the pod: disable_ipv6=%q", v6off)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), conf, rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { ifbs = countLinks("ifb"); return nil }); err != nil {
		t.Fatal(err)
	}
	if ifbs != 0 {
		t.Errorf("%d ifb devices left after DEL", ifbs)
	}
}

// countLinks counts the links of a type in the calling thread's namespace.
func countLinks(typ string) int {
	ls, _ := netlink.LinkList()
	n := 0
	for _, l := range ls {
		if l.Type() == typ {
			n++
		}
	}
	return n
}
