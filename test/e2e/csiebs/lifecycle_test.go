package csiebs_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/test/e2e"
)

const gib = int64(1) << 30

// fsSize returns the size of the filesystem mounted at path.
func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * int64(st.Bsize)
}

// stagePublish runs NodeStage and NodePublish on n and returns the target.
func stagePublish(t *testing.T, n *node, volID string, pub map[string]string, c *csi.VolumeCapability, dir string) (staging, target string) {
	t.Helper()
	ctx := context.Background()
	staging, target = filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volID, PublishContext: pub,
		StagingTargetPath: staging, VolumeCapability: c}); err != nil {
		t.Fatalf("NodeStageVolume on %s: %v", n.inst.ID, err)
	}
	if _, err := n.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: volID, PublishContext: pub,
		StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
		t.Fatalf("NodePublishVolume on %s: %v", n.inst.ID, err)
	}
	return staging, target
}

func unpublishUnstage(t *testing.T, n *node, volID, staging, target string) {
	t.Helper()
	ctx := context.Background()
	if _, err := n.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume: %v", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target %s still exists after unpublish (%v)", target, err)
	}
	if _, err := n.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
}

// TestLifecycle moves data between two instances: create, attach, stage
// (real mkfs and mount), publish, write, expand online, unpublish, unstage,
// detach, expand offline, attach to a second instance, and read the data
// back from the grown filesystem.
func TestLifecycle(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			cl := newCluster(t)
			a := cl.startNode(t, "m5.large", "--metrics-addr", "127.0.0.1:9809")
			b := cl.startNode(t, "m5.large", "--mode", "node")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := mountCap(fs)
			size := int64(2)
			if fs == "xfs" {
				size = 3 // xfs wants room for its log
			}

			vol, err := a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-lifecycle-" + fs, VolumeCapabilities: []*csi.VolumeCapability{c},
				CapacityRange:             &csi.CapacityRange{RequiredBytes: size * gib},
				Parameters:                map[string]string{"type": "gp3", "csi.storage.k8s.io/fstype": fs, "tagSpecification_1": "team=storage"},
				AccessibilityRequirements: &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"topology.kubernetes.io/zone": zone}}}}})
			if err != nil {
				t.Fatalf("CreateVolume: %v", err)
			}
			id := vol.GetVolume().GetVolumeId()
			if got := vol.GetVolume().GetAccessibleTopology()[0].GetSegments()["topology.kubernetes.io/zone"]; got != zone {
				t.Errorf("topology zone %q, want %q", got, zone)
			}
			t.Cleanup(func() {
				_, _ = a.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id})
			})

			// Same name, same size: the same volume (ClientToken); other size: AlreadyExists.
			again, err := a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-lifecycle-" + fs, VolumeCapabilities: []*csi.VolumeCapability{c},
				CapacityRange:             &csi.CapacityRange{RequiredBytes: size * gib},
				Parameters:                map[string]string{"type": "gp3", "csi.storage.k8s.io/fstype": fs, "tagSpecification_1": "team=storage"},
				AccessibilityRequirements: &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"topology.kubernetes.io/zone": zone}}}}})
			if err != nil || again.GetVolume().GetVolumeId() != id {
				t.Fatalf("idempotent CreateVolume: %v %v", again, err)
			}

			pub, err := a.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID, VolumeCapability: c})
			if err != nil {
				t.Fatalf("ControllerPublishVolume to %s: %v", a.inst.ID, err)
			}
			dirA := filepath.Join(cl.dir, "node-a")
			stagingA, targetA := stagePublish(t, a, id, pub.GetPublishContext(), c, dirA)
			data := bytes.Repeat([]byte("berth-csi-ebs "), 4096)
			if err := os.WriteFile(filepath.Join(targetA, "data"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			before := fsSize(t, targetA)

			online := before
			if fs == "xfs" { // ext4 online: TestOnlineExpandExt4 (needs CAP_SYS_RESOURCE)
				online = expandOnline(t, a, id, c, stagingA, targetA, size+1)
			}
			stats, err := a.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: targetA})
			if err != nil || len(stats.GetUsage()) != 2 || stats.GetUsage()[0].GetTotal() != online {
				t.Errorf("NodeGetVolumeStats: %+v %v", stats, err)
			}
			health, err := a.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: targetA})
			if err != nil || len(health.GetVolumeHealth().GetHealthStatuses()) != 0 {
				t.Errorf("NodeGetVolumeHealth: %+v %v", health, err)
			}

			// The second node may not publish while the first holds it.
			if _, err := a.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b.inst.ID, VolumeCapability: c}); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("publish to a second node while attached: %v, want FailedPrecondition", err)
			}

			unpublishUnstage(t, a, id, stagingA, targetA)
			if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID}); err != nil {
				t.Fatalf("ControllerUnpublishVolume: %v", err)
			}
			// Already detached: success.
			if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID}); err != nil {
				t.Fatalf("second ControllerUnpublishVolume: %v", err)
			}

			// Offline expansion: the filesystem grows at the next stage.
			if _, err := a.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: (size + 3) * gib}, VolumeCapability: c}); err != nil {
				t.Fatalf("offline ControllerExpandVolume: %v", err)
			}

			pub, err = a.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b.inst.ID, VolumeCapability: c})
			if err != nil {
				t.Fatalf("ControllerPublishVolume to %s: %v", b.inst.ID, err)
			}
			got, err := a.ctrl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: id})
			if err != nil || len(got.GetStatus().GetPublishedNodeIds()) != 1 || got.GetStatus().GetPublishedNodeIds()[0] != b.inst.ID {
				t.Errorf("ControllerGetVolume: %+v %v", got, err)
			}
			stagingB, targetB := stagePublish(t, b, id, pub.GetPublishContext(), c, filepath.Join(cl.dir, "node-b"))
			read, err := os.ReadFile(filepath.Join(targetB, "data"))
			if err != nil || !bytes.Equal(read, data) {
				t.Fatalf("data on the second instance: %d bytes, %v", len(read), err)
			}
			if offline := fsSize(t, targetB); offline < online+gib*9/10 {
				t.Errorf("offline expansion: filesystem %d bytes, was %d", offline, online)
			}
			unpublishUnstage(t, b, id, stagingB, targetB)
			if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: b.inst.ID}); err != nil {
				t.Fatalf("ControllerUnpublishVolume: %v", err)
			}
			if _, err := a.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
				t.Fatalf("DeleteVolume: %v", err)
			}
			if _, err := a.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
				t.Fatalf("second DeleteVolume: %v", err)
			}
			checkMetrics(t, a)
		})
	}
}

// TestBlockVolume publishes a raw block volume and checks the target is
// the device.
func TestBlockVolume(t *testing.T) {
	cl := newCluster(t)
	a := cl.startNode(t, "m5.large")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := blockCap()
	vol, err := a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-block", VolumeCapabilities: []*csi.VolumeCapability{c},
		CapacityRange: &csi.CapacityRange{RequiredBytes: gib}})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	pub, err := a.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID, VolumeCapability: c})
	if err != nil {
		t.Fatal(err)
	}
	staging, target := stagePublish(t, a, id, pub.GetPublishContext(), c, filepath.Join(cl.dir, "block"))
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	end, err := f.Seek(0, 2)
	f.Close()
	if err != nil || end != gib {
		t.Errorf("block target size %d (%v), want %d", end, err, gib)
	}
	stats, err := a.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil || stats.GetUsage()[0].GetTotal() != gib {
		t.Errorf("NodeGetVolumeStats: %+v %v", stats, err)
	}
	unpublishUnstage(t, a, id, staging, target)
	if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
}

// expandOnline grows a published volume to sizeGiB through the controller
// and the node, and returns the grown filesystem's size.
func expandOnline(t *testing.T, n *node, id string, c *csi.VolumeCapability, staging, target string, sizeGiB int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := fsSize(t, target)
	exp, err := n.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: sizeGiB * gib}, VolumeCapability: c})
	if err != nil || exp.GetCapacityBytes() != sizeGiB*gib || !exp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume: %+v %v", exp, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		nexp, err := n.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target,
			StagingTargetPath: staging, CapacityRange: &csi.CapacityRange{RequiredBytes: sizeGiB * gib}, VolumeCapability: c})
		if err != nil {
			t.Fatalf("NodeExpandVolume: %v", err)
		}
		if nexp.GetCapacityBytes() >= sizeGiB*gib {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device still %d bytes after the controller grew it to %d GiB", nexp.GetCapacityBytes(), sizeGiB)
		}
		time.Sleep(200 * time.Millisecond) // localcloud's datapath grows the loop device
	}
	after := fsSize(t, target)
	if after < before+gib*9/10 {
		t.Errorf("online expansion: filesystem %d bytes, was %d", after, before)
	}
	return after
}

// hasCap reports whether the process has an effective capability.
func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}

// TestOnlineExpandExt4 grows a mounted ext4 volume. The kernel's online
// ext4 resize needs CAP_SYS_RESOURCE (xfs needs only CAP_SYS_ADMIN and is
// covered by TestLifecycle/xfs).
//
// Root on this machine kind, CI included, never holds CAP_SYS_RESOURCE.
// There the test proves what it can instead of skipping: the driver
// refuses with a gRPC error, and the mounted filesystem and its data are
// as they were. Online growth itself is proven on xfs (TestLifecycle), and
// ext4 is grown offline at NodeStage.
func TestOnlineExpandExt4(t *testing.T) {
	cl := newCluster(t)
	a := cl.startNode(t, "m5.large")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mountCap("ext4")
	vol, err := a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-online-ext4", VolumeCapabilities: []*csi.VolumeCapability{c},
		CapacityRange: &csi.CapacityRange{RequiredBytes: gib}})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	pub, err := a.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID, VolumeCapability: c})
	if err != nil {
		t.Fatal(err)
	}
	staging, target := stagePublish(t, a, id, pub.GetPublishContext(), c, filepath.Join(cl.dir, "ext4"))
	if hasCap(unix.CAP_SYS_RESOURCE) {
		expandOnline(t, a, id, c, staging, target, 2)
	} else {
		expandRefused(t, a, id, c, target, 2)
	}
	unpublishUnstage(t, a, id, staging, target)
	if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
}

// expandRefused grows the volume while the node plugin lacks the
// capability online ext4 resize needs: NodeExpandVolume must fail with a
// gRPC status once the device is larger, and the filesystem must keep its
// size and its data.
func expandRefused(t *testing.T, n *node, id string, c *csi.VolumeCapability, target string, sizeGiB int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := []byte("written before the expansion")
	if err := os.WriteFile(filepath.Join(target, "data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	before := fsSize(t, target)
	if _, err := n.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: sizeGiB * gib}, VolumeCapability: c}); err != nil {
		t.Fatalf("ControllerExpandVolume: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := n.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target,
			CapacityRange: &csi.CapacityRange{RequiredBytes: sizeGiB * gib}, VolumeCapability: c})
		if err != nil {
			if st, ok := status.FromError(err); !ok || st.Code() == codes.OK || st.Message() == "" {
				t.Fatalf("NodeExpandVolume failed without a gRPC status: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("NodeExpandVolume kept succeeding without CAP_SYS_RESOURCE")
		}
		time.Sleep(200 * time.Millisecond) // localcloud's datapath grows the loop device
	}
	if after := fsSize(t, target); after != before {
		t.Errorf("a refused expansion changed the filesystem from %d to %d bytes", before, after)
	}
	if got, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(got) != string(data) {
		t.Errorf("data after a refused expansion: %q %v", got, err)
	}
}

// metrics reads the driver's metrics from inside its instance.
func metrics(t *testing.T, n *node) string {
	t.Helper()
	var body []byte
	// Dial on this thread, inside the namespace (an http.Transport would
	// dial from another goroutine, in the host's namespace).
	err := e2e.InNetNS(n.inst.NetNS, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9809", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n"); err != nil {
			return err
		}
		body, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return string(body)
}

func checkMetricsContain(t *testing.T, n *node, want ...string) {
	t.Helper()
	body := metrics(t, n)
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}

// checkMetrics checks the API metrics after a lifecycle.
func checkMetrics(t *testing.T, n *node) {
	t.Helper()
	checkMetricsContain(t, n,
		`aws_ebs_csi_api_request_duration_seconds_count{request="AttachVolume"}`,
		`aws_ebs_csi_api_request_duration_seconds_count{request="DescribeVolumes"}`,
		`aws_ebs_csi_api_request_errors_total{code="InvalidVolume.NotFound",request="DeleteVolume"}`,
		`berth_build_info{component="csi-ebs"`)
}
