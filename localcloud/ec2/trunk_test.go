package ec2

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

func createTyped(t *testing.T, c *ec2sdk.Client, sub string, typ types.NetworkInterfaceCreationType) string {
	t.Helper()
	out, err := c.CreateNetworkInterface(context.Background(), &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &sub, InterfaceType: typ})
	if err != nil {
		t.Fatal(err)
	}
	if typ != "" && string(out.NetworkInterface.InterfaceType) != string(typ) {
		t.Fatalf("interface type %s, want %s", out.NetworkInterface.InterfaceType, typ)
	}
	return *out.NetworkInterface.NetworkInterfaceId
}

func wantCode(t *testing.T, err error, code, msgPart string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msgPart) {
		t.Fatalf("got %v, want %s containing %q", err, code, msgPart)
	}
}

func TestTrunkAssociations(t *testing.T) {
	c, svc := newTestClient(t)
	hooks := &recordingHooks{}
	svc.SetHooks(hooks)
	ctx := context.Background()
	_, sub := testVPC(t, c)
	trunk := createTyped(t, c, sub, types.NetworkInterfaceCreationTypeTrunk)
	branch := createTyped(t, c, sub, types.NetworkInterfaceCreationTypeBranch)
	branch2 := createTyped(t, c, sub, types.NetworkInterfaceCreationTypeBranch)
	plain := createTyped(t, c, sub, "")

	_, err := c.CreateNetworkInterface(ctx, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &sub, InterfaceType: "bogus"})
	wantCode(t, err, "InvalidParameterValue", "InterfaceType")

	// A branch is never attached to an instance itself.
	inst, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeM5Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &sub})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &branch, InstanceId: inst.Instances[0].InstanceId, DeviceIndex: aws.Int32(1)})
	wantCode(t, err, "InvalidParameterValue", "cannot be attached")

	assoc := func(b, tr string, vlan int32) (*ec2sdk.AssociateTrunkInterfaceOutput, error) {
		return c.AssociateTrunkInterface(ctx, &ec2sdk.AssociateTrunkInterfaceInput{BranchInterfaceId: &b, TrunkInterfaceId: &tr, VlanId: aws.Int32(vlan)})
	}
	_, err = assoc(plain, trunk, 1)
	wantCode(t, err, "InvalidParameterValue", "not branch")
	_, err = assoc(branch, plain, 1)
	wantCode(t, err, "InvalidParameterValue", "not trunk")
	_, err = assoc(branch, trunk, 4095)
	wantCode(t, err, "InvalidParameterValue", "out of range")
	_, err = assoc(branch, "eni-0000000000000000f", 1)
	wantCode(t, err, "InvalidNetworkInterfaceID.NotFound", "eni-0000000000000000f")

	a, err := assoc(branch, trunk, 7)
	if err != nil {
		t.Fatal(err)
	}
	ia := a.InterfaceAssociation
	if !strings.HasPrefix(*ia.AssociationId, "trunk-assoc-") || *ia.BranchInterfaceId != branch || *ia.TrunkInterfaceId != trunk ||
		*ia.VlanId != 7 || ia.InterfaceProtocol != types.InterfaceProtocolTypeVlan {
		t.Fatalf("association %+v", ia)
	}
	_, err = assoc(branch2, trunk, 7)
	wantCode(t, err, "InvalidParameterValue", "already in use")
	_, err = assoc(branch, trunk, 8)
	wantCode(t, err, "InvalidParameterValue", "already associated")
	if _, err := assoc(branch2, trunk, 8); err != nil {
		t.Fatal(err)
	}

	desc, err := c.DescribeTrunkInterfaceAssociations(ctx, &ec2sdk.DescribeTrunkInterfaceAssociationsInput{
		Filters: []types.Filter{{Name: aws.String("trunk-interface-association.branch-interface-id"), Values: []string{branch}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.InterfaceAssociations) != 1 || *desc.InterfaceAssociations[0].AssociationId != *ia.AssociationId {
		t.Fatalf("describe by branch: %+v", desc.InterfaceAssociations)
	}
	all, err := c.DescribeTrunkInterfaceAssociations(ctx, &ec2sdk.DescribeTrunkInterfaceAssociationsInput{})
	if err != nil || len(all.InterfaceAssociations) != 2 {
		t.Fatalf("describe all: %v, %d associations", err, len(all.InterfaceAssociations))
	}
	_, err = c.DescribeTrunkInterfaceAssociations(ctx, &ec2sdk.DescribeTrunkInterfaceAssociationsInput{
		Filters: []types.Filter{{Name: aws.String("nonsense"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue", "nonsense")

	if _, err := c.DisassociateTrunkInterface(ctx, &ec2sdk.DisassociateTrunkInterfaceInput{AssociationId: ia.AssociationId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DisassociateTrunkInterface(ctx, &ec2sdk.DisassociateTrunkInterfaceInput{AssociationId: ia.AssociationId})
	wantCode(t, err, "InvalidAssociationID.NotFound", *ia.AssociationId)
	// Deleting a branch takes it off its trunk.
	if _, err := c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &branch2}); err != nil {
		t.Fatal(err)
	}
	all, err = c.DescribeTrunkInterfaceAssociations(ctx, &ec2sdk.DescribeTrunkInterfaceAssociationsInput{})
	if err != nil || len(all.InterfaceAssociations) != 0 {
		t.Fatalf("after disassociate and delete: %v, %+v", err, all.InterfaceAssociations)
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if n := strings.Count(strings.Join(hooks.events, "\n"), "trunk "+trunk); n != 4 {
		t.Fatalf("datapath told of the trunk %d times, want 4 (two associations, a disassociation, a deletion): %q", n, hooks.events)
	}
}
