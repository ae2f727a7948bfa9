package csiefs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	efssdk "github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// fillAccessPoints creates n access points holding GIDs from 50000 up, so
// that CreateVolume's allocation has to list and skip them all.
func (cl *cluster) fillAccessPoints(b *testing.B, n int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g := int64(50000 + i)
			_, err := cl.efs.CreateAccessPoint(context.Background(), &efssdk.CreateAccessPointInput{FileSystemId: aws.String(cl.fsID),
				ClientToken: aws.String(fmt.Sprintf("fill-%d", i)), PosixUser: &efstypes.PosixUser{Uid: aws.Int64(g), Gid: aws.Int64(g)}})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkCreateVolume measures CreateVolume (list the file system's
// access points, allocate a GID, CreateAccessPoint) as a ratio to the
// floor: one bare CreateAccessPoint call, with 0 and 1000 access points
// already on the file system.
func BenchmarkCreateVolume(b *testing.B) {
	for _, existing := range []int{0, 1000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			cl := newCluster(b)
			n := cl.startNode(b, "--mode", "controller")
			cl.fillAccessPoints(b, existing)
			ctx := context.Background()
			params := cl.params()
			var driver, floor time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				out, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: fmt.Sprintf("bench-%d", i), Parameters: params,
					VolumeCapabilities: []*csi.VolumeCapability{rwx}})
				if err != nil {
					b.Fatal(err)
				}
				driver += time.Since(start)
				start = time.Now()
				ap, err := cl.efs.CreateAccessPoint(ctx, &efssdk.CreateAccessPointInput{FileSystemId: aws.String(cl.fsID),
					ClientToken: aws.String(fmt.Sprintf("floor-%d", i)), PosixUser: &efstypes.PosixUser{Uid: aws.Int64(1), Gid: aws.Int64(1)},
					RootDirectory: &efstypes.RootDirectory{Path: aws.String(fmt.Sprintf("/floor-%d", i)),
						CreationInfo: &efstypes.CreationInfo{OwnerUid: aws.Int64(1), OwnerGid: aws.Int64(1), Permissions: aws.String("700")}}})
				if err != nil {
					b.Fatal(err)
				}
				floor += time.Since(start)
				b.StopTimer()
				if _, err := n.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: out.Volume.VolumeId}); err != nil {
					b.Fatal(err)
				}
				if _, err := cl.efs.DeleteAccessPoint(ctx, &efssdk.DeleteAccessPointInput{AccessPointId: ap.AccessPointId}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(driver.Microseconds())/1000/float64(b.N), "create-ms")
			b.ReportMetric(float64(floor.Microseconds())/1000/float64(b.N), "floor-ms")
			b.ReportMetric(float64(driver)/float64(floor), "x-floor")
		})
	}
}

// BenchmarkPodMount measures what a pod costs the node: NodePublish +
// NodeUnpublish of a volume already staged on the node (berth: one mount
// per volume per node), against NodeStage + NodePublish + NodeUnpublish +
// NodeUnstage (a mount per pod, as without staging), and against the floor
// of a bare bind mount and unmount. In local mode the stage is itself a
// bind mount; with efs-utils it is an NFS mount plus a TLS proxy.
func BenchmarkPodMount(b *testing.B) {
	cl := newCluster(b)
	n := cl.startNode(b)
	ctx := context.Background()
	vol := cl.create(b, n, "bench-pod", cl.params())
	base := filepath.Join(cl.dir, "kubelet")
	staging, target, floorDir := filepath.Join(base, "staging"), filepath.Join(base, "pod"), filepath.Join(base, "floor")
	src := filepath.Join(cl.efsRoot(), cl.fsID)
	stage := func() {
		if _, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, VolumeCapability: rwx}); err != nil {
			b.Fatal(err)
		}
	}
	unstage := func() {
		if _, err := n.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: staging}); err != nil {
			b.Fatal(err)
		}
	}
	pod := func() {
		if _, err := n.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: staging, TargetPath: target, VolumeCapability: rwx}); err != nil {
			b.Fatal(err)
		}
		if _, err := n.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: target}); err != nil {
			b.Fatal(err)
		}
	}
	var staged, perPod, floor time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stage()
		start := time.Now()
		pod()
		staged += time.Since(start)
		unstage()

		start = time.Now()
		stage()
		pod()
		unstage()
		perPod += time.Since(start)

		start = time.Now()
		if err := os.MkdirAll(floorDir, 0o750); err != nil {
			b.Fatal(err)
		}
		if err := unix.Mount(src, floorDir, "", unix.MS_BIND, ""); err != nil {
			b.Fatal(err)
		}
		if err := unix.Unmount(floorDir, 0); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(floorDir); err != nil {
			b.Fatal(err)
		}
		floor += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(staged.Microseconds())/1000/float64(b.N), "publish+unpublish-ms")
	b.ReportMetric(float64(perPod.Microseconds())/1000/float64(b.N), "stage+publish+unpublish+unstage-ms")
	b.ReportMetric(float64(floor.Microseconds())/1000/float64(b.N), "floor-ms")
	b.ReportMetric(float64(staged)/float64(floor), "x-floor")
}
