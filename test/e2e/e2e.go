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
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-io/berth/internal/testenv"
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
	return FreePortOn(t, "127.0.0.1")
}

// FreePortOn returns an address of ip with a TCP port that was free a
// moment ago.
//
// The port is drawn at random from 20000–29999: below the kernel's
// ephemeral range, whose ports any outgoing connection of the tests side
// by side may take as its source port before the process under test binds
// it (a lost race CI saw), and above the 10xxx ports Kubernetes' daemons
// bind by default.
func FreePortOn(t testing.TB, ip string) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort(ip, strconv.Itoa(20000+rand.IntN(10000)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatalf("no free port on %s in 20000-29999 after 100 tries", ip)
	return ""
}

// errPortTaken is a process's exit because its port was taken.
var errPortTaken = errors.New("address already in use")

// tail keeps the last 64 KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - 64<<10; over > 0 {
		w.buf = w.buf[over:]
	}
	return len(p), nil
}

func (w *tail) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf, []byte(s))
}

// startReady starts cmd (its output on the test's stderr) and polls ready
// every poll until it holds, the process exits (an error, errPortTaken
// when its port was taken) or timeout passes; exited is closed when the
// process ends.
func startReady(cmd *exec.Cmd, name string, timeout, poll time.Duration, ready func() bool) (exited chan struct{}, err error) {
	var out tail
	cmd.Stdout = os.Stderr
	cmd.Stderr = io.MultiWriter(os.Stderr, &out)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-exited:
			if out.contains("address already in use") {
				return exited, fmt.Errorf("%s exited before it was ready (%v): %w", name, cmd.ProcessState, errPortTaken)
			}
			return exited, fmt.Errorf("%s exited before it was ready: %v", name, cmd.ProcessState)
		case <-time.After(poll):
		}
		if time.Now().After(deadline) {
			return exited, fmt.Errorf("%s not ready after %s", name, timeout)
		}
	}
	return exited, nil
}

// retryPortRace runs start, again (up to three times) while it fails
// because another process took one of its ports first.
func retryPortRace(t testing.TB, name string, start func() error) {
	t.Helper()
	for try := 1; ; try++ {
		err := start()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("%s lost a port race, starting again: %v", name, err)
	}
}

// Localcloud is a berth-localcloud process.
type Localcloud struct {
	Endpoint string // http://127.0.0.1:port
	StateDir string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// StartLocalcloud runs berth-localcloud serve with extra flags and waits
// until it answers; it is stopped (SIGTERM) when the test ends. When
// another process took its port first, it starts again on a new one.
func StartLocalcloud(t testing.TB, stateDir string, flags ...string) *Localcloud {
	t.Helper()
	lc := &Localcloud{StateDir: stateDir}
	t.Cleanup(lc.Stop)
	retryPortRace(t, "localcloud", func() error { return lc.start(t, FreePort(t), flags) })
	return lc
}

func (l *Localcloud) start(t testing.TB, addr string, flags []string) error {
	args := append([]string{"serve", "--listen", addr, "--state-dir", l.StateDir}, flags...)
	l.Endpoint, l.cmd = "http://"+addr, exec.Command(Bin(t, "berth-localcloud"), args...)
	exited, err := startReady(l.cmd, "localcloud", 20*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get(l.Endpoint + "/_localcloud/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if l.exited = exited; exited == nil {
		l.cmd = nil // not started
	}
	return err
}

// Stop ends the process gracefully and waits for it.
func (l *Localcloud) Stop() {
	if l.cmd == nil {
		return
	}
	_ = l.cmd.Process.Signal(os.Interrupt)
	select {
	case <-l.exited:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.exited
	}
	l.cmd = nil
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (l *Localcloud) Kill() {
	if l.cmd == nil {
		return
	}
	_ = l.cmd.Process.Kill()
	<-l.exited
	l.cmd = nil
}
