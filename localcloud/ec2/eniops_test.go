package ec2

import (
	"context"
	"net/netip"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func runOne(t *testing.T, c *ec2sdk.Client, subID string, typ types.InstanceType) string {
	t.Helper()
	out, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: typ,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &subID})
	if err != nil {
		t.Fatal(err)
	}
	id := *out.Instances[0].InstanceId
	if err := ec2sdk.NewInstanceRunningWaiter(c).Wait(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{id}}, 10e9); err != nil {
		t.Fatal(err)
	}
	return id
}

func newENI(t *testing.T, c *ec2sdk.Client, subID string) string {
	t.Helper()
	out, err := c.CreateNetworkInterface(context.Background(), &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID})
	if err != nil {
		t.Fatal(err)
	}
	return *out.NetworkInterface.NetworkInterfaceId
}

func describeENI(t *testing.T, c *ec2sdk.Client, id string) types.NetworkInterface {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.NetworkInterfaces[0]
}

func available(t *testing.T, c *ec2sdk.Client, subID string) int32 {
	t.Helper()
	out, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{SubnetIds: []string{subID}})
	if err != nil {
		t.Fatal(err)
	}
	return *out.Subnets[0].AvailableIpAddressCount
}

func TestENILifecycleAndLimits(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large) // 3 ENIs x 10 IPv4
	start := available(t, c, subID)

	e1, e2, e3 := newENI(t, c, subID), newENI(t, c, subID), newENI(t, c, subID)
	att, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e1, InstanceId: &inst, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e2, InstanceId: &inst, DeviceIndex: aws.Int32(1)}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("device index taken: %v", err)
	}
	if _, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e2, InstanceId: &inst, DeviceIndex: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e3, InstanceId: &inst, DeviceIndex: aws.Int32(3)}); errCode(err) != "AttachmentLimitExceeded" {
		t.Fatalf("4th ENI on m5.large: %v", err)
	}
	waitFor(t, "attached", func() bool { return describeENI(t, c, e1).Attachment.Status == types.AttachmentStatusAttached })
	if err := ec2sdk.NewNetworkInterfaceAvailableWaiter(c).Wait(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{e3}}, 5e9); err != nil {
		t.Fatal(err)
	}

	// 1 primary + 9 secondary = the limit of 10.
	out, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e1, SecondaryPrivateIpAddressCount: aws.Int32(9)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedPrivateIpAddresses) != 9 {
		t.Fatalf("assigned %d", len(out.AssignedPrivateIpAddresses))
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e1, SecondaryPrivateIpAddressCount: aws.Int32(1)}); errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("11th address: %v", err)
	}
	if got := available(t, c, subID); got != start-3-9 {
		t.Fatalf("available %d, want %d", got, start-12)
	}
	// Unassign two, one of them the primary: refused, nothing changes.
	prim := *describeENI(t, c, e1).PrivateIpAddress
	sec := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e1, PrivateIpAddresses: []string{sec, prim}}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("unassign primary: %v", err)
	}
	if n := len(describeENI(t, c, e1).PrivateIpAddresses); n != 10 {
		t.Fatalf("failed unassign changed the ENI: %d addresses", n)
	}
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e1, PrivateIpAddresses: []string{sec}}); err != nil {
		t.Fatal(err)
	}
	// Prefixes count against the same limit and are aligned /28s in the subnet.
	pout, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e2, Ipv4PrefixCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.0.1.0/24")
	for _, p := range pout.AssignedIpv4Prefixes {
		pp := netip.MustParsePrefix(*p.Ipv4Prefix)
		if pp.Bits() != 28 || pp.Masked() != pp || !subnet.Contains(pp.Addr()) {
			t.Fatalf("bad prefix %s", pp)
		}
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e2, Ipv4PrefixCount: aws.Int32(8)}); errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("prefixes over the limit: %v", err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e2, Ipv4PrefixCount: aws.Int32(1), SecondaryPrivateIpAddressCount: aws.Int32(1)}); errCode(err) != "InvalidParameterCombination" {
		t.Fatalf("addresses and prefixes together: %v", err)
	}

	// Filters.
	f, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{inst}}, {Name: aws.String("status"), Values: []string{"in-use"}}}})
	if err != nil || len(f.NetworkInterfaces) != 3 {
		t.Fatalf("filter by instance: %v %d", err, len(f.NetworkInterfaces))
	}

	// Delete in use is refused; detach, then delete returns every address.
	if _, err := c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e1}); errCode(err) != "InvalidNetworkInterface.InUse" {
		t.Fatalf("delete in use: %v", err)
	}
	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: att.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	if err := ec2sdk.NewNetworkInterfaceAvailableWaiter(c).Wait(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{e1}}, 5e9); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e1}); err != nil {
		t.Fatal(err)
	}
	primary := describeInstancePrimaryAttachment(t, c, inst)
	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: &primary}); errCode(err) != "OperationNotPermitted" {
		t.Fatalf("detach primary: %v", err)
	}

	// DeleteOnTermination set through Modify: terminating deletes e2.
	e2att := describeENI(t, c, e2).Attachment.AttachmentId
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &e2,
		Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: e2att, DeleteOnTermination: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &e3,
		SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	if *describeENI(t, c, e3).SourceDestCheck {
		t.Fatal("source/dest check not disabled")
	}
	if _, err := c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{inst}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{e2}}); errCode(err) != "InvalidNetworkInterfaceID.NotFound" {
		t.Fatalf("e2 survived termination: %v", err)
	}
	if got := available(t, c, subID); got != start+1-1 {
		// start counted the instance's primary address; e3 still holds one.
		t.Fatalf("available %d after cleanup, want %d", got, start)
	}
}

func describeInstancePrimaryAttachment(t *testing.T, c *ec2sdk.Client, inst string) string {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{inst}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range out.Reservations[0].Instances[0].NetworkInterfaces {
		if *n.Attachment.DeviceIndex == 0 {
			return *n.Attachment.AttachmentId
		}
	}
	t.Fatal("no primary ENI")
	return ""
}

func TestSmallInstanceLimits(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeT3Nano) // 2 ENIs x 2 IPv4
	e := newENI(t, c, subID)
	if _, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e, InstanceId: &inst, DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(2)}); errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("t3.nano allows 2 addresses per ENI: %v", err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
}

func TestFragmentationExhaustsPrefixesFirst(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.5.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	// A /26 has four /28 blocks; the first holds the reserved addresses and
	// the last the broadcast, so two are usable until addresses scatter.
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.5.0.0/26"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	subID := *s.Subnet.SubnetId
	e := newENI(t, c, subID)
	// One address in each middle block.
	for _, a := range []string{"10.5.0.20", "10.5.0.40"} {
		if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{a}}); err != nil {
			t.Fatalf("assign %s: %v", a, err)
		}
	}
	before := available(t, c, subID)
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(1)}); errCode(err) != "InsufficientCidrBlocks" {
		t.Fatalf("prefix in a fragmented subnet: %v", err)
	}
	if got := available(t, c, subID); got != before {
		t.Fatalf("failed prefix call leaked addresses: %d -> %d", before, got)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
		t.Fatalf("single address still fits: %v", err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(before)}); errCode(err) != "InsufficientFreeAddressesInSubnet" && errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("exhaust: %v", err)
	}
}

func TestDescribeENIPagination(t *testing.T) {
	c, _ := newTestClient(t)
	_, subID := testVPC(t, c)
	for i := 0; i < 12; i++ {
		newENI(t, c, subID)
	}
	p := ec2sdk.NewDescribeNetworkInterfacesPaginator(c, &ec2sdk.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(5)})
	seen := map[string]bool{}
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range out.NetworkInterfaces {
			if seen[*e.NetworkInterfaceId] {
				t.Fatalf("%s on two pages", *e.NetworkInterfaceId)
			}
			seen[*e.NetworkInterfaceId] = true
		}
	}
	if len(seen) != 12 || pages != 3 {
		t.Fatalf("%d ENIs over %d pages", len(seen), pages)
	}
}

func TestIPv6Addresses(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.6.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.6.1.0/24"), AvailabilityZone: aws.String("us-west-2b")})
	if err != nil {
		t.Fatal(err)
	}
	e := newENI(t, c, *s.Subnet.SubnetId)
	out, err := c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6AddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedIpv6Addresses) != 2 {
		t.Fatalf("assigned %v", out.AssignedIpv6Addresses)
	}
	if _, err := c.UnassignIpv6Addresses(ctx, &ec2sdk.UnassignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6Addresses: out.AssignedIpv6Addresses[:1]}); err != nil {
		t.Fatal(err)
	}
	if n := len(describeENI(t, c, e).Ipv6Addresses); n != 1 {
		t.Fatalf("%d IPv6 addresses left", n)
	}
}
