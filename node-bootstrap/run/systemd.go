package run

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// HasSystemd reports whether the host was booted with systemd (the
// sd_booted check: /run/systemd/system exists).
func HasSystemd() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// Systemd starts the units through systemctl.
type Systemd struct {
	Log *slog.Logger
	// Systemctl is the systemctl binary (default "systemctl").
	Systemctl string
}

// Start reloads the units and restarts containerd and kubelet in one
// systemctl call: one transaction, kubelet's job starting the moment
// containerd reports ready.
func (s Systemd) Start(ctx context.Context) error {
	bin := s.Systemctl
	if bin == "" {
		bin = "systemctl"
	}
	for _, args := range [][]string{{"daemon-reload"}, {"restart", "containerd.service", "kubelet.service"}} {
		start := time.Now()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		s.Log.Info("systemctl", "args", strings.Join(args, " "), "elapsed", time.Since(start).Round(time.Microsecond))
	}
	return nil
}
