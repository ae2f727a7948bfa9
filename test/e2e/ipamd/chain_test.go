package ipamd_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

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
