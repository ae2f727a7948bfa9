package mounter

import (
	"errors"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loop attaches a small sparse file to a loop device, detached at cleanup.
func loop(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 16<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", f).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func link(t *testing.T, target, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(name) })
}

func TestFindDevice(t *testing.T) {
	testenv.RequireRoot(t, "loop devices")
	vol := fmt.Sprintf("vol-0%016x", time.Now().UnixNano())
	devA, devB := loop(t), loop(t)
	link(t, devA, ByIDPath(vol))
	stale := filepath.Join(t.TempDir(), "xvdba")
	link(t, devB, stale)
	ctxLink := filepath.Join(t.TempDir(), "xvdbb")
	link(t, devA, ctxLink)
	regular := filepath.Join(t.TempDir(), "not-a-device")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noLink := fmt.Sprintf("vol-2%016x", time.Now().UnixNano())

	for _, tc := range []struct {
		name, vol, devicePath, want string
		err                         error
	}{
		{"by-id link", vol, "", devA, nil},
		{"devicePath agrees with by-id", vol, ctxLink, devA, nil},
		{"devicePath missing on the node", vol, "/dev/xvdzz-absent", devA, nil},
		{"stale devicePath of another volume", vol, stale, "", ErrDeviceMismatch},
		{"devicePath only", noLink, ctxLink, devA, nil},
		{"not a block device", noLink, regular, "", ErrDeviceMismatch},
		{"nothing", noLink, "", "", ErrDeviceNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FindDevice(tc.vol, tc.devicePath)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FindDevice = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if size, err := DeviceSize(devA); err != nil || size != 16<<20 {
		t.Errorf("DeviceSize = %d, %v", size, err)
	}
}
