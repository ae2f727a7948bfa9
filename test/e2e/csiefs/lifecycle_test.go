package csiefs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	efssdk "github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// accessPoint describes the access point behind a volume ID fs-…::fsap-….
func (cl *cluster) accessPoint(tb testing.TB, volID string) efstypes.AccessPointDescription {
	tb.Helper()
	i := strings.LastIndex(volID, ":")
	out, err := cl.efs.DescribeAccessPoints(context.Background(), &efssdk.DescribeAccessPointsInput{AccessPointId: aws.String(volID[i+1:])})
	if err != nil || len(out.AccessPoints) != 1 {
		tb.Fatalf("describe access point of %s: %v", volID, err)
	}
	return out.AccessPoints[0]
}

func (cl *cluster) create(tb testing.TB, n *node, name string, params map[string]string) string {
	tb.Helper()
	out, err := n.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name, Parameters: params,
		VolumeCapabilities: []*csi.VolumeCapability{rwx}})
	if err != nil {
		tb.Fatalf("create %s: %v", name, err)
	}
	return out.Volume.VolumeId
}

func owner(tb testing.TB, path string) (uid, gid uint32, mode os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode().Perm()
}

// TestTwoNodesShare: one volume staged once on each of two instances and
// published to two "pods" on the first and one read-only "pod" on the
// second; writes from either node are seen by the other, the read-only
// publish cannot write, and the access point's uid/gid/mode are on its
// directory.
func TestTwoNodesShare(t *testing.T) {
	cl := newCluster(t)
	a := cl.startNode(t)
	b := cl.startNode(t, "--mode", "node")
	ctx := context.Background()

	vol := cl.create(t, a, "pvc-share", cl.params("directoryPerms", "750", "uid", "1500", "gid", "2500"))
	ap := cl.accessPoint(t, vol)
	if u := ap.PosixUser; u == nil || *u.Uid != 1500 || *u.Gid != 2500 {
		t.Fatalf("posix user %+v, want 1500:2500", ap.PosixUser)
	}
	dir := filepath.Join(cl.efsRoot(), cl.fsID, *ap.RootDirectory.Path)
	if uid, gid, mode := owner(t, dir); uid != 1500 || gid != 2500 || mode != 0o750 {
		t.Fatalf("access point directory %s: %d:%d %v, want 1500:2500 0750", dir, uid, gid, mode)
	}

	base := filepath.Join(cl.dir, "kubelet")
	stagingA, stagingB := filepath.Join(base, "a", "staging"), filepath.Join(base, "b", "staging")
	podA1, podA2 := filepath.Join(base, "a", "pod1"), filepath.Join(base, "a", "pod2")
	podB := filepath.Join(base, "b", "pod")
	podBro := filepath.Join(base, "b", "pod-ro")
	a.publish(t, vol, stagingA, podA1, rwx, false)
	a.publish(t, vol, stagingA, podA2, rwx, false)
	b.publish(t, vol, stagingB, podB, rwx, false)
	b.publish(t, vol, stagingB, podBro, rwx, true)

	// One mount per volume per node: the staging mount, plus one bind
	// mount per pod.
	if n := mountsUnder(t, filepath.Join(base, "a")); n != 3 {
		t.Errorf("node a: %d mounts, want 3 (staging + 2 pods)", n)
	}
	if n := mountsUnder(t, filepath.Join(base, "b")); n != 3 {
		t.Errorf("node b: %d mounts, want 3 (staging + 2 pods)", n)
	}

	if err := os.WriteFile(filepath.Join(podA1, "from-a"), []byte("hello from a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(podB, "from-a")); err != nil || string(got) != "hello from a" {
		t.Fatalf("node b reads %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(podB, "from-b"), []byte("hello from b"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{podA1, podA2, podBro} {
		if got, err := os.ReadFile(filepath.Join(p, "from-b")); err != nil || string(got) != "hello from b" {
			t.Fatalf("%s reads %q, %v", p, got, err)
		}
	}
	err := os.WriteFile(filepath.Join(podBro, "nope"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write through the read-only publish: %v, want EROFS", err)
	}
	// The read-only pod does not make the node's shared mount read-only.
	if err := os.WriteFile(filepath.Join(podB, "still-rw"), []byte("x"), 0o644); err != nil {
		t.Fatalf("write next to a read-only pod: %v", err)
	}

	st, err := b.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: podB})
	if err != nil || len(st.Usage) != 2 || st.Usage[0].Total <= 0 {
		t.Fatalf("stats: %v %v", st, err)
	}

	if h, err := b.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol, VolumePublishPath: podB}); err != nil || len(h.VolumeHealth.HealthStatuses) != 0 {
		t.Errorf("health of a published volume: %v %v", h, err)
	}
	if h, err := b.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{}); err != nil || len(h.BackendHealth) != 0 {
		t.Errorf("storage health in local mode: %v %v", h, err)
	}

	for _, p := range []struct {
		n      *node
		target string
	}{{a, podA1}, {a, podA2}, {b, podB}, {b, podBro}} {
		if _, err := p.n.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: p.target}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p.target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s after unpublish: %v", p.target, err)
		}
	}
	for _, p := range []struct {
		n       *node
		staging string
	}{{a, stagingA}, {b, stagingB}} {
		if _, err := p.n.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: p.staging}); err != nil {
			t.Fatal(err)
		}
	}
	if n := mountsUnder(t, base); n != 0 {
		t.Errorf("%d mounts left after unstage", n)
	}
	h, err := b.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol, VolumePublishPath: podB})
	if err != nil || len(h.VolumeHealth.HealthStatuses) != 1 || h.VolumeHealth.HealthStatuses[0].Reason != "NotMounted" {
		t.Errorf("health of an unpublished path: %v %v, want NotMounted", h, err)
	}
	if _, err := a.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.efs.DescribeAccessPoints(ctx, &efssdk.DescribeAccessPointsInput{AccessPointId: ap.AccessPointId}); err == nil {
		t.Errorf("access point %s still exists after DeleteVolume", *ap.AccessPointId)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("directory removed without --delete-access-point-root-dir: %v", err)
	}
}

// TestGIDAllocation: concurrent CreateVolumes get distinct GIDs from the
// range, the range runs out with ResourceExhausted, and a restarted
// controller allocates from the access points, not from its memory.
func TestGIDAllocation(t *testing.T) {
	cl := newCluster(t)
	n := cl.startNode(t)
	ctx := context.Background()
	params := cl.params("gidRangeStart", "7000", "gidRangeEnd", "7007")
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: fmt.Sprintf("pvc-gid-%d", i), Parameters: params,
				VolumeCapabilities: []*csi.VolumeCapability{rwx}})
			if err == nil {
				ids[i] = out.Volume.VolumeId
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	gids := map[int64]string{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		ap := cl.accessPoint(t, id)
		g := *ap.PosixUser.Gid
		if g < 7000 || g > 7007 || *ap.PosixUser.Uid != g {
			t.Errorf("%s: uid:gid %d:%d, want a GID in [7000, 7007] used as uid too", id, *ap.PosixUser.Uid, g)
		}
		if other, dup := gids[g]; dup {
			t.Errorf("GID %d given to %s and %s", g, other, id)
		}
		gids[g] = id
		dir := filepath.Join(cl.efsRoot(), cl.fsID, *ap.RootDirectory.Path)
		if uid, gid, mode := owner(t, dir); int64(uid) != g || int64(gid) != g || mode != 0o700 {
			t.Errorf("%s: %d:%d %v, want %d:%d 0700", dir, uid, gid, mode, g, g)
		}
	}
	_, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-gid-full", Parameters: params, VolumeCapabilities: []*csi.VolumeCapability{rwx}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "gidRange") {
		t.Fatalf("ninth volume in an 8-GID range: %v, want ResourceExhausted naming the GID range", err)
	}
	// A retry of a created volume is not a new allocation.
	again := cl.create(t, n, "pvc-gid-3", params)
	if again != ids[3] {
		t.Errorf("retried CreateVolume: %s, want %s", again, ids[3])
	}

	// Restart the controller, free one GID, and allocate again.
	_ = n.cmd.Process.Signal(os.Interrupt)
	_ = n.cmd.Wait()
	n2 := cl.startDriver(t, n.inst)
	freed := *cl.accessPoint(t, ids[5]).PosixUser.Gid
	if _, err := n2.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[5]}); err != nil {
		t.Fatal(err)
	}
	id := cl.create(t, n2, "pvc-gid-after-restart", params)
	if g := *cl.accessPoint(t, id).PosixUser.Gid; g != freed {
		t.Errorf("after restart: GID %d, want the freed %d", g, freed)
	}
}

// TestProvisioningParameters: subPathPattern, ensureUniqueDirectory,
// basePath, reuseAccessPoint and deleting the directory with the volume.
func TestProvisioningParameters(t *testing.T) {
	cl := newCluster(t)
	n := cl.startNode(t, "--delete-access-point-root-dir")
	ctx := context.Background()
	pvc := []string{"csi.storage.k8s.io/pvc/name", "data", "csi.storage.k8s.io/pvc/namespace", "team", "csi.storage.k8s.io/pv/name", "pvc-1234"}

	exact := cl.create(t, n, "pvc-1234", cl.params(append([]string{"basePath", "/dyn", "subPathPattern", "${.PVC.namespace}/${.PVC.name}",
		"ensureUniqueDirectory", "false"}, pvc...)...))
	if p := *cl.accessPoint(t, exact).RootDirectory.Path; p != "/dyn/team/data" {
		t.Errorf("subPathPattern without a unique suffix: %s, want /dyn/team/data", p)
	}
	unique := cl.create(t, n, "pvc-5678", cl.params(append([]string{"basePath", "/dyn", "subPathPattern", "${.PVC.namespace}/${.PVC.name}"}, pvc...)...))
	up := *cl.accessPoint(t, unique).RootDirectory.Path
	if !strings.HasPrefix(up, "/dyn/team/data-") {
		t.Errorf("ensureUniqueDirectory: %s, want /dyn/team/data-<suffix>", up)
	}
	def := cl.create(t, n, "pvc-default", cl.params())
	if p := *cl.accessPoint(t, def).RootDirectory.Path; !strings.HasPrefix(p, "/pvc-default-") {
		t.Errorf("default pattern: %s, want /pvc-default-<suffix>", p)
	}

	reuse := cl.params(append([]string{"reuseAccessPoint", "true"}, pvc...)...)
	r1 := cl.create(t, n, "pvc-r1", reuse)
	r2 := cl.create(t, n, "pvc-r2", reuse) // the same PVC name, re-created
	if r1 != r2 {
		t.Errorf("reuseAccessPoint: %s then %s, want the same access point", r1, r2)
	}

	udir := filepath.Join(cl.efsRoot(), cl.fsID, up)
	if _, err := os.Stat(udir); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: unique}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(udir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after DeleteVolume with --delete-access-point-root-dir: %v", udir, err)
	}
	// Deleting again (and deleting static or foreign IDs) is success.
	for _, id := range []string{unique, cl.fsID, cl.fsID + ":/x", "fake-vol-id"} {
		if _, err := n.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("delete %s: %v", id, err)
		}
	}
}

// TestStaticProvisioning publishes volume handles a PV names by hand:
// the file system root, a directory, and an access point made outside.
func TestStaticProvisioning(t *testing.T) {
	cl := newCluster(t)
	n := cl.startNode(t, "--mode", "node")
	ctx := context.Background()
	fsDir := filepath.Join(cl.efsRoot(), cl.fsID)
	if err := os.MkdirAll(filepath.Join(fsDir, "static", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fsDir, "static", "sub", "seed"), []byte("seed"), 0o644); err != nil {
		t.Fatal(err)
	}
	ap, err := cl.efs.CreateAccessPoint(ctx, &efssdk.CreateAccessPointInput{FileSystemId: aws.String(cl.fsID), ClientToken: aws.String("static-ap"),
		PosixUser: &efstypes.PosixUser{Uid: aws.Int64(3000), Gid: aws.Int64(3001)},
		RootDirectory: &efstypes.RootDirectory{Path: aws.String("/static"),
			CreationInfo: &efstypes.CreationInfo{OwnerUid: aws.Int64(3000), OwnerGid: aws.Int64(3001), Permissions: aws.String("755")}}})
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(cl.dir, "kubelet")
	for i, tc := range []struct{ handle, file string }{
		{cl.fsID, "static/sub/seed"},
		{cl.fsID + ":/static", "sub/seed"},
		{cl.fsID + "::" + *ap.AccessPointId, "sub/seed"},
		{cl.fsID + ":/sub:" + *ap.AccessPointId, "seed"},
		{"efs:" + cl.fsID + "::" + *ap.AccessPointId, "sub/seed"},
	} {
		staging, target := filepath.Join(base, fmt.Sprint(i), "staging"), filepath.Join(base, fmt.Sprint(i), "pod")
		n.publish(t, tc.handle, staging, target, rwx, false)
		if got, err := os.ReadFile(filepath.Join(target, tc.file)); err != nil || string(got) != "seed" {
			t.Errorf("%s: %s reads %q, %v", tc.handle, tc.file, got, err)
		}
	}
	_, err = n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: cl.fsID + ":/missing",
		StagingTargetPath: filepath.Join(base, "missing"), VolumeCapability: rwx})
	if status.Code(err) != codes.NotFound {
		t.Errorf("stage of a missing directory: %v, want NotFound", err)
	}
}

// TestBadInput checks the error codes and that each message names the
// field at fault.
func TestBadInput(t *testing.T) {
	cl := newCluster(t)
	n := cl.startNode(t)
	ctx := context.Background()
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	for _, tc := range []struct {
		name   string
		params map[string]string
		caps   *csi.VolumeCapability
		code   codes.Code
		field  string
	}{
		{"no-fs", cl.params("fileSystemId", ""), rwx, codes.InvalidArgument, "fileSystemId"},
		{"no-perms", cl.params("directoryPerms", ""), rwx, codes.InvalidArgument, "directoryPerms"},
		{"inverted", cl.params("gidRangeStart", "2000", "gidRangeEnd", "1000"), rwx, codes.InvalidArgument, "gidRangeStart"},
		{"empty-range", cl.params("gidRangeStart", "2000", "gidRangeEnd", " "), rwx, codes.InvalidArgument, "gidRangeEnd"},
		{"half-range", cl.params("gidRangeStart", "2000"), rwx, codes.InvalidArgument, "gidRangeEnd"},
		{"unknown", cl.params("throughput", "fast"), rwx, codes.InvalidArgument, "throughput"},
		{"bad-pattern", cl.params("subPathPattern", "${.PVC.uid}"), rwx, codes.InvalidArgument, "subPathPattern"},
		{"no-such-fs", cl.params("fileSystemId", "fs-0123456789abcdef0"), rwx, codes.NotFound, "fs-0123456789abcdef0"},
		{"block", cl.params(), block, codes.InvalidArgument, "block"},
		{"rwop", cl.params(), mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER), codes.InvalidArgument, "access_mode"},
	} {
		_, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-" + tc.name, Parameters: tc.params, VolumeCapabilities: []*csi.VolumeCapability{tc.caps}})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want %s naming %s", tc.name, err, tc.code, tc.field)
		}
	}
	// A one-GID range: the second volume finds it used.
	one := cl.params("gidRangeStart", "9000", "gidRangeEnd", "9000")
	cl.create(t, n, "pvc-one", one)
	if _, err := n.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-two", Parameters: one, VolumeCapabilities: []*csi.VolumeCapability{rwx}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("exhausted range: %v, want ResourceExhausted", err)
	}
	staging := filepath.Join(cl.dir, "kubelet", "staging")
	for _, h := range []string{"vol-0123", "fs-0123456789:relative", "fs-0123456789::ap-1"} {
		_, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: h, StagingTargetPath: staging, VolumeCapability: rwx})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "volume_id") {
			t.Errorf("stage %q: %v, want InvalidArgument naming volume_id", h, err)
		}
	}
	_, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: cl.fsID, StagingTargetPath: staging, VolumeCapability: block})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "block") {
		t.Errorf("stage as block: %v, want InvalidArgument naming block", err)
	}
}
