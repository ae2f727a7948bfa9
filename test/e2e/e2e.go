// Package e2e holds helpers shared by the end-to-end suites: finding the
// built binaries and starting localcloud as a process, as users run it.
//
// Every VPC of a localcloud with its datapath gets a route on the host, and
// `make test` runs packages side by side, so two tests must never have
// VPCs with overlapping CIDRs at the same time: a test with a fixed VPC
// CIDR takes a 10.x.0.0/16 below 10.128 that no other test uses (grep
// before picking one), and OwnSubnet hands out 10.128–10.191 under a lock.
package e2e

import (
	"context"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Require fails (under CI=true) or skips the test when ok is false.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	testenv.Require(t, ok, what)
}

// Bin returns the path of a built binary: $BERTH_BIN/name, or the
// repository's bin/ when BERTH_BIN is unset. Tests never build binaries
// themselves (make build does, once).
func Bin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("BERTH_BIN")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "bin")
	}
	p := filepath.Join(dir, name)
	_, err := os.Stat(p)
	Require(t, err == nil, fmt.Sprintf("%s not built (run make build): %v", p, err))
	return p
}

// FreePort returns a loopback TCP address that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Localcloud is a berth-localcloud process.
type Localcloud struct {
	Endpoint string // http://127.0.0.1:port
	StateDir string
	cmd      *exec.Cmd
}

// StartLocalcloud runs berth-localcloud serve with extra flags and waits
// until it answers; it is stopped (SIGTERM) when the test ends.
func StartLocalcloud(t testing.TB, stateDir string, flags ...string) *Localcloud {
	t.Helper()
	addr := FreePort(t)
	args := append([]string{"serve", "--listen", addr, "--state-dir", stateDir}, flags...)
	cmd := exec.Command(Bin(t, "berth-localcloud"), args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lc := &Localcloud{Endpoint: "http://" + addr, StateDir: stateDir, cmd: cmd}
	t.Cleanup(lc.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(lc.Endpoint + "/_localcloud/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return lc
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("localcloud did not come up on %s", addr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the process gracefully and waits for it.
func (l *Localcloud) Stop() {
	if l.cmd == nil || l.cmd.Process == nil {
		return
	}
	_ = l.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		<-done
	}
	l.cmd = nil
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (l *Localcloud) Kill() {
	if l.cmd == nil || l.cmd.Process == nil {
		return
	}
	_ = l.cmd.Process.Kill()
	_ = l.cmd.Wait()
	l.cmd = nil
}
