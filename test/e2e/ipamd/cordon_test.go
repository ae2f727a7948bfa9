package ipamd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/test/e2e"
)

// TestCordonedNode: with AWS_MANAGE_ENIS_NON_SCHEDULABLE unset (false, the
// VPC CNI's default) ipamd follows its Node on a real API server, with
// only the rights of deploy/rbac/ipamd.yaml, and on a cordoned node makes
// no ENI or address change: pods get the addresses the node already has,
// the next ADD fails at once saying why, and nothing is asked of EC2. Once
// uncordoned, the pool grows and the ADD succeeds.
func TestCordonedNode(t *testing.T) {
	cl := newCluster(t, "10.85.0.0/16", "10.85.0.0/20")
	ctx := context.Background()
	cp, kubeconfig := ipamdAPI(t, cl, "cordon", "ipamd.yaml")
	nodeObj := filepath.Join(t.TempDir(), "node.json")
	if err := os.WriteFile(nodeObj, []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-c"},"spec":{"unschedulable":true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(t, "create", "-f", nodeObj); err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	// Two addresses the node had before ipamd (re)started.
	cl.prepare = func(t testing.TB, inst e2e.Instance) {
		if _, err := cl.ec2.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{
			NetworkInterfaceId: &inst.PrimaryENI, SecondaryPrivateIpAddressCount: aws.Int32(2)}); err != nil {
			t.Fatal(err)
		}
	}
	n := cl.startNodeWith(t, "m5.large", "", "", []string{"--chain-portmap=false", "--kubeconfig", kubeconfig}, "MY_NODE_NAME=node-c")
	addresses := func() (enis, ips int) {
		out, err := cl.ec2.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{
			Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{n.inst.ID}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range out.NetworkInterfaces {
			ips += len(e.PrivateIpAddresses)
		}
		return len(out.NetworkInterfaces), ips
	}
	for i := range 2 {
		if _, err := n.add(t, fmt.Sprintf("held-%d", i)); err != nil {
			t.Fatalf("ADD with an address at hand: %v", err)
		}
	}
	start := time.Now()
	_, err := n.add(t, "more")
	if err == nil || !strings.Contains(err.Error(), "cordoned") {
		t.Fatalf("ADD on a cordoned node with no address left: %v, want the cordon as the reason", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the failing ADD took %s: it should not wait out the pool's deadline", d)
	}
	if enis, ips := addresses(); enis != 1 || ips != 3 {
		t.Fatalf("cordoned node has %d ENIs and %d addresses, want 1 and 3: ipamd changed them", enis, ips)
	}

	if out, err := cp.Kubectl(t, "uncordon", "node-c"); err != nil {
		t.Fatalf("uncordon: %v\n%s", err, out)
	}
	e2e.WaitFor(t, "an ADD after the uncordon", 30*time.Second, func() bool {
		_, err := n.add(t, "after")
		return err == nil
	})
	if _, ips := addresses(); ips <= 3 {
		t.Fatalf("uncordoned node still has %d addresses: the pool did not grow", ips)
	}
}
