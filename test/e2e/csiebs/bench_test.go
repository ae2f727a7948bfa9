package csiebs_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/test/e2e"
)

func wipe(b *testing.B, dev string) {
	b.Helper()
	if out, err := exec.Command("wipefs", "-a", "-q", dev).CombinedOutput(); err != nil {
		b.Fatalf("wipefs %s: %v %s", dev, err, out)
	}
}

// BenchmarkNodeStagePublish measures NodeStage+NodePublish of a blank
// 1 GiB volume (blkid, mkfs.ext4, mount, bind mount, all through gRPC) as a
// ratio to the floor: mkfs.ext4 and mount of the same loop device directly.
func BenchmarkNodeStagePublish(b *testing.B) {
	_, err := exec.LookPath("wipefs")
	e2e.Require(b, err == nil, "wipefs not installed")
	cl := newCluster(b)
	n := cl.startNode(b, "m5.large")
	ctx := context.Background()
	c := mountCap("ext4")
	vol, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "bench-stage", VolumeCapabilities: []*csi.VolumeCapability{c},
		CapacityRange: &csi.CapacityRange{RequiredBytes: gib}})
	if err != nil {
		b.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	pub, err := n.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: n.inst.ID, VolumeCapability: c})
	if err != nil {
		b.Fatal(err)
	}
	dev, err := filepath.EvalSymlinks("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(id, "-", ""))
	if err != nil {
		b.Fatal(err)
	}
	staging, target, floorDir := filepath.Join(cl.dir, "bstaging"), filepath.Join(cl.dir, "btarget"), filepath.Join(cl.dir, "bfloor")
	for _, d := range []string{staging, floorDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			b.Fatal(err)
		}
	}
	var driver, floor time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		wipe(b, dev)
		b.StartTimer()
		start := time.Now()
		if _, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, PublishContext: pub.GetPublishContext(),
			StagingTargetPath: staging, VolumeCapability: c}); err != nil {
			b.Fatal(err)
		}
		if _, err := n.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, PublishContext: pub.GetPublishContext(),
			StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
			b.Fatal(err)
		}
		driver += time.Since(start)
		b.StopTimer()
		if _, err := n.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
			b.Fatal(err)
		}
		if _, err := n.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			b.Fatal(err)
		}
		wipe(b, dev)
		b.StartTimer()
		// The floor: what any driver must do for a blank volume.
		start = time.Now()
		if out, err := exec.Command("mkfs.ext4", "-F", "-m0", dev).CombinedOutput(); err != nil {
			b.Fatalf("mkfs.ext4: %v %s", err, out)
		}
		if err := unix.Mount(dev, floorDir, "ext4", 0, ""); err != nil {
			b.Fatalf("mount: %v", err)
		}
		floor += time.Since(start)
		b.StopTimer()
		if err := unix.Unmount(floorDir, 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(driver.Microseconds())/1000/float64(b.N), "stage+publish-ms")
	b.ReportMetric(float64(floor.Microseconds())/1000/float64(b.N), "floor-ms")
	b.ReportMetric(float64(driver)/float64(floor), "x-floor")
}

// BenchmarkDescribePer100Attaches attaches 100 volumes to 4 instances
// concurrently through the controller and counts the EC2 Describe calls
// localcloud answered, with Describe batching (the default 20 ms window)
// and without it (a 1 ns window).
func BenchmarkDescribePer100Attaches(b *testing.B) {
	for _, mode := range []struct{ name, delay string }{{"batched", "20ms"}, {"unbatched", "1ns"}} {
		b.Run(mode.name, func(b *testing.B) {
			cl := newCluster(b)
			var insts []e2e.Instance
			for i := 0; i < 4; i++ {
				insts = append(insts, e2e.RunInstance(b, cl.ec2, cl.sub, "m5.large"))
			}
			ctrl := cl.startDriver(b, insts[0], "--mode", "controller", "--describe-batch-delay", mode.delay)
			ctx := context.Background()
			var vols []string
			for i := 0; i < 100; i++ {
				out, err := cl.ec2.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1)})
				if err != nil {
					b.Fatal(err)
				}
				vols = append(vols, *out.VolumeId)
			}
			e2e.WaitFor(b, "100 volumes available", 30*time.Second, func() bool {
				out, err := cl.ec2.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{})
				if err != nil {
					return false
				}
				for _, v := range out.Volumes {
					if v.State != "available" {
						return false
					}
				}
				return len(out.Volumes) == 100
			})
			c := blockCap()
			each := func(fn func(vol, inst string) error) error {
				var wg sync.WaitGroup
				errs := make(chan error, len(vols))
				for i, v := range vols {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := fn(v, insts[i%len(insts)].ID); err != nil {
							errs <- fmt.Errorf("%s on %s: %w", v, insts[i%len(insts)].ID, err)
						}
					}()
				}
				wg.Wait()
				close(errs)
				return <-errs
			}
			var describes, throttles, elapsed float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cl.resetCalls(b)
				b.StartTimer()
				start := time.Now()
				if err := each(func(vol, inst string) error {
					_, err := ctrl.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol, NodeId: inst, VolumeCapability: c})
					return err
				}); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start).Seconds()
				b.StopTimer()
				calls, throttled := cl.calls(b)
				describes += float64(calls["ec2:DescribeVolumes"] + calls["ec2:DescribeInstances"])
				for _, n := range throttled {
					throttles += float64(n)
				}
				if err := each(func(vol, inst string) error {
					_, err := ctrl.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: inst})
					return err
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(describes/float64(b.N), "describes/100-attaches")
			b.ReportMetric(throttles/float64(b.N), "throttled/100-attaches")
			b.ReportMetric(elapsed/float64(b.N), "s/100-attaches")
		})
	}
}
