package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/testenv"
)

// TestLockCIDRHoldsDistinctBlocks: tests running at once get different
// /16s, each held until its test ends.
func TestLockCIDRHoldsDistinctBlocks(t *testing.T) {
	testenv.RequireRoot(t, "locks in /run")
	var held []int
	t.Run("hold", func(t *testing.T) {
		a, b := lockCIDR(t), lockCIDR(t)
		if a == b || a < 128 || a > 191 || b < 128 || b > 191 {
			t.Fatalf("got 10.%d and 10.%d", a, b)
		}
		held = []int{a, b}
		for _, x := range held {
			if !locked(t, x) {
				t.Errorf("10.%d is not locked while its test runs", x)
			}
		}
	})
	for _, x := range held {
		if locked(t, x) {
			t.Errorf("10.%d still locked after its test ended", x)
		}
	}
}

func locked(t *testing.T, x int) bool {
	f, err := os.Open(filepath.Join(cidrLockDir, fmt.Sprintf("10.%d", x)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
