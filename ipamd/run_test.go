package main

import (
	"testing"
	"testing/synctest"
	"time"
)

// ipamd waits for its background loops at exit, but not past the grace:
// a loop stuck in a slow EC2 cleanup must not hold the process.
func TestWaitAtMost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		quick := func() { time.Sleep(time.Second) }
		if !waitAtMost(quick, loopsGrace) {
			t.Fatal("a wait that ends within the grace was reported stuck")
		}
		release := make(chan struct{})
		stuck := func() { <-release }
		start := time.Now()
		if waitAtMost(stuck, loopsGrace) {
			t.Fatal("a stuck wait was reported done")
		}
		if took := time.Since(start); took != loopsGrace {
			t.Fatalf("gave up after %v, want %v", took, loopsGrace)
		}
		close(release)
	})
}
