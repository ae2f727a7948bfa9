package ec2

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return "non-API error: " + err.Error()
	}
	return ""
}

func TestVPCSubnetLifecycle(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	vpcID, subID := testVPC(t, c)

	subs, err := c.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(subs.Subnets) != 1 || *subs.Subnets[0].SubnetId != subID {
		t.Fatalf("subnets of %s: %+v", vpcID, subs.Subnets)
	}
	// A /24 has 256 addresses; EC2 reserves 5.
	if got := *subs.Subnets[0].AvailableIpAddressCount; got != 251 {
		t.Fatalf("available addresses %d, want 251", got)
	}
	if *subs.Subnets[0].AvailabilityZoneId != "usw2-az1" {
		t.Fatalf("az id %s", *subs.Subnets[0].AvailabilityZoneId)
	}

	for _, tc := range []struct {
		name string
		in   *ec2sdk.CreateSubnetInput
		code string
	}{
		{"outside the VPC", &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("10.1.0.0/24")}, "InvalidSubnet.Range"},
		{"overlapping", &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("10.0.1.128/25")}, "InvalidSubnet.Conflict"},
		{"too small", &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("10.0.2.0/29")}, "InvalidParameterValue"},
		{"unknown VPC", &ec2sdk.CreateSubnetInput{VpcId: aws.String("vpc-00000000000000000"), CidrBlock: aws.String("10.0.2.0/24")}, "InvalidVpcID.NotFound"},
		{"bad zone", &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("10.0.3.0/24"), AvailabilityZone: aws.String("eu-west-1a")}, "InvalidParameterValue"},
	} {
		if _, err := c.CreateSubnet(ctx, tc.in); errCode(err) != tc.code {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	if _, err := c.DeleteVpc(ctx, &ec2sdk.DeleteVpcInput{VpcId: &vpcID}); errCode(err) != "DependencyViolation" {
		t.Fatalf("delete VPC with a subnet: %v", err)
	}
	if _, err := c.DeleteSubnet(ctx, &ec2sdk.DeleteSubnetInput{SubnetId: &subID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteVpc(ctx, &ec2sdk.DeleteVpcInput{VpcId: &vpcID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{VpcIds: []string{vpcID}}); errCode(err) != "InvalidVpcID.NotFound" {
		t.Fatalf("deleted VPC: %v", err)
	}
}

func TestUnknownFilterAndAction(t *testing.T) {
	c, _ := newTestClient(t)
	_, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("no-such-filter"), Values: []string{"x"}}}})
	if errCode(err) != "InvalidParameterValue" {
		t.Fatalf("unknown filter: %v", err)
	}
	_, err = c.DescribeVpcs(context.Background(), &ec2sdk.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("cidr"), Values: []string{"172.31.*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// An action localcloud does not implement gets EC2's answer for it.
	_, err = c.DescribeHosts(context.Background(), &ec2sdk.DescribeHostsInput{})
	if errCode(err) != "InvalidAction" {
		t.Fatalf("unimplemented action: %v", err)
	}
}

func TestRunDescribeTerminateInstances(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho hi\n"))
	run, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{
		ImageId: aws.String("ami-12345678"), InstanceType: types.InstanceTypeM5Large, MinCount: aws.Int32(2), MaxCount: aws.Int32(2),
		SubnetId: &subID, UserData: &ud, ClientToken: aws.String("tok-1"),
		IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String("node-profile")},
		TagSpecifications:  []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("n")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Instances) != 2 {
		t.Fatalf("launched %d", len(run.Instances))
	}
	again, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(2), MaxCount: aws.Int32(2), SubnetId: &subID, ClientToken: aws.String("tok-1")})
	if err != nil || *again.Instances[0].InstanceId != *run.Instances[0].InstanceId {
		t.Fatalf("ClientToken retry launched new instances: %v", err)
	}
	ids := []string{*run.Instances[0].InstanceId, *run.Instances[1].InstanceId}
	if err := ec2sdk.NewInstanceRunningWaiter(c).Wait(ctx, &ec2sdk.DescribeInstancesInput{InstanceIds: ids}, 10e9); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeInstances(ctx, &ec2sdk.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"n"}}}})
	if err != nil {
		t.Fatal(err)
	}
	inst := d.Reservations[0].Instances[0]
	if len(inst.NetworkInterfaces) != 1 || *inst.NetworkInterfaces[0].Attachment.DeviceIndex != 0 ||
		*inst.PrivateIpAddress != *inst.NetworkInterfaces[0].PrivateIpAddress || *inst.PrivateDnsName == "" ||
		*inst.IamInstanceProfile.Arn != "arn:aws:iam::000000000000:instance-profile/node-profile" {
		t.Fatalf("instance %+v", inst)
	}
	if _, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: "x9.huge", MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &subID}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("unknown instance type: %v", err)
	}
	if _, err := c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	if err := ec2sdk.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2sdk.DescribeInstancesInput{InstanceIds: ids}, 10e9); err != nil {
		t.Fatal(err)
	}
	enis, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("subnet-id"), Values: []string{subID}}}})
	if err != nil || len(enis.NetworkInterfaces) != 0 {
		t.Fatalf("primary ENIs survive termination: %v %d", err, len(enis.NetworkInterfaces))
	}
	subs, _ := c.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{SubnetIds: []string{subID}})
	if *subs.Subnets[0].AvailableIpAddressCount != 251 {
		t.Fatalf("addresses not returned to the subnet: %d", *subs.Subnets[0].AvailableIpAddressCount)
	}
}

func TestTags(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	vpcID, subID := testVPC(t, c)
	if _, err := c.CreateTags(ctx, &ec2sdk.CreateTagsInput{Resources: []string{vpcID, subID}, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("net")}}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeTags(ctx, &ec2sdk.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("key"), Values: []string{"team"}}}})
	if err != nil || len(out.Tags) != 2 {
		t.Fatalf("DescribeTags: %v %+v", err, out)
	}
	if _, err := c.DeleteTags(ctx, &ec2sdk.DeleteTagsInput{Resources: []string{subID}, Tags: []types.Tag{{Key: aws.String("team")}}}); err != nil {
		t.Fatal(err)
	}
	subs, _ := c.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("tag:team"), Values: []string{"net"}}}})
	if len(subs.Subnets) != 0 {
		t.Fatalf("tag not deleted")
	}
	if _, err := c.CreateTags(ctx, &ec2sdk.CreateTagsInput{Resources: []string{"vpc-00000000000000000"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}}); errCode(err) != "InvalidVpcID.NotFound" {
		t.Fatalf("tag unknown resource: %v", err)
	}
	if _, err := c.CreateTags(ctx, &ec2sdk.CreateTagsInput{Resources: []string{vpcID}, Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("b")}}}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("reserved tag prefix: %v", err)
	}
}

func TestDescribeInstanceTypes(t *testing.T) {
	c, _ := newTestClient(t)
	out, err := c.DescribeInstanceTypes(context.Background(), &ec2sdk.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceTypeM5Large}})
	if err != nil {
		t.Fatal(err)
	}
	n := out.InstanceTypes[0].NetworkInfo
	if *n.MaximumNetworkInterfaces != 3 || *n.Ipv4AddressesPerInterface != 10 {
		t.Fatalf("m5.large network info %+v", n)
	}
}

// Secondary IPv4 blocks: associated, described, usable by subnets, kept
// apart from the VPC's other blocks and EC2's restricted ranges, limited
// to five blocks, and removable only when no subnet uses them.
func TestVPCSecondaryCIDRs(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	vpcID, _ := testVPC(t, c)
	assoc, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, CidrBlock: aws.String("100.64.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	a := assoc.CidrBlockAssociation
	if *assoc.VpcId != vpcID || *a.CidrBlock != "100.64.0.0/16" || a.CidrBlockState.State != types.VpcCidrBlockStateCodeAssociating || a.AssociationId == nil {
		t.Fatalf("AssociateVpcCidrBlock answered %+v %+v", assoc, a)
	}
	v, err := c.DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("cidr-block-association.cidr-block"), Values: []string{"100.64.0.0/16"}}}})
	if err != nil || len(v.Vpcs) != 1 {
		t.Fatalf("VPC by its secondary block: %v %+v", err, v)
	}
	blocks := map[string]types.VpcCidrBlockStateCode{}
	for _, b := range v.Vpcs[0].CidrBlockAssociationSet {
		blocks[*b.CidrBlock] = b.CidrBlockState.State
	}
	if *v.Vpcs[0].CidrBlock != "10.0.0.0/16" || len(blocks) != 2 || blocks["100.64.0.0/16"] != types.VpcCidrBlockStateCodeAssociated {
		t.Fatalf("VPC blocks %s %v", *v.Vpcs[0].CidrBlock, blocks)
	}
	// Terraform reads an association back by its ID.
	byAssoc, err := c.DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("cidr-block-association.association-id"), Values: []string{*a.AssociationId}}}})
	if err != nil || len(byAssoc.Vpcs) != 1 || *byAssoc.Vpcs[0].VpcId != vpcID {
		t.Fatalf("VPC by its association ID: %v %+v", err, byAssoc)
	}
	sub, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("100.64.8.0/24"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatalf("subnet in the secondary block: %v", err)
	}
	for _, tc := range []struct {
		name, cidr, code string
	}{
		{"overlaps the primary", "10.0.128.0/17", "InvalidVpc.Range"},
		{"overlaps the secondary", "100.64.0.0/20", "InvalidVpc.Range"},
		{"another private range", "192.168.0.0/16", "InvalidVpc.Range"},
		{"198.19/16 with a private primary", "198.19.0.0/16", "InvalidVpc.Range"},
		{"link-local", "169.254.0.0/16", "InvalidVpc.Range"},
		{"loopback", "127.0.0.0/16", "InvalidVpc.Range"},
		{"multicast", "224.0.0.0/16", "InvalidVpc.Range"},
		{"too large", "100.0.0.0/10", "InvalidVpc.Range"},
		{"not a block", "100.65.0.1/16", "InvalidParameterValue"},
	} {
		if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, CidrBlock: aws.String(tc.cidr)}); errCode(err) != tc.code {
			t.Errorf("%s (%s): %v, want %s", tc.name, tc.cidr, err, tc.code)
		}
	}
	if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: aws.String("vpc-00000000000000000"), CidrBlock: aws.String("100.66.0.0/16")}); errCode(err) != "InvalidVpcID.NotFound" {
		t.Errorf("unknown VPC: %v", err)
	}
	if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, AmazonProvidedIpv6CidrBlock: aws.Bool(true)}); errCode(err) != "UnsupportedOperation" {
		t.Errorf("IPv6 block: %v", err)
	}
	for _, cidr := range []string{"100.65.0.0/16", "100.66.0.0/16", "100.67.0.0/16"} {
		if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, CidrBlock: aws.String(cidr)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, CidrBlock: aws.String("100.68.0.0/16")}); errCode(err) != "CidrLimitExceeded" {
		t.Errorf("a sixth block: %v", err)
	}

	primary := *v.Vpcs[0].CidrBlockAssociationSet[0].AssociationId
	for _, tc := range []struct {
		name, id, code string
	}{
		{"the primary block", primary, "OperationNotPermitted"},
		{"a block a subnet uses", *a.AssociationId, "InvalidCidrBlock.InUse"},
		{"unknown", "vpc-cidr-assoc-00000000000000000", "InvalidVpcCidrBlockAssociationID.NotFound"},
	} {
		if _, err := c.DisassociateVpcCidrBlock(ctx, &ec2sdk.DisassociateVpcCidrBlockInput{AssociationId: aws.String(tc.id)}); errCode(err) != tc.code {
			t.Errorf("disassociate %s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if _, err := c.DeleteSubnet(ctx, &ec2sdk.DeleteSubnetInput{SubnetId: sub.Subnet.SubnetId}); err != nil {
		t.Fatal(err)
	}
	d, err := c.DisassociateVpcCidrBlock(ctx, &ec2sdk.DisassociateVpcCidrBlockInput{AssociationId: a.AssociationId})
	if err != nil || d.CidrBlockAssociation.CidrBlockState.State != types.VpcCidrBlockStateCodeDisassociating {
		t.Fatalf("disassociate the unused block: %v %+v", err, d)
	}
	if _, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("100.64.8.0/24")}); errCode(err) != "InvalidSubnet.Range" {
		t.Fatalf("subnet in a disassociated block: %v", err)
	}

	// A VPC whose primary block is not RFC 1918 cannot add one that is.
	cgnat, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("100.64.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, code := range map[string]string{"10.0.0.0/16": "InvalidVpc.Range", "198.19.0.0/16": "", "100.65.0.0/16": ""} {
		if _, err := c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: cgnat.Vpc.VpcId, CidrBlock: aws.String(cidr)}); errCode(err) != code {
			t.Errorf("%s on a 100.64.0.0/16 VPC: %v, want %q", cidr, err, code)
		}
	}
	// The IPv6 block's association is not localcloud's to remove.
	v6, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisassociateVpcCidrBlock(ctx, &ec2sdk.DisassociateVpcCidrBlockInput{AssociationId: v6.Vpc.Ipv6CidrBlockAssociationSet[0].AssociationId}); errCode(err) != "UnsupportedOperation" {
		t.Errorf("disassociate the IPv6 block: %v", err)
	}
}

// A VPC's IPv6 association ID is never its primary block's: it was, for
// one VPC in 16 (IDs starting with 6), and disassociating the IPv6 block
// then hit the primary's refusal.
func TestIPv6AssociationIsNotThePrimarys(t *testing.T) {
	for _, d := range "0123456789abcdef" {
		v := &VPC{ID: "vpc-" + string(d) + "e7fb8733c2d4db65"}
		p, six := v.primaryAssociation(), v.ipv6Association()
		if p == six || len(p) != len(six) {
			t.Errorf("%s: primary %s, IPv6 %s", v.ID, p, six)
		}
	}
}
