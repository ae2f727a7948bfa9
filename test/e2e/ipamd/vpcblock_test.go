package ipamd_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/berth-io/berth/test/e2e"
)

// A block associated with the VPC after the node started (a secondary
// CIDR, as custom networking setups add) is inside the VPC: ipamd re-reads
// the VPC's blocks from IMDS every 30 s, as the VPC CNI does, and from then
// on a pod's traffic to that block keeps the pod's address instead of
// being SNATed to the node's.
func TestVPCBlockAssociatedLater(t *testing.T) {
	cl := newCluster(t, "10.89.0.0/16", "10.89.0.0/20")
	n := cl.startNode(t, "m5.large")
	p, err := n.add(t, "client")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.ec2.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: aws.String(cl.vpc), CidrBlock: aws.String("10.90.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	sub, err := cl.ec2.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: aws.String(cl.vpc), CidrBlock: aws.String("10.90.1.0/24"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	peer := e2e.RunInstance(t, cl.ec2, *sub.Subnet.SubnetId, "m5.large")
	// The instance's namespace is there before its eth0 has the address.
	var ln net.Listener
	e2e.WaitFor(t, "the peer's address on its eth0 (a listener on "+peer.PrimaryIP+")", 20*time.Second, func() bool {
		return e2e.InNetNS(peer.NetNS, func() (err error) { ln, err = net.Listen("tcp", peer.PrimaryIP+":0"); return err }) == nil
	})
	defer ln.Close()
	sources := make(chan string, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sources <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	addr := fmt.Sprintf("%s:%d", peer.PrimaryIP, ln.Addr().(*net.TCPAddr).Port)
	snated := 0
	start := time.Now()
	e2e.WaitFor(t, "the pod's own address at a peer in the new block (ipamd's 30 s refresh)", 45*time.Second, func() bool {
		if _, err := p.dial(addr); err != nil {
			t.Logf("pod -> %s: %v", addr, err)
			return false
		}
		switch src := <-sources; src {
		case p.ip.String():
			return true
		case n.inst.PrimaryIP:
			snated++
			time.Sleep(250 * time.Millisecond)
			return false
		default:
			t.Fatalf("the peer saw %s: neither the pod's %s nor the node's %s", src, p.ip, n.inst.PrimaryIP)
			return false
		}
	})
	t.Logf("%d connections SNATed to the node's address, then the pod's own after %v", snated, time.Since(start).Round(time.Second))
}
