// Package testenv holds the prerequisite checks shared by tests that need
// the real kernel: under CI=true a missing prerequisite fails the test,
// elsewhere it skips it.
package testenv

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Require fails (CI=true) or skips the test when ok is false.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: a missing prerequisite is a failure)", what)
	}
	t.Skip(what)
}

// RequireRoot is Require for root, which netns, netlink, nftables, loop
// devices and mounts need; why says what the test does with it.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root ("+why+")")
}

// NewNetNS creates an empty network namespace with lo up, and a netlink
// handle in it; both go when the test ends.
func NewNetNS(t testing.TB) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	type res struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		// The thread is never unlocked: it dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- res{err: fmt.Errorf("unshare: %w", err)}
			return
		}
		ns, err := netns.Get()
		c <- res{ns, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up: %v", err)
	}
	return r.ns, h
}

// OnThreadIn runs f on a thread in ns and returns its error. The thread
// is never unlocked: it dies with its goroutine, never to be reused in ns.
func OnThreadIn(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter the namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Eventually polls cond every 20 ms until it holds, failing the test after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
