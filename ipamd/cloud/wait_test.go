package cloud

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// stuckEC2 creates and attaches ENIs that never show as attached, and
// refuses to delete them while "in use" (a detachment stuck in detaching).
type stuckEC2 struct {
	EC2API
	deletes, describes atomic.Int32
}

func (f *stuckEC2) CreateNetworkInterface(context.Context, *ec2.CreateNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error) {
	return &ec2.CreateNetworkInterfaceOutput{NetworkInterface: &types.NetworkInterface{NetworkInterfaceId: aws.String("eni-stuck")}}, nil
}

func (f *stuckEC2) AttachNetworkInterface(context.Context, *ec2.AttachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.AttachNetworkInterfaceOutput, error) {
	return &ec2.AttachNetworkInterfaceOutput{AttachmentId: aws.String("eni-attach-1")}, nil
}

func (f *stuckEC2) ModifyNetworkInterfaceAttribute(context.Context, *ec2.ModifyNetworkInterfaceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error) {
	return &ec2.ModifyNetworkInterfaceAttributeOutput{}, nil
}

func (f *stuckEC2) DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error) {
	f.describes.Add(1)
	return &ec2.DescribeNetworkInterfacesOutput{NetworkInterfaces: []types.NetworkInterface{{NetworkInterfaceId: aws.String("eni-stuck"),
		Status: types.NetworkInterfaceStatusInUse, Attachment: &types.NetworkInterfaceAttachment{AttachmentId: aws.String("eni-attach-1"),
			Status: types.AttachmentStatusAttaching}}}}, nil
}

func (f *stuckEC2) DetachNetworkInterface(context.Context, *ec2.DetachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DetachNetworkInterfaceOutput, error) {
	return &ec2.DetachNetworkInterfaceOutput{}, nil
}

func (f *stuckEC2) DeleteNetworkInterface(context.Context, *ec2.DeleteNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error) {
	f.deletes.Add(1)
	return nil, &smithy.GenericAPIError{Code: "InvalidNetworkInterface.InUse", Message: "The interface is currently in use."}
}

// An attachment that never completes and a detachment that never ends
// fail CreateENI and FreeENI after a bound, with the daemon's context
// (which never ends) passed in: before, both polled EC2 forever and held
// the pool's EC2 lock, so every later ADD failed until ipamd restarted.
func TestEC2WaitsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &stuckEC2{}
		c, _ := newTestAWS(t, f)
		start := time.Now()
		_, err := c.CreateENI(context.Background(), CreateENIRequest{SubnetID: "subnet-1", Device: 1, IPs: 9})
		if err == nil || !strings.Contains(err.Error(), "not attached after") {
			t.Fatalf("CreateENI of an ENI that never attaches: %v", err)
		}
		if d := time.Since(start); d < attachWait || d > 2*attachWait {
			t.Errorf("CreateENI gave up after %s, want about %s", d, attachWait)
		}
		// Its clean-up (FreeENI) met the stuck detachment: bounded too.
		if n := f.deletes.Load(); n != deleteAttempts {
			t.Errorf("the failed ENI's clean-up tried %d deletes, want %d", n, deleteAttempts)
		}
		f.deletes.Store(0)
		if err := c.FreeENI(context.Background(), "eni-stuck"); err == nil || !strings.Contains(err.Error(), "still in use after 20 attempts") {
			t.Fatalf("FreeENI of an ENI stuck detaching: %v", err)
		}
		if n := f.deletes.Load(); n != deleteAttempts {
			t.Errorf("FreeENI tried %d deletes, want %d", n, deleteAttempts)
		}
	})
}

// pagedSubnets answers DescribeSubnets a page at a time, as EC2 may.
type pagedSubnets struct {
	EC2API
	pages [][]types.Subnet
}

func (f *pagedSubnets) DescribeSubnets(_ context.Context, in *ec2.DescribeSubnetsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	i := 0
	if in.NextToken != nil {
		fmt.Sscan(*in.NextToken, &i)
	}
	out := &ec2.DescribeSubnetsOutput{Subnets: f.pages[i]}
	if i+1 < len(f.pages) {
		out.NextToken = aws.String(fmt.Sprint(i + 1))
	}
	return out, nil
}

// A subnet tagged for pod ENIs on the second page of DescribeSubnets is
// found: before, only the first page was read.
func TestCNISubnetsReadsEveryPage(t *testing.T) {
	sub := func(id, cidr string, tags ...types.Tag) types.Subnet {
		return types.Subnet{SubnetId: aws.String(id), CidrBlock: aws.String(cidr), AvailableIpAddressCount: aws.Int32(100), Tags: tags}
	}
	f := &pagedSubnets{pages: [][]types.Subnet{{sub("subnet-1", "10.0.0.0/24")},
		{sub("subnet-pods", "10.0.8.0/22", types.Tag{Key: aws.String("kubernetes.io/role/cni"), Value: aws.String("1")})}}}
	c, _ := newTestAWS(t, f)
	subs, err := c.CNISubnets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range subs {
		ids = append(ids, s.ID)
	}
	if fmt.Sprint(ids) != "[subnet-1 subnet-pods]" && fmt.Sprint(ids) != "[subnet-pods subnet-1]" {
		t.Fatalf("subnets %v, want both pages'", ids)
	}
}
