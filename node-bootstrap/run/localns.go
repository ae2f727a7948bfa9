package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PrivateMountEnv marks a berth-bootstrap that runs in the private mount
// namespace local mode gives each node.
const PrivateMountEnv = "BERTH_BOOTSTRAP_NODE_MOUNTS"

// KernelDefaults are the sysctls kubelet's protectKernelDefaults checks,
// with the values an EKS AMI sets (and kubelet would otherwise write).
var KernelDefaults = []struct{ Name, Value string }{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// InPrivateMounts reports whether this process is the re-executed one,
// and when the first one started.
func InPrivateMounts() (bool, time.Time) {
	v := os.Getenv(PrivateMountEnv)
	if v == "" {
		return false, time.Time{}
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return true, time.Time{}
	}
	return true, time.Unix(0, ns)
}

// ReexecInPrivateMounts runs this same command again in a new mount
// namespace and waits for it; ctx's end is passed on as SIGTERM. Local mode
// uses it so that the node's mounts (NodeMounts) stay the node's.
func ReexecInPrivateMounts(ctx context.Context, started time.Time) error {
	cmd := exec.CommandContext(ctx, "/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), PrivateMountEnv+"="+strconv.FormatInt(started.UnixNano(), 10))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	// Room for the inner supervisor's whole ordered stop (two processes,
	// containerd's BeforeStop removing the pods), or the pods outlive it.
	cmd.WaitDelay = (&Supervisor{}).StopBudget(2) + 10*time.Second
	err := cmd.Run()
	if ctx.Err() != nil && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("berth-bootstrap in the node's mount namespace: %w", err)
	}
	if err != nil {
		return fmt.Errorf("re-exec in a private mount namespace: %w", err)
	}
	return nil
}

// NodeMounts makes the calling process's (private) mount namespace look
// like a node's own host, without touching the shared host: kubelet
// hard-codes /var/lib/kubelet/device-plugins and /var/log/containers, so
// /var/lib and /var/log become root's; and the kernel settings kubelet
// checks show the values a node AMI sets (files under root bound over
// /proc/sys) instead of kubelet rewriting the host kernel's.
func NodeMounts(root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if root == "/" {
		return errors.New("node mounts need a --root other than /")
	}
	for _, d := range []string{"/var/lib", "/var/log"} {
		if root == d || strings.HasPrefix(root, d+"/") {
			return fmt.Errorf("--root %s: must not be under %s, which local mode replaces with the node's own", root, d)
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	for _, d := range []string{"/var/lib", "/var/log"} {
		src := filepath.Join(root, d)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, d, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, d, err)
		}
	}
	dir := filepath.Join(root, "run/berth/sysctl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, s := range KernelDefaults {
		target := filepath.Join("/proc/sys", s.Name)
		cur, err := os.ReadFile(target)
		if err != nil {
			return fmt.Errorf("read %s: %w", target, err)
		}
		if strings.TrimSpace(string(cur)) == s.Value {
			continue
		}
		f := filepath.Join(dir, strings.ReplaceAll(s.Name, "/", "."))
		if err := os.WriteFile(f, []byte(s.Value+"\n"), 0o644); err != nil {
			return err
		}
		if err := unix.Mount(f, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", f, target, err)
		}
	}
	return nil
}

// HostCNIPluginDirs are where a host keeps the reference CNI plugins
// (loopback, portmap, ...): the CNI project's path, then Debian's.
var HostCNIPluginDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}

// LinkCNIPlugins gives a local node's own CNI bin dir the host's reference
// plugins, as an AMI ships them in /opt/cni/bin: containerd runs loopback
// for every sandbox, and the VPC CNI chains portmap. A plugin already in
// dir (berth-cni, installed by ipamd) is left alone; the first host dir
// holding a name wins.
func LinkCNIPlugins(dir string, hostDirs []string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("cni bin dir: %w", err)
	}
	linked := 0
	for _, hd := range hostDirs {
		if same, _ := filepath.Rel(hd, dir); same == "." {
			continue
		}
		entries, err := os.ReadDir(hd)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return linked, fmt.Errorf("host cni plugins: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			err := os.Symlink(filepath.Join(hd, e.Name()), filepath.Join(dir, e.Name()))
			if errors.Is(err, os.ErrExist) {
				continue
			}
			if err != nil {
				return linked, fmt.Errorf("link cni plugin %s: %w", e.Name(), err)
			}
			linked++
		}
	}
	return linked, nil
}
