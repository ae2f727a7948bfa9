package ipamd_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"

	"github.com/berth-io/berth/test/e2e"
)

// A pod whose sandbox is recreated (a StatefulSet's web-0, a sandbox the
// runtime lost) has one host veth name for both sandboxes, since the name
// comes from the pod's name. The runtime's GC of the lost sandbox and a
// late DEL of it must leave the new sandbox's network alone, and a second
// ADD of the new sandbox must fail without touching it.
func TestRecreatedSandbox(t *testing.T) {
	cl := newCluster(t, "10.75.0.0/16", "10.75.0.0/20")
	n := cl.startNode(t, "m5.large")
	old, err := n.add(t, "web-0")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := n.add(t, "web-0")
	if err != nil {
		t.Fatal(err)
	}
	if old.ip == cur.ip {
		t.Fatalf("both sandboxes got %s", cur.ip)
	}
	cur.listen(t, 8080)
	reaches := func(what string) {
		t.Helper()
		if err := n.check(t, cur); err != nil {
			t.Fatalf("%s: CHECK of the current sandbox: %v", what, err)
		}
		peer, err := n.add(t, "peer")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.dial(net.JoinHostPort(cur.ip.String(), "8080")); err != nil {
			t.Fatalf("%s: pod to the current sandbox: %v", what, err)
		}
		_ = n.del(t, peer)
	}
	reaches("after the recreation")

	// ADD of the current sandbox again: CNI requires an error.
	err = e2e.InNetNS(n.inst.NetNS, func() error {
		_, err := n.cni.AddNetworkList(context.Background(), n.conf(t), cur.rt)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second ADD of one sandbox: %v, want an error that eth0 exists", err)
	}
	reaches("after the refused second ADD")

	// The runtime's GC: only the current sandbox is valid.
	gc := &libcni.GCArgs{ValidAttachments: []cnitypes.GCAttachment{{ContainerID: cur.rt.ContainerID, IfName: "eth0"}}}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.GCNetworkList(context.Background(), n.conf(t), gc) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if held := introspectPods(t, n); slices.Contains(held, old.ip.String()) || !slices.Contains(held, cur.ip.String()) {
		t.Fatalf("after GC ipamd holds %v: want %s and not %s", held, cur.ip, old.ip)
	}
	reaches("after GC of the old sandbox")

	// A late DEL of the old sandbox, from libcni's cached result.
	if err := n.del(t, old); err != nil {
		t.Fatalf("late DEL of the old sandbox: %v", err)
	}
	reaches("after a late DEL of the old sandbox")
}
