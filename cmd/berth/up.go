package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// The local cluster is a set of background processes whose pid files live
// in the state directory; `berth up` starts what is not running, `berth
// down` stops all of them. Today the cluster is localcloud and the control
// plane; nodes join it as they land.

type component struct {
	name string
	args func(stateDir string) []string
	env  []string
}

// localcloudEnv points AWS SDKs and the aws CLI at the local cloud.
func localcloudEnv(endpoint, lcState string) []string {
	return []string{
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(lcState, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(lcState, "config"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

func controlplaneComponent(cluster, listen, eksListen string, env []string) component {
	return component{name: "berth-controlplane", env: env, args: func(state string) []string {
		return []string{"serve", "--data-dir", filepath.Join(state, "controlplane"), "--cluster-name", cluster,
			"--listen", listen, "--eks-listen", eksListen}
	}}
}

func localcloudComponent(listen string) component {
	return component{name: "berth-localcloud", args: func(state string) []string {
		return []string{"serve", "--listen", listen, "--state-dir", filepath.Join(state, "localcloud")}
	}}
}

func newUpCommand() *cobra.Command {
	var stateDir, binDir, listen, cluster, apiListen, eksListen string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the local cluster in the background",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return fmt.Errorf("state dir: %w", err)
			}
			lc := localcloudComponent(listen)
			if err := start(cmd.Context(), stateDir, binDir, lc); err != nil {
				return err
			}
			endpoint := "http://" + listen
			if err := waitHealthy(cmd.Context(), endpoint+"/_localcloud/health", 20*time.Second); err != nil {
				return fmt.Errorf("berth-localcloud did not become healthy (log: %s): %w", logPath(stateDir, lc.name), err)
			}
			lcState := filepath.Join(stateDir, "localcloud")
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "started berth-localcloud (EC2, IMDSv2, STS, EFS) on %s, state in %s\n", endpoint, lcState)

			cp := controlplaneComponent(cluster, apiListen, eksListen, localcloudEnv(endpoint, lcState))
			kubeconfig := filepath.Join(stateDir, "controlplane", "admin.kubeconfig")
			if _, ok := running(stateDir, cp.name); !ok {
				_ = os.Remove(kubeconfig)
			}
			if err := start(cmd.Context(), stateDir, binDir, cp); err != nil {
				return err
			}
			if err := waitFile(cmd.Context(), kubeconfig, 3*time.Minute); err != nil {
				return fmt.Errorf("berth-controlplane did not become ready (log: %s): %w", logPath(stateDir, cp.name), err)
			}
			fmt.Fprintf(out, "started berth-controlplane: cluster %q, API https://%s, EKS API http://%s\n", cluster, apiListen, eksListen)
			fmt.Fprintf(out, "not started yet: nodes (node-bootstrap cannot run kubelet yet)\n\nuse it with:\n")
			fmt.Fprintf(out, "  export AWS_ENDPOINT_URL=%s AWS_SHARED_CREDENTIALS_FILE=%s/credentials AWS_CONFIG_FILE=%s/config\n", endpoint, lcState, lcState)
			fmt.Fprintf(out, "  export KUBECONFIG=%s   # or %s for IAM auth via berth token\n", kubeconfig, filepath.Join(stateDir, "controlplane", "iam.kubeconfig"))
			fmt.Fprintf(out, "  aws --endpoint-url %s ec2 describe-vpcs\n", endpoint)
			fmt.Fprintf(out, "  aws --endpoint-url http://%s eks describe-cluster --name %s\n", eksListen, cluster)
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", ".berth", "directory for the local cluster's state, logs and pid files")
	cmd.Flags().StringVar(&binDir, "bin-dir", "", "directory of the berth binaries (default: next to this binary)")
	cmd.Flags().StringVar(&listen, "localcloud-listen", "127.0.0.1:4566", "address of localcloud's API")
	cmd.Flags().StringVar(&cluster, "cluster-name", "berth", "name of the local cluster")
	cmd.Flags().StringVar(&apiListen, "api-listen", "127.0.0.1:6443", "address of the Kubernetes API")
	cmd.Flags().StringVar(&eksListen, "eks-listen", "127.0.0.1:4567", "address of the EKS API")
	return cmd
}

func waitFile(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not written: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newDownCommand() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the local cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The control plane first: it calls localcloud while it runs.
			for _, name := range []string{"berth-controlplane", "berth-localcloud"} {
				stopped, err := stop(stateDir, name)
				if err != nil {
					return err
				}
				if stopped {
					fmt.Fprintln(cmd.OutOrStdout(), "stopped "+name)
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), name+" was not running")
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", ".berth", "directory of the local cluster's state")
	return cmd
}

func pidPath(state, name string) string { return filepath.Join(state, name+".pid") }
func logPath(state, name string) string { return filepath.Join(state, name+".log") }

// running returns the pid of a live process recorded for name.
func running(state, name string) (int, bool) {
	b, err := os.ReadFile(pidPath(state, name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, false
	}
	// Guard against pid reuse: the process must be the component.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != name {
		return 0, false
	}
	return pid, true
}

func start(ctx context.Context, state, binDir string, c component) error {
	if pid, ok := running(state, c.name); ok {
		fmt.Fprintf(os.Stderr, "%s already running (pid %d)\n", c.name, pid)
		return nil
	}
	if binDir == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find bin dir: %w", err)
		}
		binDir = filepath.Dir(self)
	}
	logf, err := os.OpenFile(logPath(state, c.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, c.name), c.args(state)...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session, so it outlives this command and the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	if err := os.WriteFile(pidPath(state, c.name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("pid file: %w", err)
	}
	return cmd.Process.Release()
}

func stop(state, name string) (bool, error) {
	pid, ok := running(state, name)
	if !ok {
		_ = os.Remove(pidPath(state, name))
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("stop %s (pid %d): %w", name, pid, err)
	}
	for i := 0; i < 150; i++ {
		if syscall.Kill(pid, 0) != nil {
			_ = os.Remove(pidPath(state, name))
			return true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = os.Remove(pidPath(state, name))
	return true, nil
}

func waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("health: HTTP %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
