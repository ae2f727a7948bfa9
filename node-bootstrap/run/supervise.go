package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is one supervised child.
type Process struct {
	Name string
	Path string
	Args []string
	// Env is the child's environment (nil: berth-bootstrap's own).
	Env []string
	// LogFile receives the child's stdout and stderr (appended).
	LogFile string
	// Ready, when set, probes whether the started child serves; the
	// processes that name it in After start once it does.
	Ready func(context.Context) error
	// After names processes whose first start must be ready before this
	// one's first start (kubelet exits at once when the CRI socket does not
	// answer yet). Restarts do not wait.
	After []string
	// BeforeStop, when set, runs when the supervisor stops, after the
	// processes listed later have exited and before this one is sent
	// SIGTERM (containerd removes the node's pods once kubelet is gone).
	// Its error is logged; the stop goes on.
	BeforeStop func(context.Context) error
}

// SocketReady is a Ready probe: the unix socket at path accepts
// connections.
func SocketReady(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		for {
			c, err := d.DialContext(ctx, "unix", path)
			if err == nil {
				return c.Close()
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready: %w (last: %v)", path, ctx.Err(), err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// Supervisor runs processes as children in local mode, where there is no
// systemd: each starts at once, is restarted with exponential backoff when
// it exits, and is stopped (SIGTERM, then SIGKILL) when the context ends.
type Supervisor struct {
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the pause before a restart (default
	// 500ms and 30s); a child that ran for StableAfter (default 10s) starts
	// again from MinBackoff.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	// StopTimeout is how long a child has to exit after SIGTERM (default 10s).
	StopTimeout time.Duration
	// BeforeStopTimeout bounds each BeforeStop (default 30s).
	BeforeStopTimeout time.Duration
}

// StopBudget is the longest a stop of n processes takes with these
// settings: each one's BeforeStop, then its SIGTERM wait.
func (s *Supervisor) StopBudget(n int) time.Duration {
	s.defaults()
	return time.Duration(n) * (s.BeforeStopTimeout + s.StopTimeout)
}

func (s *Supervisor) defaults() {
	if s.MinBackoff <= 0 {
		s.MinBackoff = 500 * time.Millisecond
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 30 * time.Second
	}
	if s.StableAfter <= 0 {
		s.StableAfter = 10 * time.Second
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = 10 * time.Second
	}
	if s.BeforeStopTimeout <= 0 {
		s.BeforeStopTimeout = 30 * time.Second
	}
}

// Run starts every process in parallel (a process with After once those
// are ready) and supervises them until ctx ends; started is called once per
// process after its first successful start. When ctx ends the processes
// stop one by one, the last listed first (kubelet before containerd), each
// after its BeforeStop. Run returns when every child has exited, with
// ctx's error.
func (s *Supervisor) Run(ctx context.Context, procs []Process, started func(name string, pid int)) error {
	s.defaults()
	ready := map[string]chan struct{}{}
	for _, p := range procs {
		ready[p.Name] = make(chan struct{})
	}
	for _, p := range procs {
		for _, a := range p.After {
			if ready[a] == nil {
				return fmt.Errorf("%s: after unknown process %q", p.Name, a)
			}
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(procs))
	stops := make([]context.CancelFunc, len(procs))
	exited := make([]chan struct{}, len(procs))
	for i, p := range procs {
		// Each process has its own stop, so that they stop in order.
		pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		stops[i], exited[i] = stop, make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(exited[i])
			for _, a := range p.After {
				select {
				case <-ready[a]:
				case <-pctx.Done():
					return
				}
			}
			if err := s.supervise(pctx, p, ready[p.Name], started); err != nil {
				errc <- err
			}
		}()
	}
	allExited := make(chan struct{})
	go func() { wg.Wait(); close(allExited) }()
	select {
	case <-ctx.Done():
		for i := len(procs) - 1; i >= 0; i-- {
			if p := procs[i]; p.BeforeStop != nil {
				select {
				case <-exited[i]: // not running: nothing to tidy through it
				default:
					bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.BeforeStopTimeout)
					if err := p.BeforeStop(bctx); err != nil {
						s.Log.Warn("before stop", "process", p.Name, "err", err)
					}
					cancel()
				}
			}
			stops[i]()
			<-exited[i]
		}
	case <-allExited:
	}
	for _, stop := range stops {
		stop()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}

func (s *Supervisor) supervise(ctx context.Context, p Process, ready chan struct{}, started func(string, int)) error {
	log := s.Log.With("process", p.Name)
	if err := os.MkdirAll(filepath.Dir(p.LogFile), 0o755); err != nil {
		return fmt.Errorf("%s log dir: %w", p.Name, err)
	}
	backoff := s.MinBackoff
	first := true
	for restarts := 0; ; restarts++ {
		t0 := time.Now()
		cmd, logf, err := s.start(p)
		if err != nil {
			// A missing binary does not heal: fail instead of looping.
			if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("start %s: %w", p.Name, err)
			}
			log.Error("start failed", "err", err, "retryIn", backoff)
		} else {
			log.Info("started", "pid", cmd.Process.Pid, "restarts", restarts, "elapsed", time.Since(t0).Round(time.Microsecond), "log", p.LogFile)
			if first {
				if started != nil {
					started(p.Name, cmd.Process.Pid)
				}
				go s.probe(ctx, p, t0, ready, log)
			}
			first = false
			werr := s.wait(ctx, cmd, log)
			logf.Close()
			if ctx.Err() != nil {
				return nil
			}
			ran := time.Since(t0)
			if ran >= s.StableAfter {
				backoff = s.MinBackoff
			}
			log.Warn("exited, restarting", "err", werr, "ran", ran.Round(time.Millisecond), "retryIn", backoff, "log", p.LogFile)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.MaxBackoff)
	}
}

// probe closes ready once p's Ready probe passes (at once without one).
func (s *Supervisor) probe(ctx context.Context, p Process, t0 time.Time, ready chan struct{}, log *slog.Logger) {
	if p.Ready != nil {
		if err := p.Ready(ctx); err != nil {
			return
		}
		log.Info("ready", "elapsed", time.Since(t0).Round(time.Microsecond))
	}
	close(ready)
}

func (s *Supervisor) start(p Process) (*exec.Cmd, *os.File, error) {
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", p.LogFile, err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so stopping reaches kubelet's exec-plugin children
	// too; the kernel kills the child if berth-bootstrap dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", p.Path, err)
	}
	return cmd, logf, nil
}

// wait returns when the child exits; when ctx ends first it stops the
// child's process group: SIGTERM, then SIGKILL after StopTimeout.
func (s *Supervisor) wait(ctx context.Context, cmd *exec.Cmd, log *slog.Logger) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case err := <-done:
		log.Info("stopped", "pid", pgid)
		return err
	case <-time.After(s.StopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		log.Warn("killed after stop timeout", "pid", pgid, "timeout", s.StopTimeout)
		return <-done
	}
}
