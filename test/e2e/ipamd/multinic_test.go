package ipamd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berth-io/berth/test/e2e"
)

// TestMultiNICPods: with ENABLE_MULTI_NIC on an instance with two network
// cards (c6in.32xlarge), a pod annotated k8s.amazonaws.com/nicConfig:
// multi-nic-attachment gets eth0 with an address of card 0 and mNicIf1
// with one of an ENI ipamd attached to network card 1, through berth-cni
// and through the real Amazon VPC CNI v1.23.2 plugin. Each interface
// carries the pod's traffic from its own address to another node through
// the VPC router (source/destination check included); CHECK verifies both;
// DEL releases both; a pod without the annotation keeps one interface.
func TestMultiNICPods(t *testing.T) {
	plugin := awsPluginTest(t)
	cl := newCluster(t, "10.94.0.0/16", "10.94.0.0/20")
	n := cl.startNodeAt(t, "c6in.32xlarge", "/var/run/aws-node/ipamd.sock", "ENABLE_MULTI_NIC=true", "WARM_ENI_TARGET=0", "WARM_IP_TARGET=2")
	target := cl.peerListening(t, 7070)
	installAWSPlugin(t, n, plugin)
	awsConf, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"aws-cni","disableCheck":true,
		"plugins":[{"type":"aws-cni","vethPrefix":"eni","mtu":"9001","podSGEnforcingMode":"strict",
		"capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}`))
	if err != nil {
		t.Fatal(err)
	}

	single, err := n.add(t, "one-nic")
	if err != nil {
		t.Fatalf("a pod without the annotation: %v", err)
	}
	outer := t // the restarted ipamd must outlive the subtest that restarts it
	for _, c := range []struct {
		plugin string
		conf   *libcni.NetworkConfigList
		check  bool
	}{{"berth-cni", n.conf(t), true}, {"aws-cni", awsConf, false}} {
		t.Run(c.plugin, func(t *testing.T) {
			nsName := fmt.Sprintf("pod-mnic-%d", time.Now().UnixNano()%1e6)
			rt := &libcni.RuntimeConf{ContainerID: "c-" + nsName, NetNS: e2e.NewNetNS(t, nsName), IfName: "eth0",
				Args:           [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "multi-nic-" + c.plugin}, {"K8S_POD_INFRA_CONTAINER_ID", "c-" + nsName}, {"IgnoreUnknown", "1"}},
				CapabilityArgs: map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"}}}
			var res *types100.Result
			if err := e2e.InNetNS(n.inst.NetNS, func() error {
				r, err := n.cni.AddNetworkList(context.Background(), c.conf, rt)
				if err != nil {
					return err
				}
				res, err = types100.NewResultFromResult(r)
				return err
			}); err != nil {
				t.Fatalf("ADD of a multi-NIC pod: %v", err)
			}
			if len(res.IPs) != 2 {
				t.Fatalf("result has %d addresses, want one per network card: %+v", len(res.IPs), res)
			}
			var ips [2]netip.Addr
			for i, ipc := range res.IPs {
				ips[i], _ = netip.AddrFromSlice(ipc.Address.IP.To4())
				if ipc.Interface == nil || *ipc.Interface >= len(res.Interfaces) {
					t.Fatalf("address %s names no interface: %+v", ips[i], res)
				}
				if want := []string{"eth0", "mNicIf1"}[i]; res.Interfaces[*ipc.Interface].Name != want {
					t.Errorf("address %s is on %s, want %s", ips[i], res.Interfaces[*ipc.Interface].Name, want)
				}
			}
			for i, ip := range ips {
				if card := cardOf(t, cl, ip); card != i {
					t.Errorf("address %s is on an ENI of network card %d, want %d", ip, card, i)
				}
			}
			// Each interface carries the pod's traffic from its own address.
			for _, ip := range ips {
				if err := dialFromAddr(nsName, ip, net.JoinHostPort(target.ip.String(), "7070")); err != nil {
					t.Errorf("from %s to a pod on another node: %v", ip, err)
				}
			}
			if c.check {
				if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.CheckNetworkList(context.Background(), c.conf, rt) }); err != nil {
					t.Errorf("CHECK of a multi-NIC pod: %v", err)
				}
				// ipamd killed and restarted: card 1's checkpoint gives the
				// pod its second address back, with its rules.
				_ = n.cmd.Process.Kill()
				_ = n.cmd.Wait()
				if _, err := os.Stat(filepath.Join(n.stateDir, "ipam-nic-1.json")); err != nil {
					t.Errorf("card 1's checkpoint: %v", err)
				}
				n.restart(outer, "ENABLE_MULTI_NIC=true", "WARM_ENI_TARGET=0", "WARM_IP_TARGET=2")
				if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.CheckNetworkList(context.Background(), c.conf, rt) }); err != nil {
					t.Errorf("CHECK after ipamd's restart: %v", err)
				}
				held := introspectPods(t, n)
				for _, ip := range ips {
					if !slices.Contains(held, ip.String()) {
						t.Errorf("%s not allocated after ipamd's restart (allocated: %v)", ip, held)
					}
					if err := dialFromAddr(nsName, ip, net.JoinHostPort(target.ip.String(), "7070")); err != nil {
						t.Errorf("after ipamd's restart, from %s: %v", ip, err)
					}
				}
			}
			if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), c.conf, rt) }); err != nil {
				t.Fatalf("DEL of a multi-NIC pod: %v", err)
			}
			held := introspectPods(t, n)
			for _, ip := range ips {
				if slices.Contains(held, ip.String()) {
					t.Errorf("%s still allocated after DEL", ip)
				}
			}
		})
	}
	// The pod with one interface is untouched by all of it.
	if _, err := single.dial(net.JoinHostPort(target.ip.String(), "7070")); err != nil {
		t.Errorf("the pod with one interface: %v", err)
	}
	if err := n.del(t, single); err != nil {
		t.Fatal(err)
	}
}

// installAWSPlugin puts the Amazon VPC CNI plugin binary into the node's
// CNI bin directory as aws-cni.
func installAWSPlugin(t *testing.T, n *node, plugin string) {
	t.Helper()
	dst := filepath.Join(n.binDir, "aws-cni")
	if err := os.Link(plugin, dst); err != nil {
		b, rerr := os.ReadFile(plugin)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// cardOf is the network card of the ENI that holds ip, from EC2.
func cardOf(t *testing.T, cl *cluster, ip netip.Addr) int {
	t.Helper()
	out, err := cl.ec2.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("addresses.private-ip-address"), Values: []string{ip.String()}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.NetworkInterfaces) != 1 || out.NetworkInterfaces[0].Attachment == nil {
		t.Fatalf("%s: %d ENIs hold it, or it is not attached", ip, len(out.NetworkInterfaces))
	}
	return int(aws.ToInt32(out.NetworkInterfaces[0].Attachment.NetworkCardIndex))
}

// dialFromAddr connects from the pod's namespace with src as the source
// address.
func dialFromAddr(ns string, src netip.Addr, addr string) error {
	return e2e.InNetNS(ns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// TestOneInterfacePodOnCardOne: with ENABLE_MULTI_NIC, a pod without the
// annotation takes network card 1's address when card 0 has none (here
// card 0 is held at MAX_PODS=2, which caps each card's pool), as the VPC
// CNI does. Its eth0 routes
// through card 1's ENI (table 10100) to another node; CHECK passes, also
// after ipamd is killed and restarted (card 1's checkpoint keeps it by
// the pod's eth0 veth); the real VPC CNI plugin wires such an address
// too; DEL releases it.
func TestOneInterfacePodOnCardOne(t *testing.T) {
	plugin := awsPluginTest(t)
	cl := newCluster(t, "10.95.0.0/16", "10.95.0.0/20")
	env := []string{"ENABLE_MULTI_NIC=true", "WARM_ENI_TARGET=0", "WARM_IP_TARGET=1", "MAX_PODS=2"}
	n := cl.startNodeAt(t, "c6in.32xlarge", "/var/run/aws-node/ipamd.sock", env...)
	target := cl.peerListening(t, 7070)
	to := net.JoinHostPort(target.ip.String(), "7070")
	installAWSPlugin(t, n, plugin)

	var home []*pod
	for _, name := range []string{"first", "second"} {
		waitCardFree(t, n, 0)
		p, err := n.add(t, name)
		if err != nil {
			t.Fatal(err)
		}
		if card := cardOf(t, cl, p.ip); card != 0 {
			t.Fatalf("pod %s's %s is on network card %d, want 0", name, p.ip, card)
		}
		home = append(home, p)
	}
	waitCardFree(t, n, 1)
	spilled, err := n.add(t, "spilled")
	if err != nil {
		t.Fatalf("a pod with card 0 full and card 1 warm: %v", err)
	}
	if card := cardOf(t, cl, spilled.ip); card != 1 {
		t.Fatalf("the pod after card 0 filled up got %s on network card %d, want 1", spilled.ip, card)
	}
	if _, err := spilled.dial(to); err != nil {
		t.Errorf("from card 1's address on eth0 to a pod on another node: %v", err)
	}
	if err := n.check(t, spilled); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.restart(t, env...)
	if err := n.check(t, spilled); err != nil {
		t.Errorf("CHECK after ipamd's restart: %v", err)
	}
	if !slices.Contains(introspectPods(t, n), spilled.ip.String()) {
		t.Errorf("%s not allocated after ipamd's restart", spilled.ip)
	}
	if _, err := spilled.dial(to); err != nil {
		t.Errorf("after ipamd's restart: %v", err)
	}

	// The VPC CNI plugin, given card 1's address for eth0.
	waitCardFree(t, n, 1)
	awsConf, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"aws-cni","disableCheck":true,
		"plugins":[{"type":"aws-cni","vethPrefix":"eni","mtu":"9001","podSGEnforcingMode":"strict"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	awsPod, err := n.addWith(t, awsConf, "aws-on-card-1")
	if err != nil {
		t.Fatalf("aws-cni ADD: %v", err)
	}
	ip := awsPod.ip
	if card := cardOf(t, cl, ip); card != 1 {
		t.Errorf("aws-cni's pod got %s on network card %d, want 1", ip, card)
	}
	if _, err := awsPod.dial(to); err != nil {
		t.Errorf("aws-cni's pod on card 1: %v", err)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), awsConf, awsPod.rt) }); err != nil {
		t.Fatalf("aws-cni DEL: %v", err)
	}

	if err := n.del(t, spilled); err != nil {
		t.Fatal(err)
	}
	held := introspectPods(t, n)
	for _, a := range []netip.Addr{spilled.ip, ip} {
		if slices.Contains(held, a.String()) {
			t.Errorf("%s still allocated after DEL", a)
		}
	}
	for _, p := range home {
		if err := n.del(t, p); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCardFree waits until network card card's pool has a free address.
func waitCardFree(t *testing.T, n *node, card int) {
	t.Helper()
	e2e.WaitFor(t, fmt.Sprintf("a free address on network card %d", card), 30*time.Second, func() bool {
		var cards map[string]struct{ TotalIPs, AssignedIPs int }
		code, body := introspect(t, n, "/v1/enis")
		if code != http.StatusOK || json.Unmarshal(body, &cards) != nil {
			return false
		}
		c := cards[strconv.Itoa(card)]
		return c.TotalIPs > c.AssignedIPs
	})
}
