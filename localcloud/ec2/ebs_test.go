package ec2

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestCreateVolumeValidation(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	az := aws.String("us-west-2a")
	for _, tc := range []struct {
		name string
		in   ec2sdk.CreateVolumeInput
		code string
		iops int32
		tput int32
	}{
		{"gp3 defaults", ec2sdk.CreateVolumeInput{Size: aws.Int32(10)}, "", 3000, 125},
		{"gp2 baseline", ec2sdk.CreateVolumeInput{Size: aws.Int32(100), VolumeType: types.VolumeTypeGp2}, "", 300, 0},
		{"gp2 floor", ec2sdk.CreateVolumeInput{Size: aws.Int32(10), VolumeType: types.VolumeTypeGp2}, "", 100, 0},
		{"io1", ec2sdk.CreateVolumeInput{Size: aws.Int32(100), VolumeType: types.VolumeTypeIo1, Iops: aws.Int32(5000)}, "", 5000, 0},
		{"io1 ratio", ec2sdk.CreateVolumeInput{Size: aws.Int32(10), VolumeType: types.VolumeTypeIo1, Iops: aws.Int32(5000)}, "InvalidParameterValue", 0, 0},
		{"io2 needs iops", ec2sdk.CreateVolumeInput{Size: aws.Int32(10), VolumeType: types.VolumeTypeIo2}, "MissingParameter", 0, 0},
		{"gp2 iops", ec2sdk.CreateVolumeInput{Size: aws.Int32(10), VolumeType: types.VolumeTypeGp2, Iops: aws.Int32(300)}, "InvalidParameterCombination", 0, 0},
		{"st1 too small", ec2sdk.CreateVolumeInput{Size: aws.Int32(100), VolumeType: types.VolumeTypeSt1}, "InvalidParameterValue", 0, 0},
		{"gp3 throughput ratio", ec2sdk.CreateVolumeInput{Size: aws.Int32(100), Throughput: aws.Int32(1000)}, "InvalidParameterValue", 0, 0},
		{"gp3 custom", ec2sdk.CreateVolumeInput{Size: aws.Int32(100), Iops: aws.Int32(6000), Throughput: aws.Int32(500)}, "", 6000, 500},
		{"too big", ec2sdk.CreateVolumeInput{Size: aws.Int32(20000)}, "InvalidParameterValue", 0, 0},
		{"no size", ec2sdk.CreateVolumeInput{}, "MissingParameter", 0, 0},
		{"kms without encryption", ec2sdk.CreateVolumeInput{Size: aws.Int32(1), KmsKeyId: aws.String("k")}, "InvalidParameterDependency", 0, 0},
		{"multi-attach gp3", ec2sdk.CreateVolumeInput{Size: aws.Int32(1), MultiAttachEnabled: aws.Bool(true)}, "InvalidParameterCombination", 0, 0},
		{"bad type", ec2sdk.CreateVolumeInput{Size: aws.Int32(1), VolumeType: "gp9"}, "InvalidParameterValue", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.AvailabilityZone = az
			out, err := c.CreateVolume(ctx, &in)
			if errCode(err) != tc.code {
				t.Fatalf("got %v, want %q", err, tc.code)
			}
			if tc.code == "" && (aws.ToInt32(out.Iops) != tc.iops || aws.ToInt32(out.Throughput) != tc.tput) {
				t.Fatalf("iops %d throughput %d, want %d %d", aws.ToInt32(out.Iops), aws.ToInt32(out.Throughput), tc.iops, tc.tput)
			}
		})
	}
}

func TestCreateVolumeIdempotent(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	in := &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(5), ClientToken: aws.String("pvc-1")}
	a, err := c.CreateVolume(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateVolume(ctx, in)
	if err != nil || *a.VolumeId != *b.VolumeId {
		t.Fatalf("retry with the same token: %v", err)
	}
	in.Size = aws.Int32(6)
	if _, err := c.CreateVolume(ctx, in); errCode(err) != "IdempotentParameterMismatch" {
		t.Fatalf("same token, other size: %v", err)
	}
}

func TestVolumeAttachLifecycle(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c) // us-west-2a
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	vol, err := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(8),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("pvc"), Value: aws.String("data")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := *vol.VolumeId
	if err := ec2sdk.NewVolumeAvailableWaiter(c).Wait(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	other, _ := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2b"), Size: aws.Int32(1)})
	waitFor(t, "other volume", func() bool {
		o, _ := c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{*other.VolumeId}})
		return o.Volumes[0].State == types.VolumeStateAvailable
	})
	if _, err := c.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: other.VolumeId, InstanceId: &inst, Device: aws.String("/dev/xvdba")}); errCode(err) != "InvalidVolume.ZoneMismatch" {
		t.Fatalf("zone mismatch: %v", err)
	}
	att, err := c.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/xvdba")})
	if err != nil {
		t.Fatal(err)
	}
	if att.State != types.VolumeAttachmentStateAttaching && att.State != types.VolumeAttachmentStateAttached {
		t.Fatalf("attach state %s", att.State)
	}
	if err := ec2sdk.NewVolumeInUseWaiter(c).Wait(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteVolume(ctx, &ec2sdk.DeleteVolumeInput{VolumeId: &id}); errCode(err) != "VolumeInUse" {
		t.Fatalf("delete attached: %v", err)
	}
	d, err := c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{inst}}, {Name: aws.String("tag:pvc"), Values: []string{"data"}}}})
	if err != nil || len(d.Volumes) != 1 || *d.Volumes[0].Attachments[0].Device != "/dev/xvdba" {
		t.Fatalf("describe attached: %v %+v", err, d)
	}
	if _, err := c.DetachVolume(ctx, &ec2sdk.DetachVolumeInput{VolumeId: &id}); err != nil {
		t.Fatal(err)
	}
	if err := ec2sdk.NewVolumeAvailableWaiter(c).Wait(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachVolume(ctx, &ec2sdk.DetachVolumeInput{VolumeId: &id}); errCode(err) != "IncorrectState" {
		t.Fatalf("detach twice: %v", err)
	}
	if _, err := c.DeleteVolume(ctx, &ec2sdk.DeleteVolumeInput{VolumeId: &id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteVolume(ctx, &ec2sdk.DeleteVolumeInput{VolumeId: &id}); errCode(err) != "InvalidVolume.NotFound" {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestVolumeAttachLimit(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	// m5.large: 28 shared attachments - 1 ENI - 1 root = 26 data volumes.
	devices := "bcdefghijklmnopqrstuvwxyz"
	attach := func(i int) error {
		v, err := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "volume", func() bool {
			o, _ := c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{*v.VolumeId}})
			return o.Volumes[0].State == types.VolumeStateAvailable
		})
		dev := "/dev/xvdb" + string(devices[i%25])
		if i >= 25 {
			dev = "/dev/xvdc" + string(devices[i%25])
		}
		_, err = c.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: v.VolumeId, InstanceId: &inst, Device: &dev})
		return err
	}
	for i := 0; i < 26; i++ {
		if err := attach(i); err != nil {
			t.Fatalf("volume %d: %v", i, err)
		}
	}
	if err := attach(26); errCode(err) != "AttachmentLimitExceeded" {
		t.Fatalf("27th volume: %v", err)
	}
}

func TestModifyVolumeAndSnapshots(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	v, err := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2c"), Size: aws.Int32(10), VolumeType: types.VolumeTypeGp2})
	if err != nil {
		t.Fatal(err)
	}
	id := *v.VolumeId
	if err := ec2sdk.NewVolumeAvailableWaiter(c).Wait(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyVolume(ctx, &ec2sdk.ModifyVolumeInput{VolumeId: &id, Size: aws.Int32(5)}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("shrink: %v", err)
	}
	m, err := c.ModifyVolume(ctx, &ec2sdk.ModifyVolumeInput{VolumeId: &id, Size: aws.Int32(20), VolumeType: types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	if *m.VolumeModification.TargetSize != 20 || m.VolumeModification.TargetVolumeType != types.VolumeTypeGp3 || *m.VolumeModification.TargetIops != 3000 {
		t.Fatalf("modification %+v", m.VolumeModification)
	}
	waitFor(t, "modification completes", func() bool {
		o, err := c.DescribeVolumesModifications(ctx, &ec2sdk.DescribeVolumesModificationsInput{VolumeIds: []string{id}})
		return err == nil && o.VolumesModifications[0].ModificationState == types.VolumeModificationStateCompleted
	})
	snap, err := c.CreateSnapshot(ctx, &ec2sdk.CreateSnapshotInput{VolumeId: &id, Description: aws.String("backup")})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec2sdk.NewSnapshotCompletedWaiter(c).Wait(ctx, &ec2sdk.DescribeSnapshotsInput{SnapshotIds: []string{*snap.SnapshotId}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	restored, err := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), SnapshotId: snap.SnapshotId})
	if err != nil || *restored.Size != 20 || *restored.SnapshotId != *snap.SnapshotId {
		t.Fatalf("restore: %v %+v", err, restored)
	}
	if _, err := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), SnapshotId: snap.SnapshotId, Size: aws.Int32(5)}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("restore smaller than the snapshot: %v", err)
	}
	own, err := c.DescribeSnapshots(ctx, &ec2sdk.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{{Name: aws.String("volume-id"), Values: []string{id}}}})
	if err != nil || len(own.Snapshots) != 1 {
		t.Fatalf("describe snapshots: %v %+v", err, own)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2sdk.DeleteSnapshotInput{SnapshotId: snap.SnapshotId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2sdk.DeleteSnapshotInput{SnapshotId: snap.SnapshotId}); errCode(err) != "InvalidSnapshot.NotFound" {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestTerminateDeletesDeleteOnTerminationVolumes(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	v, _ := c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(1)})
	waitFor(t, "volume", func() bool {
		o, _ := c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{*v.VolumeId}})
		return o.Volumes[0].State == types.VolumeStateAvailable
	})
	if _, err := c.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: v.VolumeId, InstanceId: &inst, Device: aws.String("/dev/xvdbb")}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Update(ctx, func(st *State) error {
		st.Volumes[*v.VolumeId].Attachments[0].DeleteOnTermination = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{inst}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{*v.VolumeId}}); errCode(err) != "InvalidVolume.NotFound" {
		t.Fatalf("volume survived: %v", err)
	}
}
