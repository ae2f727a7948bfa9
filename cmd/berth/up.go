package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/berth-io/berth/deploy/addons"
	"github.com/berth-io/berth/internal/imageload"
)

// The local cluster is a set of background processes whose pid files live
// in the state directory; `berth up` starts what is not running, `berth
// down` stops all of them. Today the cluster is localcloud and the control
// plane; nodes join it as they land.

type component struct {
	name string // of its pid and log files; also its binary in the bin dir unless bin is set
	// bin, when set, is a program on PATH that execs exe (nsenter into a
	// node's namespace); running() knows the process by exe.
	bin, exe string
	args     func(stateDir string) []string
	env      []string
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

func controlplaneComponent(cluster, listen, eksListen, etcdClient, etcdPeer string, env []string) component {
	return component{name: "berth-controlplane", env: env, args: func(state string) []string {
		return []string{"serve", "--data-dir", filepath.Join(state, "controlplane"), "--cluster-name", cluster,
			"--listen", listen, "--eks-listen", eksListen, "--etcd-client-listen", etcdClient, "--etcd-peer-listen", etcdPeer}
	}}
}

func localcloudComponent(listen []string) component {
	return component{name: "berth-localcloud", args: func(state string) []string {
		// A local node has nothing to wait for at boot: EC2's pending
		// time, which localcloud emulates for tests, would only delay
		// the cluster by two seconds.
		args := []string{"serve", "--state-dir", filepath.Join(state, "localcloud"), "--instance-start-delay", "0s"}
		for _, l := range listen {
			args = append(args, "--listen", l)
		}
		return args
	}}
}

func newUpCommand() *cobra.Command {
	var stateDir, binDir, listen, cluster, apiListen, eksListen, etcdClient, etcdPeer string
	nodes := nodeOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the local cluster in the background",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			nodes.start = time.Now()
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return fmt.Errorf("state dir: %w", err)
			}
			if stateDir, err = filepath.Abs(stateDir); err != nil {
				return err
			}
			if binDir == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find bin dir: %w", err)
				}
				binDir = filepath.Dir(self)
			}
			lcListen := []string{listen}
			if nodes.count > 0 && os.Geteuid() != 0 {
				return fmt.Errorf("nodes need root (localcloud's VPC datapath makes namespaces and links): run as root, or with --nodes 0")
			}
			if nodes.count > 0 {
				// Nodes reach the APIs on the host's address: localcloud's
				// STS (tokens are presigned for it) and the Kubernetes API.
				if nodes.hostAddr == "" {
					if nodes.hostAddr, err = hostAddress(); err != nil {
						return err
					}
				}
				_, port, err := net.SplitHostPort(listen)
				if err != nil {
					return fmt.Errorf("--localcloud-listen: %w", err)
				}
				nodes.sts = net.JoinHostPort(nodes.hostAddr, port)
				lcListen = append(lcListen, nodes.sts)
				if !cmd.Flags().Changed("api-listen") {
					apiListen = net.JoinHostPort(nodes.hostAddr, "6443")
				}
				if err := reachableFromNodes("--api-listen", apiListen); err != nil {
					return err
				}
				// Its second listener takes the same port on the host
				// address, which a wildcard listener would hold.
				if !isLoopback(listen) {
					return fmt.Errorf("--localcloud-listen %s: with nodes, a loopback address (nodes reach localcloud on --host-address)", listen)
				}
			}
			if nodes.count > 0 {
				// The nodes' images take a second or two to build: while
				// localcloud and the control plane start.
				var imgs []imageload.Image
				var build errgroup.Group
				build.Go(func() (err error) {
					imgs, err = nodeImages(binDir, filepath.Join(stateDir, "images"))
					return err
				})
				nodes.images = func() ([]imageload.Image, error) { return imgs, build.Wait() }
			}
			lc := localcloudComponent(lcListen)
			if err := start(cmd.Context(), stateDir, binDir, lc); err != nil {
				return err
			}
			endpoint := "http://" + listen
			if err := waitHealthy(cmd.Context(), endpoint+"/_localcloud/health", 20*time.Second); err != nil {
				return fmt.Errorf("berth-localcloud did not become healthy (log: %s): %w", logPath(stateDir, lc.name), err)
			}
			lcState := filepath.Join(stateDir, "localcloud")
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "berth-localcloud (EC2, IMDSv2, STS, EFS) on %s, state in %s\n", endpoint, lcState)

			cp := controlplaneComponent(cluster, apiListen, eksListen, etcdClient, etcdPeer, localcloudEnv(endpoint, lcState))
			if nodes.count > 0 {
				// Users' tokens are presigned for the loopback listener,
				// nodes' for the host's. metrics-server runs on the nodes,
				// from the image berth up imports (kubectl top).
				cp.args = withArgs(cp.args, "--sts-endpoint", endpoint, "--sts-endpoint", "http://"+nodes.sts,
					"--metrics-server-image", addons.MetricsServerImage)
			}
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
			fmt.Fprintf(out, "berth-controlplane: cluster %q, API https://%s, EKS API http://%s [%s]\n", cluster, apiListen, eksListen, since(nodes.start))
			if nodes.count > 0 {
				a, err := newLocalAWS(cmd.Context(), endpoint, "http://"+eksListen)
				if err != nil {
					return err
				}
				if err := upNodes(cmd.Context(), out, stateDir, binDir, cluster, kubeconfig, nodes, a); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "\nuse it with:\n")
			fmt.Fprintf(out, "  export AWS_ENDPOINT_URL=%s AWS_SHARED_CREDENTIALS_FILE=%s/credentials AWS_CONFIG_FILE=%s/config\n", endpoint, lcState, lcState)
			fmt.Fprintf(out, "  export KUBECONFIG=%s   # or %s for IAM auth via berth token\n", kubeconfig, filepath.Join(stateDir, "controlplane", "iam.kubeconfig"))
			fmt.Fprintf(out, "  export PATH=%s:$PATH   # kubectl v1.37.2 and berth\n", binDir)
			if nodes.count > 0 {
				fmt.Fprintf(out, "  kubectl run hold --image %s --image-pull-policy Never   # a pod on a VPC address\n", pauseImage)
			}
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
	cmd.Flags().StringVar(&etcdClient, "etcd-client-listen", "127.0.0.1:2379", "client address of the control plane's embedded etcd")
	cmd.Flags().StringVar(&etcdPeer, "etcd-peer-listen", "127.0.0.1:2380", "peer address of the control plane's embedded etcd")
	cmd.Flags().IntVar(&nodes.count, "nodes", 1, "nodes to run (localcloud instances joined by berth-bootstrap, pods networked by berth-ipamd)")
	cmd.Flags().StringVar(&nodes.typ, "node-type", "m5.large", "instance type of the nodes")
	cmd.Flags().StringVar(&nodes.vpcCIDR, "vpc-cidr", "10.64.0.0/16", "CIDR of the nodes' VPC (must not overlap the host's routes)")
	cmd.Flags().StringVar(&nodes.resolvConf, "resolv-conf", "", "resolv.conf naming the DNS servers of the nodes' pods and CoreDNS's upstreams (default: /etc/resolv.conf, or systemd-resolved's upstream list when it names only its loopback stub)")
	cmd.Flags().StringVar(&nodes.hostAddr, "host-address", "", "host address the nodes reach the APIs on (default: the first global IPv4 address; the Kubernetes API then listens on it)")
	return cmd
}

// since is the time from start, as berth up prints it.
func since(start time.Time) string { return time.Since(start).Round(100 * time.Millisecond).String() }

// reachableFromNodes refuses an address nodes cannot reach: loopback, or
// all addresses (whose kubeconfigs would name loopback).
func reachableFromNodes(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return fmt.Errorf("%s %s: nodes need an address of the host they reach (--host-address), not %s", flag, addr, host)
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

// withArgs appends fixed arguments to a component's.
func withArgs(args func(string) []string, more ...string) func(string) []string {
	return func(state string) []string { return append(args(state), more...) }
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
			// Nodes first (they call both), then the control plane (it
			// calls localcloud).
			pids, err := filepath.Glob(filepath.Join(stateDir, "node-*.pid"))
			if err != nil {
				return err
			}
			var names, ids []string
			seen := map[string]bool{}
			for _, p := range pids {
				node := strings.TrimSuffix(filepath.Base(p), ".pid")
				for _, suffix := range nodeProcesses {
					node = strings.TrimSuffix(node, suffix)
				}
				if !seen[node] {
					seen[node] = true
					ids = append(ids, strings.TrimPrefix(node, "node-"))
					for _, suffix := range nodeProcesses {
						names = append(names, node+suffix)
					}
				}
			}
			cpRunning := isRunning(stateDir, "berth-controlplane")
			for _, name := range append(names, "berth-controlplane", "berth-localcloud") {
				if name == "berth-controlplane" && cpRunning && len(ids) > 0 {
					markNodesDown(cmd.Context(), cmd.ErrOrStderr(), stateDir, ids)
				}
				stopped, err := stop(stateDir, name)
				if err != nil {
					return err
				}
				if stopped {
					fmt.Fprintln(cmd.OutOrStdout(), "stopped "+name)
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), name+" was not running")
				}
				if id, ok := strings.CutSuffix(strings.TrimPrefix(name, "node-"), "-netpol"); ok {
					// The agent leaves its programs pinned for its next
					// start; a stopped node keeps none.
					if err := os.RemoveAll(netpolPinDir(id)); err != nil {
						return fmt.Errorf("unpin %s's policy programs: %w", id, err)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", ".berth", "directory of the local cluster's state")
	return cmd
}

// markNodesDown sets the Ready condition of the stopped nodes' Nodes to
// Unknown, as the node lifecycle controller does once a kubelet has been
// silent for its grace period. A kubelet that starts on a Node it finds
// Ready posts its status only at its next period, up to 10 s later (and
// may post NotReady first); on one not Ready it posts as soon as it is.
// Best effort: a failure is said and the cluster still stops.
func markNodesDown(ctx context.Context, warn io.Writer, state string, instanceIDs []string) {
	self, err := os.Executable()
	if err != nil {
		return
	}
	binDir, kubeconfig := filepath.Dir(self), filepath.Join(state, "controlplane", "admin.kubeconfig")
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := kubectl(ctx, binDir, kubeconfig, "", "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.providerID}{"\n"}{end}`)
	if err != nil {
		fmt.Fprintf(warn, "warning: nodes left Ready: %v\n", err)
		return
	}
	now := time.Now().UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown",`+
		`"message":"Kubelet stopped posting node status (berth down).","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`, now, now)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, provider, _ := strings.Cut(line, " ")
		if !slices.Contains(instanceIDs, provider[strings.LastIndex(provider, "/")+1:]) {
			continue
		}
		// Conditions merge by type: the others stay as the kubelet left them.
		if _, err := kubectl(ctx, binDir, kubeconfig, "", "patch", "node", name, "--subresource", "status", "--type", "strategic", "-p", patch); err != nil {
			fmt.Fprintf(warn, "warning: node %s left Ready: %v\n", name, err)
		}
	}
}

func pidPath(state, name string) string { return filepath.Join(state, name+".pid") }
func logPath(state, name string) string { return filepath.Join(state, name+".log") }

// running returns the pid of a live process recorded for name. The pid
// file holds the pid and the name of the process's executable.
func running(state, name string) (int, bool) {
	b, err := os.ReadFile(pidPath(state, name))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	want := name
	if len(f) > 1 {
		want = f[1]
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, false
	}
	// Guard against pid reuse: the process must be the component.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	// A rebuilt binary shows as "<path> (deleted)": still the component.
	exe = strings.TrimSuffix(exe, " (deleted)")
	if err != nil || filepath.Base(exe) != want {
		return 0, false
	}
	return pid, true
}

func start(ctx context.Context, state, binDir string, c component) error {
	args := c.args(state)
	sum := settings(binDir, args)
	if pid, ok := running(state, c.name); ok {
		if was := recordedSettings(state, c.name); was != "" && was != sum {
			return fmt.Errorf("%s is running (pid %d) with other settings than this berth up's: run berth down first", c.name, pid)
		}
		return nil
	}
	path, exe := filepath.Join(binDir, c.name), c.name
	if c.bin != "" {
		var err error
		if path, err = exec.LookPath(c.bin); err != nil {
			return fmt.Errorf("start %s: %w", c.name, err)
		}
		exe = c.exe
	}
	logf, err := os.OpenFile(logPath(state, c.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	// The user's AWS settings (keys, profile, endpoints) are not the local
	// cloud's: a component gets only those it is given.
	// A node's processes (bin set) get only their own.
	cmd.Env = c.env
	if c.bin == "" {
		cmd.Env = append(withoutAWS(os.Environ()), c.env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session, so it outlives this command and the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	if err := os.WriteFile(pidPath(state, c.name), []byte(strconv.Itoa(cmd.Process.Pid)+" "+exe+" "+sum+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("pid file: %w", err)
	}
	return cmd.Process.Release()
}

// settings fingerprints what a component was started with (its bin dir
// and arguments), kept in its pid file: a later berth up with other flags
// must not take the running one for what it asked for.
func settings(binDir string, args []string) string {
	h := sha256.New()
	h.Write([]byte(binDir))
	for _, a := range args {
		h.Write([]byte{0})
		h.Write([]byte(a))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// recordedSettings is the fingerprint in a pid file ("" when it has none).
func recordedSettings(state, name string) string {
	b, err := os.ReadFile(pidPath(state, name))
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 2 {
		return f[2]
	}
	return ""
}

// stopWait is how long a component has to exit after SIGTERM: a node's
// berth-bootstrap stops its pods, kubelet and containerd first.
const stopWait = 2 * time.Minute

func stop(state, name string) (bool, error) {
	pid, ok := running(state, name)
	if !ok {
		_ = os.Remove(pidPath(state, name))
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("stop %s (pid %d): %w", name, pid, err)
	}
	for deadline := time.Now().Add(stopWait); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, ok := running(state, name); !ok {
			_ = os.Remove(pidPath(state, name))
			return true, nil
		}
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
