package datapath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
)

const netnsDir = "/var/run/netns"

// createNetns makes a named network namespace (as `ip netns add` does)
// and returns a handle to it, without moving any goroutine into it.
func createNetns(name string) (netns.NsHandle, error) {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		// Left over from a crashed run that the sweep missed: start clean.
		_ = netns.DeleteNamed(name)
	}
	var h netns.NsHandle
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err = netns.NewNamed(name)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		if err := netns.Set(orig); err != nil {
			done <- fmt.Errorf("return from netns %s (thread discarded): %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		if h.IsOpen() {
			h.Close()
		}
		return 0, err
	}
	return h, nil
}

// deleteNetns removes a named namespace; a missing one is not an error.
func deleteNetns(name string) error {
	err := netns.DeleteNamed(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// inNetns runs fn on a dedicated OS thread switched into ns. The work runs
// in its own goroutine: if the thread cannot be switched back, the
// goroutine exits without unlocking it and Go discards the thread, so no
// other code ever runs in the wrong namespace.
func inNetns(ns netns.NsHandle, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("return to the original netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// listenIn opens a TCP listener inside ns.
func listenIn(ns netns.NsHandle, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in instance netns: %w", addr, err)
	}
	return ln, nil
}

// writeSysctl sets a /proc/sys value inside ns.
func writeSysctl(ns netns.NsHandle, path, value string) error {
	return inNetns(ns, func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", path, value, err)
		}
		return nil
	})
}
