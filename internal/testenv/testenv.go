// Package testenv holds the prerequisite checks shared by tests that need
// the real kernel: under CI=true a missing prerequisite fails the test,
// elsewhere it skips it.
package testenv

import (
	"os"
	"testing"
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
