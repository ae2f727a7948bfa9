package mounter

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/csi-efs/volume"
)

func TestEFSUtilsArgs(t *testing.T) {
	fs, ap := "fs-0123abcd", "fsap-0456abcdef"
	for _, tc := range []struct {
		r    Request
		want []string
	}{
		{Request{ID: volume.ID{FileSystemID: fs, AccessPointID: ap}, Encrypt: true},
			[]string{"-t", "efs", "-o", "tls,accesspoint=" + ap, fs + ":/", "/t"}},
		{Request{ID: volume.ID{FileSystemID: fs, AccessPointID: ap}, Encrypt: true, ReadOnly: true, Options: []string{"tls", "iam", "accesspoint=" + ap}},
			[]string{"-t", "efs", "-o", "tls,accesspoint=" + ap + ",ro,iam", fs + ":/", "/t"}},
		{Request{ID: volume.ID{FileSystemID: fs, SubPath: "/data"}, Encrypt: false},
			[]string{"-t", "efs", fs + ":/data", "/t"}},
	} {
		got, err := (&EFSUtils{}).Args(tc.r, "/t")
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Args(%+v) = %q, %v; want %q", tc.r, got, err, tc.want)
		}
	}
	if _, err := (&EFSUtils{}).Args(Request{ID: volume.ID{FileSystemID: fs, AccessPointID: ap}}, "/t"); !errors.Is(err, volume.ErrMalformed) {
		t.Errorf("access point without TLS: %v", err)
	}
}

// TestEFSUtilsCommand runs a stand-in mount helper: the configured command
// gets the efs-utils command line, and its failure output is reported.
func TestEFSUtilsCommand(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "args")
	helper := filepath.Join(dir, "mount")
	script := "#!/bin/sh\necho \"$@\" > " + record + "\n[ \"$5\" = fs-0123abcd:/ ] || { echo 'mount.efs: bad source' >&2; exit 32; }\n"
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &EFSUtils{Command: helper}
	r := Request{ID: volume.ID{FileSystemID: "fs-0123abcd", AccessPointID: "fsap-0456abcdef"}, Encrypt: true}
	if err := e.Mount(context.Background(), r, "/target"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(record)
	if want := "-t efs -o tls,accesspoint=fsap-0456abcdef fs-0123abcd:/ /target\n"; string(got) != want {
		t.Errorf("helper got %q, want %q", got, want)
	}
	r.ID.SubPath = "/x"
	if err := e.Mount(context.Background(), r, "/target"); err == nil || !strings.Contains(err.Error(), "bad source") {
		t.Errorf("failing helper: %v", err)
	}
}

func TestLocalDir(t *testing.T) {
	root := t.TempDir()
	fs, ap := "fs-0123abcd", "fsap-0456abcdef"
	if err := os.MkdirAll(filepath.Join(root, fs, "aps", "one", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := &Local{Root: root, AccessPointRoot: func(_ context.Context, fsID, apID string) (string, error) {
		if fsID != fs || apID != ap {
			return "", ErrNotFound
		}
		return "/aps/one", nil
	}}
	ctx := context.Background()
	for _, tc := range []struct {
		id   volume.ID
		want string
		err  error
	}{
		{volume.ID{FileSystemID: fs}, filepath.Join(root, fs), nil},
		{volume.ID{FileSystemID: fs, SubPath: "/aps"}, filepath.Join(root, fs, "aps"), nil},
		{volume.ID{FileSystemID: fs, AccessPointID: ap}, filepath.Join(root, fs, "aps", "one"), nil},
		{volume.ID{FileSystemID: fs, AccessPointID: ap, SubPath: "/sub"}, filepath.Join(root, fs, "aps", "one", "sub"), nil},
		{volume.ID{FileSystemID: fs, SubPath: "/missing"}, "", ErrNotFound},
		{volume.ID{FileSystemID: "fs-99999999"}, "", ErrNotFound},
		{volume.ID{FileSystemID: fs, AccessPointID: "fsap-99999999"}, "", ErrNotFound},
	} {
		got, err := l.Dir(ctx, tc.id)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Dir(%v) = %q, %v; want %q, %v", tc.id, got, err, tc.want, tc.err)
		}
	}
}

// TestBindAndRelease: a read-only bind mount stacked twice on a target is
// released in one call, the directory removed, and a second call succeeds.
func TestBindAndRelease(t *testing.T) {
	testenv.RequireRoot(t, "mounts")
	src, target := t.TempDir(), filepath.Join(t.TempDir(), "target")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH); _ = unix.Unmount(target, unix.MNT_DETACH) })
	for range 2 {
		if err := BindMount(src, target, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write to read-only bind: %v", err)
	}
	if err := os.WriteFile(filepath.Join(src, "x"), nil, 0o644); err != nil {
		t.Fatalf("the source stays writable: %v", err)
	}
	k := NewKernel()
	if ok, err := k.IsMountPoint(target); err != nil || !ok {
		t.Fatalf("IsMountPoint = %t, %v", ok, err)
	}
	if err := k.Release(target, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target after release: %v", err)
	}
	if err := k.Release(target, true); err != nil {
		t.Fatalf("second release: %v", err)
	}
}

func TestCorrupted(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("is x a mount point: %w", &os.PathError{Op: "stat", Path: "x", Err: unix.ESTALE}), true},
		{fmt.Errorf("wrapped: %w", unix.ENOTCONN), true},
		{&os.PathError{Op: "stat", Path: "x", Err: unix.ENOENT}, false},
		{nil, false},
	} {
		if got := Corrupted(tc.err); got != tc.want {
			t.Errorf("Corrupted(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}
