package datapath

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loopAttach binds file to a free loop device and returns its path.
func loopAttach(file string) (string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("open loop-control: %w", err)
	}
	defer ctl.Close()
	back, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", file, err)
	}
	defer back.Close()
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := openLoop(dev)
		if err != nil {
			return "", err
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_FD, int(back.Fd()))
		if errors.Is(err, unix.EBUSY) {
			f.Close() // raced with another losetup: take the next one
			continue
		}
		if err != nil {
			f.Close()
			return "", fmt.Errorf("LOOP_SET_FD %s: %w", dev, err)
		}
		info := unix.LoopInfo64{}
		copy(info.File_name[:], file)
		if err := unix.IoctlLoopSetStatus64(int(f.Fd()), &info); err != nil {
			_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			f.Close()
			return "", fmt.Errorf("LOOP_SET_STATUS64 %s: %w", dev, err)
		}
		f.Close()
		return dev, nil
	}
	return "", fmt.Errorf("no free loop device after 20 attempts")
}

// openLoop opens a loop device node, waiting briefly for devtmpfs to make it.
func openLoop(dev string) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) || i == 50 {
			return nil, fmt.Errorf("open %s: %w", dev, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopDetach frees a loop device; a device that is still mounted is
// detached by the kernel when its last user closes it.
func loopDetach(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
	}
	return nil
}

// loopResize makes the device see its backing file's new size.
func loopResize(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	return nil
}

// loopBacking returns the backing file a loop device reports.
func loopBacking(dev string) (string, error) {
	name := strings.TrimPrefix(dev, "/dev/")
	b, err := os.ReadFile("/sys/block/" + name + "/loop/backing_file")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
