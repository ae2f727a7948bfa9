package ipamd_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"

	"github.com/berth-io/berth/test/e2e"
)

func TestPrefixMode(t *testing.T) {
	cl := newCluster(t, "10.67.0.0/16", "10.67.0.0/20")
	n := cl.startNode(t, "m5.large", "ENABLE_PREFIX_DELEGATION=true")
	var pods []*pod
	for i := 0; i < 20; i++ { // more than one /28
		p, err := n.add(t, "pd-"+string(rune('a'+i)))
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		pods = append(pods, p)
	}
	out, err := cl.ec2.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: strPtr("attachment.instance-id"), Values: []string{n.inst.ID}}}})
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []netip.Prefix
	for _, e := range out.NetworkInterfaces {
		if len(e.PrivateIpAddresses) > 1 {
			t.Errorf("prefix mode assigned secondary IPs to %s", *e.NetworkInterfaceId)
		}
		for _, p := range e.Ipv4Prefixes {
			prefixes = append(prefixes, netip.MustParsePrefix(*p.Ipv4Prefix))
		}
	}
	for _, p := range pods {
		in := false
		for _, pf := range prefixes {
			in = in || pf.Contains(p.ip)
		}
		if !in {
			t.Errorf("pod %s got %s outside the node's prefixes %v", p.name, p.ip, prefixes)
		}
	}
	if len(prefixes) < 2 {
		t.Fatalf("20 pods need at least two /28s, node has %v", prefixes)
	}
}

// ENABLE_PREFIX_DELEGATION on an instance type that cannot take prefixes
// (Xen): ipamd starts with secondary addresses, as aws-node falls back,
// rather than leave the node without a network.
func TestPrefixModeFallsBackOffNitro(t *testing.T) {
	cl := newCluster(t, "10.93.0.0/16", "10.93.0.0/20")
	n := cl.startNode(t, "t2.large", "ENABLE_PREFIX_DELEGATION=true")
	p, err := n.add(t, "xen-pod")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cl.ec2.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: strPtr("attachment.instance-id"), Values: []string{n.inst.ID}}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range out.NetworkInterfaces {
		if len(e.Ipv4Prefixes) != 0 {
			t.Errorf("%s got prefixes on a Xen instance type", *e.NetworkInterfaceId)
		}
		for _, a := range e.PrivateIpAddresses {
			found = found || *a.PrivateIpAddress == p.ip.String()
		}
	}
	if !found {
		t.Fatalf("pod %s's address is not a secondary address of the node's ENIs", p.ip)
	}
}

func strPtr(s string) *string { return &s }

func TestMaxPodsStatusAndGC(t *testing.T) {
	cl := newCluster(t, "10.68.0.0/16", "10.68.0.0/20")
	n := cl.startNode(t, "m5.large", "MAX_PODS=3")
	var pods []*pod
	for i := 0; i < 3; i++ {
		p, err := n.add(t, "mp-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	if _, err := n.add(t, "mp-over"); err == nil || !strings.Contains(err.Error(), "max pods") {
		t.Fatalf("4th pod with MAX_PODS=3: %v", err)
	}

	// A restart of the full node becomes ready (writes its conflist):
	// before, it waited for a free address that could not come until a
	// pod went, and the node stayed NotReady.
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.restart(t, "MAX_PODS=3")

	// STATUS through libcni: ready while ipamd serves.
	conf := n.conf(t)
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.GetStatusNetworkList(context.Background(), conf) }); err != nil {
		t.Fatalf("STATUS with ipamd up: %v", err)
	}

	// GC: only pods[0] is still valid; the others' addresses are released,
	// and their host side goes with them, veth included (their namespaces
	// are still there, so only ipamd can have deleted the veths). The
	// runtime here has lost libcni's cache, so libcni's GC issues no DEL of
	// its own first and berth-cni's GC is what releases them.
	veths := make([]string, len(pods))
	for i, p := range pods {
		f := strings.Fields(ipIn(t, n.inst.NetNS, "route", "show", p.ip.String()))
		if len(f) < 3 || f[1] != "dev" {
			t.Fatalf("host route to %s: %q", p.ip, f)
		}
		veths[i] = f[2]
	}
	gc := &libcni.GCArgs{ValidAttachments: []cnitypes.GCAttachment{{ContainerID: pods[0].rt.ContainerID, IfName: "eth0"}}}
	lost := libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, t.TempDir(), nil)
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return lost.GCNetworkList(context.Background(), conf, gc) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	held := introspectPods(t, n)
	if len(held) != 1 || held[0] != pods[0].ip.String() {
		t.Fatalf("after GC ipamd holds %v, want only %s", held, pods[0].ip)
	}
	links := ipIn(t, n.inst.NetNS, "-o", "link", "show", "type", "veth")
	rules := ipIn(t, n.inst.NetNS, "rule", "show")
	for i, p := range pods {
		kept := i == 0
		if strings.Contains(links, " "+veths[i]+"@") != kept || strings.Contains(rules, " "+p.ip.String()+" ") != kept {
			t.Errorf("after GC, pod %s (valid: %v): veth %s in %q, rules:\n%s", p.ip, kept, veths[i], links, rules)
		}
	}

	// STATUS when ipamd is gone: not available (code 50).
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	_ = os.Remove(filepath.Join(n.socket))
	err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.GetStatusNetworkList(context.Background(), conf) })
	var cniErr *cnitypes.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 50 {
		t.Fatalf("STATUS with ipamd down: %v, want CNI error 50 (plugin not available)", err)
	}
}

// AWS_EC2_ENDPOINT (aws-node's, for EC2 VPC endpoints) is where ipamd
// reaches EC2, whatever AWS_ENDPOINT_URL says: here that points nowhere,
// and the node still starts and gives a pod an address.
func TestEC2Endpoint(t *testing.T) {
	cl := newCluster(t, "10.76.0.0/16", "10.76.0.0/20")
	n := cl.startNode(t, "m5.large", "AWS_ENDPOINT_URL=http://127.0.0.1:9", "AWS_EC2_ENDPOINT=http://169.254.169.254:4566")
	if _, err := n.add(t, "ep"); err != nil {
		t.Fatalf("ADD: %v", err)
	}
}

// ENABLE_IMDS_ONLY_MODE: ipamd makes no EC2 call at all (EC2 is out of its
// reach here) and gives pods the addresses someone else assigned to the
// node, which it learns from IMDS alone.
func TestIMDSOnlyMode(t *testing.T) {
	cl := newCluster(t, "10.79.0.0/16", "10.79.0.0/20")
	var assigned []string
	cl.prepare = func(t testing.TB, inst e2e.Instance) {
		out, err := cl.ec2.AssignPrivateIpAddresses(context.Background(), &ec2sdk.AssignPrivateIpAddressesInput{
			NetworkInterfaceId: &inst.PrimaryENI, SecondaryPrivateIpAddressCount: aws.Int32(2)})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range out.AssignedPrivateIpAddresses {
			assigned = append(assigned, *a.PrivateIpAddress)
		}
	}
	n := cl.startNode(t, "m5.large", "ENABLE_IMDS_ONLY_MODE=true", "AWS_ENDPOINT_URL=http://127.0.0.1:9")
	var got []string
	for _, name := range []string{"imds-a", "imds-b"} {
		p, err := n.add(t, name)
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		got = append(got, p.ip.String())
	}
	slices.Sort(got)
	slices.Sort(assigned)
	if !slices.Equal(got, assigned) {
		t.Fatalf("pods got %v, want the addresses assigned before ipamd started %v", got, assigned)
	}
	// None left, and ipamd may not ask EC2 for more: the ADD says why.
	if _, err := n.add(t, "imds-c"); err == nil || !strings.Contains(err.Error(), "DISABLE_NETWORK_RESOURCE_PROVISIONING") {
		t.Fatalf("third ADD: %v, want the reason no address can come", err)
	}
}
