// Package mounter is the node side's contact with the kernel. A volume is
// mounted once per node (at the staging path) by one of two Mounters:
//
//   - EFSUtils runs `mount -t efs -o tls,accesspoint=fsap-… fs-…:/ <dir>`
//     through efs-utils, as the AWS driver does;
//   - Local bind-mounts the access point's directory from localcloud's
//     data directory (<root>/<fs-id>/<path>), where there is no NFS.
//
// Pods then get bind mounts of the staged directory (BindMount).
package mounter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"

	"github.com/berth-io/berth/csi-efs/volume"
)

// ErrNotFound is returned when what a volume names is not there.
var ErrNotFound = errors.New("not found")

// Request is one volume to mount.
type Request struct {
	ID volume.ID
	// Options are the capability's mount flags (efs-utils options).
	Options  []string
	ReadOnly bool
	// Encrypt mounts with TLS (the default; an access point requires it).
	Encrypt bool
}

// Mounter mounts a volume's file system at a directory.
type Mounter interface {
	Mount(ctx context.Context, r Request, target string) error
	// WithRoot runs fn with the file system's root mounted (or visible)
	// at a directory, to remove an access point's directory.
	WithRoot(ctx context.Context, fsID string, fn func(root string) error) error
	// Ready reports what keeps the node from mounting any volume.
	Ready() error
	// Check reports what keeps the node from mounting this volume (nil
	// when nothing is known to).
	Check(ctx context.Context, id volume.ID) error
}

// EFSUtils mounts through efs-utils' mount helper.
type EFSUtils struct {
	// Command is mount(8) (default "mount"), which runs mount.efs.
	Command string
}

var _ Mounter = (*EFSUtils)(nil)

// Args builds the mount(8) command line.
func (e *EFSUtils) Args(r Request, target string) ([]string, error) {
	var opts []string
	if r.Encrypt {
		opts = append(opts, "tls")
	}
	if r.ID.AccessPointID != "" {
		if !r.Encrypt {
			return nil, fmt.Errorf("access point %s needs TLS (encryptInTransit cannot be false): %w", r.ID.AccessPointID, volume.ErrMalformed)
		}
		opts = append(opts, "accesspoint="+r.ID.AccessPointID)
	}
	if r.ReadOnly {
		opts = append(opts, "ro")
	}
	for _, o := range r.Options {
		// The driver owns these; a PV's mountOptions repeating them is harmless.
		if o == "tls" || o == "ro" || strings.HasPrefix(o, "accesspoint=") {
			continue
		}
		opts = append(opts, o)
	}
	args := []string{"-t", "efs"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	return append(args, r.ID.Source(), target), nil
}

func (e *EFSUtils) command() string {
	if e.Command == "" {
		return "mount"
	}
	return e.Command
}

// Mount runs the mount helper.
func (e *EFSUtils) Mount(ctx context.Context, r Request, target string) error {
	args, err := e.Args(r, target)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, e.command(), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", e.command(), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Ready checks that the mount command and efs-utils' mount.efs are installed.
func (e *EFSUtils) Ready() error {
	for _, tool := range []string{e.command(), "mount.efs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (efs-utils): %w", tool, err)
		}
	}
	return nil
}

// Check knows nothing about one volume before mounting it: the mount
// target and the access point are resolved by efs-utils.
func (e *EFSUtils) Check(context.Context, volume.ID) error { return nil }

// WithRoot mounts the file system root at a temporary directory.
func (e *EFSUtils) WithRoot(ctx context.Context, fsID string, fn func(root string) error) (err error) {
	dir, err := os.MkdirTemp("", "efs-root-")
	if err != nil {
		return fmt.Errorf("root mount directory: %w", err)
	}
	defer os.Remove(dir)
	if err := e.Mount(ctx, Request{ID: volume.ID{FileSystemID: fsID}, Encrypt: true}, dir); err != nil {
		return err
	}
	defer func() {
		if uerr := unix.Unmount(dir, 0); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmount %s: %w", dir, uerr))
		}
	}()
	return fn(dir)
}

// Local bind-mounts directories of localcloud's EFS data directory.
type Local struct {
	// Root holds one directory per file system: <Root>/<fs-id>/<path>.
	Root string
	// AccessPointRoot returns an access point's root directory path in
	// its file system (from DescribeAccessPoints).
	AccessPointRoot func(ctx context.Context, fsID, apID string) (string, error)
}

var _ Mounter = (*Local)(nil)

// Dir is the host directory a request names.
func (l *Local) Dir(ctx context.Context, id volume.ID) (string, error) {
	fsDir := filepath.Join(l.Root, id.FileSystemID)
	if _, err := os.Stat(fsDir); err != nil {
		return "", fmt.Errorf("file system %s (%s): %w", id.FileSystemID, fsDir, ErrNotFound)
	}
	p := "/"
	if id.AccessPointID != "" {
		root, err := l.AccessPointRoot(ctx, id.FileSystemID, id.AccessPointID)
		if err != nil {
			return "", err
		}
		p = root
	}
	dir := filepath.Join(fsDir, filepath.Clean("/"+p), filepath.Clean("/"+id.SubPath))
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("directory %s of volume %s: %w", dir, id, ErrNotFound)
	}
	return dir, nil
}

// Ready checks that localcloud's EFS directory is there.
func (l *Local) Ready() error {
	if fi, err := os.Stat(l.Root); err != nil || !fi.IsDir() {
		return fmt.Errorf("local EFS root %s: %w", l.Root, ErrNotFound)
	}
	return nil
}

// Check looks up the volume's directory.
func (l *Local) Check(ctx context.Context, id volume.ID) error {
	_, err := l.Dir(ctx, id)
	return err
}

// Mount bind-mounts the volume's directory at target.
func (l *Local) Mount(ctx context.Context, r Request, target string) error {
	dir, err := l.Dir(ctx, r.ID)
	if err != nil {
		return err
	}
	return BindMount(dir, target, r.ReadOnly)
}

// WithRoot runs fn on the file system's directory.
func (l *Local) WithRoot(ctx context.Context, fsID string, fn func(root string) error) error {
	dir := filepath.Join(l.Root, fsID)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("file system %s: %w", fsID, ErrNotFound)
	}
	return fn(dir)
}

// BindMount binds source on target, read-only when ro.
func BindMount(source, target string, ro bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	if ro {
		// A bind mount takes MS_RDONLY only on remount, and only for this
		// mount point: the staged mount other pods share stays writable.
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// Kernel answers mount-table questions.
type Kernel struct{ m mount.Interface }

// NewKernel returns a Kernel over the host's mount table.
func NewKernel() *Kernel { return &Kernel{m: mount.New("")} }

// IsMountPoint reports whether path is a mount point; a missing path is not.
func (k *Kernel) IsMountPoint(path string) (bool, error) {
	ok, err := k.m.IsMountPoint(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("is %s a mount point: %w", path, err)
	}
	return ok, nil
}

// Release unmounts path (every mount stacked on it) and, when remove,
// deletes the directory; a path that is not there, or not mounted, is
// success. It unmounts with umount(2) rather than exec'ing umount(8),
// which costs a fork and exec per pod. A corrupted mount (a stale NFS
// handle, a dead TLS proxy) is unmounted too, lazily if it is busy.
func (k *Kernel) Release(path string, remove bool) error {
	for range 8 {
		mounted, err := k.m.IsMountPoint(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil
		case err != nil && Corrupted(err):
			mounted = true
		case err != nil:
			return fmt.Errorf("is %s a mount point: %w", path, err)
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(path, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) || unix.Unmount(path, unix.MNT_DETACH) != nil {
				return fmt.Errorf("unmount %s: %w", path, err)
			}
		}
	}
	if remove {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
	}
	return nil
}

// Corrupted reports whether err says a mount is there but dead: a stale
// NFS handle, a TLS proxy gone (the errors mount-utils treats so, checked
// through wrapping).
func Corrupted(err error) bool {
	for _, e := range []error{unix.ENOTCONN, unix.ESTALE, unix.EIO, unix.EACCES, unix.EHOSTDOWN, unix.EWOULDBLOCK, unix.ENODEV} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Stats are a mounted file system's usage.
type Stats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// StatFS returns the usage of the file system at path. EFS reports an
// effectively unbounded size, as statfs over NFS shows it.
func StatFS(path string) (Stats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Stats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return Stats{
		TotalBytes: int64(st.Blocks) * bs, AvailableBytes: int64(st.Bavail) * bs, UsedBytes: int64(st.Blocks-st.Bfree) * bs,
		TotalInodes: int64(st.Files), FreeInodes: int64(st.Ffree), UsedInodes: int64(st.Files - st.Ffree),
	}, nil
}
