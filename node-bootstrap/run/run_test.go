package run

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata")

// listenEnv makes the test binary a slow-starting runtime: it listens on
// the socket after 300ms and stays up.
const listenEnv = "BERTH_RUN_TEST_LISTEN"

func TestMain(m *testing.M) {
	if path := os.Getenv(listenEnv); path != "" {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("unix", path)
		if err != nil {
			os.Exit(2)
		}
		defer ln.Close()
		time.Sleep(time.Minute)
		return
	}
	os.Exit(m.Run())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./node-bootstrap/run -update)", err)
	}
	if string(want) != string(got) {
		t.Fatalf("%s differs\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestUnits(t *testing.T) {
	o := UnitOptions{KubeletBin: DefaultKubeletBin, ContainerdBin: DefaultContainerdBin, ContainerdConfig: "/etc/containerd/config.toml"}
	golden(t, "kubelet.service", GenerateKubeletUnit(o))
	golden(t, "10-berth.conf", GenerateContainerdDropIn(o))
	env, err := GenerateKubeletEnv([]byte("--config=/etc/kubernetes/kubelet/config.json\n--node-ip=10.0.1.17\n--node-labels=team=a,tier=web\n"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kubelet.env", env)
	if _, err := GenerateKubeletEnv([]byte("--node-labels=a=b c\n")); err == nil {
		t.Fatal("a flag with a space was accepted into the EnvironmentFile")
	}
}

// TestSupervisorRestartsAndStops: a child that exits is restarted after a
// backoff, its output lands in its log file, and ending the context stops
// the whole process group.
func TestSupervisorRestartsAndStops(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(dir, "count")
	s := &Supervisor{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MinBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, StopTimeout: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var firstStarts atomic.Int32
	procs := []Process{
		{Name: "flaky", Path: "/bin/sh", Args: []string{"-c", "echo run >> " + counter + "; echo hello; exit 3"}, LogFile: filepath.Join(dir, "flaky.log")},
		{Name: "steady", Path: "/bin/sh", Args: []string{"-c", "sleep 60 & wait"}, LogFile: filepath.Join(dir, "steady.log")},
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, procs, func(string, int) { firstStarts.Add(1) }) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(counter)
		if strings.Count(string(b), "run") >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flaky child not restarted: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("supervisor did not stop its children")
	}
	if n := firstStarts.Load(); n != 2 {
		t.Fatalf("started callback ran %d times, want once per process", n)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "flaky.log")); !strings.Contains(string(b), "hello") {
		t.Fatalf("log file: %q", b)
	}
}

// TestSupervisorOrder: a process with After starts only once the other's
// Ready probe passes (here: its socket answers).
func TestSupervisorOrder(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	marker := filepath.Join(dir, "order")
	s := &Supervisor{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), StopTimeout: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The "runtime" takes a while before it listens; the "kubelet" records
	// whether the socket existed when it started.
	procs := []Process{
		{Name: "kubelet", Path: "/bin/sh", Args: []string{"-c", "test -S " + sock + " && echo ok > " + marker + "; sleep 60"}, LogFile: filepath.Join(dir, "k.log"), After: []string{"runtime"}},
		{Name: "runtime", Path: os.Args[0], Env: []string{listenEnv + "=" + sock}, LogFile: filepath.Join(dir, "r.log"), Ready: SocketReady(sock)},
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, procs, nil) }()
	e2eWait(t, func() bool { b, _ := os.ReadFile(marker); return strings.TrimSpace(string(b)) == "ok" })
	cancel()
	<-done
	if err := (&Supervisor{Log: s.Log}).Run(context.Background(), []Process{{Name: "a", After: []string{"b"}}}, nil); err == nil {
		t.Fatal("After naming an unknown process was accepted")
	}
}

func e2eWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSupervisorMissingBinary(t *testing.T) {
	s := &Supervisor{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := s.Run(context.Background(), []Process{{Name: "x", Path: "/nonexistent/kubelet", LogFile: filepath.Join(t.TempDir(), "x.log")}}, nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kubelet") {
		t.Fatalf("missing binary: %v", err)
	}
}

// TestSupervisorStopsInOrder: the process listed last stops first, and the
// one before it runs its BeforeStop only once that one has exited, while
// it still runs itself (containerd removes the pods after kubelet is gone,
// while it still serves).
func TestSupervisorStopsInOrder(t *testing.T) {
	dir := t.TempDir()
	s := &Supervisor{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), StopTimeout: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pids := map[string]int{}
	var mu sync.Mutex
	alive := func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		return syscall.Kill(pids[name], 0) == nil
	}
	var runtimeAlive, agentAlive atomic.Bool
	beforeStop := make(chan struct{})
	procs := []Process{
		{Name: "runtime", Path: "/bin/sleep", Args: []string{"60"}, LogFile: filepath.Join(dir, "runtime.log"),
			BeforeStop: func(context.Context) error {
				runtimeAlive.Store(alive("runtime"))
				agentAlive.Store(alive("agent"))
				close(beforeStop)
				return errors.New("logged, not fatal")
			}},
		{Name: "agent", Path: "/bin/sleep", Args: []string{"60"}, LogFile: filepath.Join(dir, "agent.log"), After: []string{"runtime"}},
	}
	started := make(chan struct{}, 2)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, procs, func(name string, pid int) {
			mu.Lock()
			pids[name] = pid
			mu.Unlock()
			started <- struct{}{}
		})
	}()
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("children did not start")
		}
	}
	cancel()
	select {
	case <-beforeStop:
	case <-time.After(10 * time.Second):
		t.Fatal("BeforeStop did not run")
	}
	if !runtimeAlive.Load() || agentAlive.Load() {
		t.Fatalf("at BeforeStop: runtime alive %v (want true), agent alive %v (want false)", runtimeAlive.Load(), agentAlive.Load())
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if alive("runtime") {
		t.Fatal("runtime still running after Run returned")
	}
}

// TestLinkCNIPlugins: a node's CNI bin dir gets links to the host's
// plugins; the first host dir with a name wins, a plugin already there
// (berth-cni) stays, and a second run links nothing new.
func TestLinkCNIPlugins(t *testing.T) {
	base := t.TempDir()
	opt, deb, node := filepath.Join(base, "opt"), filepath.Join(base, "deb"), filepath.Join(base, "node/opt/cni/bin")
	for dir, names := range map[string][]string{opt: {"loopback"}, deb: {"loopback", "portmap", "berth-cni"}} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(dir), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(node, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node, "berth-cni"), []byte("ours"), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := LinkCNIPlugins(node, []string{opt, filepath.Join(base, "missing"), deb})
	if err != nil || n != 2 {
		t.Fatalf("linked %d (%v), want 2", n, err)
	}
	for name, want := range map[string]string{"loopback": opt, "portmap": deb, "berth-cni": "ours"} {
		b, err := os.ReadFile(filepath.Join(node, name))
		if err != nil || string(b) != want {
			t.Errorf("%s reads %q (%v), want %q", name, b, err, want)
		}
	}
	if n, err := LinkCNIPlugins(node, []string{opt, deb}); err != nil || n != 0 {
		t.Fatalf("second run linked %d (%v), want 0", n, err)
	}
}
