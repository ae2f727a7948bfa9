// Package mounter is the node side's contact with the kernel: finding the
// block device of an EBS volume, formatting only blank devices
// (k8s.io/mount-utils SafeFormatAndMount), mounting, resizing and
// statistics.
//
//	m := mounter.New()
//	dev, err := mounter.FindDevice("vol-0abc", publishContext["devicePath"])
//	err = m.FormatAndMount(dev, staging, "ext4", nil, []string{"-b", "4096"})
package mounter

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"
)

// Sentinels.
var (
	ErrDeviceNotFound = errors.New("device not found")
	ErrDeviceMismatch = errors.New("device belongs to another volume")
)

// ByIDDir is where udev (and EC2's NVMe rules) link EBS devices by serial.
const ByIDDir = "/dev/disk/by-id"

// ByIDPath is the by-id link of a volume's NVMe device.
func ByIDPath(volumeID string) string {
	return filepath.Join(ByIDDir, "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(volumeID, "-", ""))
}

// Mounter formats, mounts and resizes.
type Mounter struct {
	*mount.SafeFormatAndMount
}

// New returns a mounter over the host's mount and mkfs tools.
func New() *Mounter {
	return &Mounter{SafeFormatAndMount: &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: exec.New()}}
}

// serial reads the NVMe serial of a block device ("" when it has none,
// such as loop or Xen devices).
func serial(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "device", "serial"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// FindDevice returns the block device of volumeID. The by-id link names the
// volume; devicePath (from the publish context) is used when it exists and
// resolves to the same device. A device whose NVMe serial or by-id link
// names another volume is refused with ErrDeviceMismatch.
func FindDevice(volumeID, devicePath string) (string, error) {
	byID, byIDErr := filepath.EvalSymlinks(ByIDPath(volumeID))
	var fromCtx string
	if devicePath != "" {
		if p, err := filepath.EvalSymlinks(devicePath); err == nil {
			fromCtx = p
		}
	}
	var dev string
	switch {
	case byIDErr == nil && fromCtx != "" && fromCtx != byID:
		// devicePath is a stale name now held by another volume.
		return "", fmt.Errorf("%s is %s but volume %s is %s: %w", devicePath, fromCtx, volumeID, byID, ErrDeviceMismatch)
	case byIDErr == nil:
		dev = byID
	case fromCtx != "":
		dev = fromCtx
	default:
		return "", fmt.Errorf("volume %s (devicePath %q): %w", volumeID, devicePath, ErrDeviceNotFound)
	}
	fi, err := os.Stat(dev)
	if err != nil {
		return "", fmt.Errorf("volume %s device %s: %w", volumeID, dev, ErrDeviceNotFound)
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return "", fmt.Errorf("volume %s: %s is not a block device: %w", volumeID, dev, ErrDeviceMismatch)
	}
	want := strings.ReplaceAll(volumeID, "-", "")
	if s := serial(dev); s != "" && s != want {
		return "", fmt.Errorf("volume %s: %s has serial %s: %w", volumeID, dev, s, ErrDeviceMismatch)
	}
	return dev, nil
}

// DeviceSize returns the size of a block device (or of the device a block
// volume's target file is bind-mounted from) in bytes.
func DeviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	// Seeking to the end of a block device yields its size.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return size, nil
}

// IsBlockDevice reports whether path is a block device node.
func IsBlockDevice(path string) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0, nil
}

// FormatAndMount formats dev with fsType if it is blank and mounts it.
func (m *Mounter) FormatAndMount(dev, target, fsType string, options, formatOptions []string) error {
	if err := m.FormatAndMountSensitiveWithFormatOptions(dev, target, fsType, options, nil, formatOptions); err != nil {
		return fmt.Errorf("format and mount %s on %s (%s): %w", dev, target, fsType, err)
	}
	return nil
}

// IsMountPoint reports whether path is a mount point (false when missing).
func (m *Mounter) IsMountPoint(path string) (bool, error) {
	notMnt, err := m.IsLikelyNotMountPoint(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check mount point %s: %w", path, err)
	}
	return !notMnt, nil
}

// MountedDevice returns the source device of the mount at path.
func (m *Mounter) MountedDevice(path string) (string, error) {
	dev, _, err := mount.GetDeviceNameFromMount(m.Interface, path)
	if err != nil {
		return "", fmt.Errorf("device mounted at %s: %w", path, err)
	}
	return dev, nil
}

// Resize grows the filesystem on dev mounted at path if the device grew.
// It reports whether it resized.
func (m *Mounter) Resize(dev, path string) (bool, error) {
	r := mount.NewResizeFs(m.Exec)
	need, err := r.NeedResize(dev, path)
	if err != nil {
		return false, fmt.Errorf("check size of %s: %w", dev, err)
	}
	if !need {
		return false, nil
	}
	if _, err := r.Resize(dev, path); err != nil {
		return false, fmt.Errorf("resize filesystem on %s: %w", dev, err)
	}
	return true, nil
}

// Format returns the filesystem on dev ("" when blank).
func (m *Mounter) Format(dev string) (string, error) {
	format, err := m.GetDiskFormat(dev)
	if err != nil {
		return "", fmt.Errorf("filesystem of %s: %w", dev, err)
	}
	return format, nil
}

// BindMount bind-mounts source on target (read-only when ro) with the
// mount syscall: no mount(8) process for what the kernel does in one call.
func BindMount(source, target string, ro bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	if ro {
		// A bind mount takes MS_RDONLY only on remount.
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// GrowOffline grows an unmounted ext2/3/4 filesystem to its device's size
// (e2fsck -f, then resize2fs) and reports whether it did. Growing before the
// mount avoids the online-resize ioctl, which needs CAP_SYS_RESOURCE. Other
// filesystems (xfs grows only online) are left to Resize after the mount.
func (m *Mounter) GrowOffline(dev, format string) (bool, error) {
	switch format {
	case "ext2", "ext3", "ext4":
	default:
		return false, nil
	}
	need, err := mount.NewResizeFs(m.Exec).NeedResize(dev, "")
	if err != nil || !need {
		return false, err
	}
	// -p repairs only what is safe unattended; exit codes 1 and 2 mean
	// errors were corrected.
	if out, err := m.Exec.Command("e2fsck", "-f", "-p", dev).CombinedOutput(); err != nil {
		var ee exec.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() > 2 {
			return false, fmt.Errorf("e2fsck %s: %w: %s", dev, err, out)
		}
	}
	if out, err := m.Exec.Command("resize2fs", dev).CombinedOutput(); err != nil {
		return false, fmt.Errorf("resize2fs %s: %w: %s", dev, err, out)
	}
	return true, nil
}

// Release unmounts path if it is mounted; with remove it also removes path.
func (m *Mounter) Release(path string, remove bool) error {
	if remove {
		if err := mount.CleanupMountPoint(path, m.Interface, true); err != nil {
			return fmt.Errorf("clean up %s: %w", path, err)
		}
		return nil
	}
	mounted, err := m.IsMountPoint(path)
	if err != nil || !mounted {
		return err
	}
	if err := m.Interface.Unmount(path); err != nil {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

// FSStats are a mounted filesystem's usage.
type FSStats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
	ReadOnly                              bool
}

// Stats returns the usage of the filesystem mounted at path.
func Stats(path string) (FSStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FSStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return FSStats{
		TotalBytes:     int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      int64(st.Blocks-st.Bfree) * bs,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
		UsedInodes:     int64(st.Files - st.Ffree),
		ReadOnly:       st.Flags&unix.ST_RDONLY != 0,
	}, nil
}

// MountsOf returns the mount points in /proc/self/mountinfo that show dev:
// filesystem mounts of it and bind mounts of its device node.
func MountsOf(dev string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	major, minor := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	infos, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	base := "/" + filepath.Base(dev)
	var out []string
	for _, mi := range infos {
		if (mi.Major == int(major) && mi.Minor == int(minor)) || (mi.FsType == "devtmpfs" && mi.Root == base) {
			out = append(out, mi.MountPoint)
		}
	}
	return out, nil
}
