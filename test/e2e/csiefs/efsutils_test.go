package csiefs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// TestEFSUtilsMode drives the production path (no --local-efs-root): the
// node runs the configured mount command with efs-utils' command line, and
// the controller mounts the file system root through it to delete an
// access point's directory. The stand-in helper records its arguments and
// bind-mounts localcloud's directory for the NFS source it is given.
func TestEFSUtilsMode(t *testing.T) {
	cl := newCluster(t)
	record := filepath.Join(cl.dir, "mount-args")
	helper := filepath.Join(cl.dir, "fake-mount")
	// $1=-t $2=efs [$3=-o $4=options] source target: mount the file
	// system's directory (the access point's root when accesspoint= is set
	// is left to the test to check: efs-utils resolves it server-side).
	script := `#!/bin/sh
echo "$@" >> ` + record + `
eval src=\${$(($#-1))}
eval dst=\${$#}
fs=${src%%:*}
path=${src#*:}
exec mount --bind "` + cl.efsRoot() + `/$fs$path" "$dst"
`
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// An empty --local-efs-root (given after startDriver's) selects efs-utils.
	ctrlInst := cl.startNode(t, "--mode", "controller", "--mount-command", helper, "--delete-access-point-root-dir", "--local-efs-root=")
	n := cl.startNode(t, "--mode", "node", "--mount-command", helper, "--local-efs-root=")
	ctx := context.Background()
	vol := cl.create(t, ctrlInst, "pvc-efsutils", cl.params())
	ap := cl.accessPoint(t, vol)
	staging := filepath.Join(cl.dir, "kubelet", "staging")
	ro := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)
	ro.GetMount().MountFlags = []string{"iam", "tls"}
	if _, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, VolumeCapability: ro}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cl.efsRoot(), cl.fsID, *ap.RootDirectory.Path)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrlInst.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("access point directory after DeleteVolume: %v", err)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("helper ran %d times, want 2 (stage, root for delete):\n%s", len(lines), b)
	}
	if want := "-t efs -o tls,accesspoint=" + *ap.AccessPointId + ",ro,iam " + cl.fsID + ":/ " + staging; lines[0] != want {
		t.Errorf("stage ran\n  %s\nwant\n  %s", lines[0], want)
	}
	if want := "-t efs -o tls " + cl.fsID + ":/ "; !strings.HasPrefix(lines[1], want) {
		t.Errorf("root mount for delete ran %q, want prefix %q", lines[1], want)
	}
	if f := strings.Fields(lines[1]); len(f) > 0 {
		if _, err := os.Stat(f[len(f)-1]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("root mount directory %s left after DeleteVolume: %v", f[len(f)-1], err)
		}
	}
	// Storage health says whether efs-utils is installed.
	sh, err := n.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{})
	if _, lerr := exec.LookPath("mount.efs"); lerr == nil {
		if err != nil || len(sh.BackendHealth) != 0 {
			t.Errorf("storage health with efs-utils installed: %v %v", sh, err)
		}
	} else if err != nil || len(sh.BackendHealth) != 1 || sh.BackendHealth[0].Status != csi.StorageHealthErrorType_STORAGE_UNREACHABLE ||
		!strings.Contains(sh.BackendHealth[0].Message, "mount.efs") {
		t.Errorf("storage health without efs-utils: %v %v", sh, err)
	}
	if n := mountsUnder(t, cl.dir); n != 0 {
		t.Errorf("%d mounts left under the test directory", n)
	}
}
