package ipamd_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestENITagsAndSubnetDiscovery: ENIs ipamd creates carry the instance tag
// and ADDITIONAL_ENI_TAGS, and land in the subnet tagged
// kubernetes.io/role/cni (ENABLE_SUBNET_DISCOVERY) of the node's AZ.
func TestENITagsAndSubnetDiscovery(t *testing.T) {
	cl := newCluster(t, "10.74.0.0/16", "10.74.0.0/24")
	ctx := context.Background()
	pods, err := cl.ec2.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: &cl.vpc, CidrBlock: aws.String("10.74.64.0/18"), AvailabilityZone: aws.String("us-west-2a"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSubnet, Tags: []ec2types.Tag{{Key: aws.String("kubernetes.io/role/cni"), Value: aws.String("1")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	// t3.medium: 5 pods fit the primary ENI; the 6th needs a new one.
	n := cl.startNode(t, "t3.medium", `ADDITIONAL_ENI_TAGS={"team":"net","cost-center":"42"}`)
	for i := 0; i < 7; i++ {
		if _, err := n.add(t, fmt.Sprintf("t%d", i)); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
	}
	out, err := cl.ec2.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:node.k8s.amazonaws.com/instance_id"), Values: []string{n.inst.ID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.NetworkInterfaces) == 0 {
		t.Fatal("no ENI carries the node.k8s.amazonaws.com/instance_id tag")
	}
	for _, e := range out.NetworkInterfaces {
		tags := map[string]string{}
		for _, tg := range e.TagSet {
			tags[*tg.Key] = *tg.Value
		}
		if tags["team"] != "net" || tags["cost-center"] != "42" || tags["node.k8s.amazonaws.com/createdAt"] == "" {
			t.Errorf("ENI %s tags %v", *e.NetworkInterfaceId, tags)
		}
		if *e.SubnetId != *pods.Subnet.SubnetId {
			t.Errorf("ENI %s in %s, want the kubernetes.io/role/cni subnet %s", *e.NetworkInterfaceId, *e.SubnetId, *pods.Subnet.SubnetId)
		}
		if *e.Description != "aws-K8S-"+n.inst.ID {
			t.Errorf("ENI description %q", *e.Description)
		}
	}
}
