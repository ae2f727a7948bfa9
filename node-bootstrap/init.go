package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
	"github.com/berth-io/berth/internal/maxpods"
	"github.com/berth-io/berth/node-bootstrap/containerd"
	"github.com/berth-io/berth/node-bootstrap/discovery"
	"github.com/berth-io/berth/node-bootstrap/kubelet"
	"github.com/berth-io/berth/node-bootstrap/nodeconfig"
	"github.com/berth-io/berth/node-bootstrap/run"
)

type initOptions struct {
	root          string
	skip          []string
	nodeName      string
	runMode       string
	kubeletBin    string
	containerdBin string
	berthBin      string
}

func newInitCommand(f *configFlags, logger func() *slog.Logger) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Resolve the configuration, write kubelet's and containerd's files, then start them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd.Context(), cmd.OutOrStdout(), logger(), *f, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.root, "root", "/", "prefix for every path written (image builds, tests and local mode)")
	fl.StringSliceVar(&o.skip, "skip", nil, `phases to skip: "run" writes the files and starts nothing`)
	fl.StringVar(&o.nodeName, "node-name", string(discovery.PrivateDNSName), "node name source: private-dns-name (EC2 DescribeInstances, what the IAM authenticator maps) or instance-id (no EC2 call)")
	fl.StringVar(&o.runMode, "run-mode", "auto", "how containerd and kubelet run: systemd (units and systemctl), supervise (children of berth-bootstrap, which then stays in the foreground: local mode) or auto (systemd when booted with it)")
	fl.StringVar(&o.kubeletBin, "kubelet-bin", run.DefaultKubeletBin, "kubelet binary")
	fl.StringVar(&o.containerdBin, "containerd-bin", run.DefaultContainerdBin, "containerd binary")
	fl.StringVar(&o.berthBin, "berth-bin", kubelet.TokenCommand, "berth CLI that kubelet runs as its token exec plugin")
	return cmd
}

// phases times init's phases; the summary is logged and printed.
type phases struct {
	log   *slog.Logger
	start time.Time
	mu    sync.Mutex
	done  []string
}

func (p *phases) end(name string, t0 time.Time) {
	d := time.Since(t0)
	p.log.Info("phase done", "phase", name, "elapsed", d.Round(time.Microsecond), "sinceStart", time.Since(p.start).Round(time.Microsecond))
	p.mu.Lock()
	p.done = append(p.done, fmt.Sprintf("%s=%s", name, d.Round(time.Microsecond)))
	p.mu.Unlock()
}

func (p *phases) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.done, " ")
}

func runInit(ctx context.Context, out io.Writer, log *slog.Logger, f configFlags, o initOptions) error {
	ph := &phases{log: log.With("cmd", "init"), start: time.Now()}
	skipRun := false
	for _, s := range o.skip {
		switch s {
		case "run":
			skipRun = true
		default:
			return fmt.Errorf("--skip %q: the only skippable phase is run", s)
		}
	}
	nameSource, err := discovery.ParseNameSource(o.nodeName)
	if err != nil {
		return err
	}
	if o.root, err = filepath.Abs(o.root); err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	mode := o.runMode
	switch mode {
	case "auto":
		mode = "supervise"
		if run.HasSystemd() {
			mode = "systemd"
		}
	case "systemd", "supervise":
	default:
		return fmt.Errorf("--run-mode %q: want auto, systemd or supervise", o.runMode)
	}
	local := mode == "supervise"
	if local && !skipRun {
		// A local node gets a mount namespace of its own (run.NodeMounts):
		// run again inside a new one, once.
		inside, since := run.InPrivateMounts()
		if !inside {
			return run.ReexecInPrivateMounts(ctx, ph.start)
		}
		if !since.IsZero() {
			ph.start = since
			ph.end("reexec", since)
		}
	}

	t0 := time.Now()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS config: %w", err)
	}
	d := discovery.New(imds.NewFromConfig(awsCfg, discovery.NoSDKRetries), func(region string) discovery.EC2 {
		c := awsCfg.Copy()
		c.Region = region
		return ec2.NewFromConfig(c)
	}, log, discovery.Options{NameSource: nameSource, IMDSAttempts: f.imdsAttempts})
	ph.end("aws-config", t0)

	// The identity first (one IMDS call); then the user data and the node
	// name (EC2) at the same time.
	t0 = time.Now()
	id, err := d.Identity(ctx)
	if err != nil {
		return reportFailure(ctx, awsCfg, "", err)
	}
	ph.end("imds-identity", t0)
	var (
		wg       sync.WaitGroup
		r        *nodeconfig.Resolved
		mp       maxpods.Result
		resolveE error
		node     discovery.Instance
		discE    error
	)
	if f.instanceType == "" {
		f.instanceType = id.Type
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.Now()
		r, mp, resolveE = resolve(ctx, f, func() (*discovery.Discoverer, error) { return d, nil })
		ph.end("resolve-config", t)
	}()
	go func() {
		defer wg.Done()
		t := time.Now()
		node, discE = d.NodeName(ctx, id)
		ph.end("node-name", t)
	}()
	wg.Wait()
	if err := errors.Join(resolveE, discE); err != nil {
		return reportFailure(ctx, awsCfg, id.ID, err)
	}

	t0 = time.Now()
	kn := kubelet.Node{InstanceID: node.ID, AvailabilityZone: node.AvailabilityZone, PrivateIP: node.PrivateIP, NodeName: node.NodeName}
	kopts := kubelet.Options{Paths: kubelet.DefaultPaths(), TokenCommand: o.berthBin, Region: node.Region}
	copts := containerd.Options{}
	if local {
		kopts.Paths = kopts.Paths.Under(o.root)
		kopts.Local, kopts.CgroupV1 = true, cgroupV1()
		copts = containerd.Options{Root: o.root, Local: true}
	}
	files, err := generateFiles(r.Config, kn, mp, kopts, copts, mode, o)
	if err != nil {
		return reportFailure(ctx, awsCfg, node.ID, err)
	}
	ph.end("generate", t0)
	// Everything is generated before anything is written: a bad
	// configuration leaves the disk untouched.
	t0 = time.Now()
	for _, file := range files {
		if err := writeAtomic(filepath.Join(o.root, file.path), file.data, file.mode); err != nil {
			return reportFailure(ctx, awsCfg, node.ID, err)
		}
	}
	ph.end("write", t0)
	if _, err := fmt.Fprintf(out, "wrote %d files under %q for %s (maxPods %d) in %s\n", len(files), o.root, node.NodeName, mp.MaxPods, time.Since(ph.start).Round(time.Millisecond)); err != nil {
		return err
	}
	if skipRun {
		ph.log.Info("init done (run skipped)", "node", node.NodeName, "elapsed", time.Since(ph.start).Round(time.Microsecond), "phases", ph.summary())
		return nil
	}

	t0 = time.Now()
	if mode == "systemd" {
		if err := (run.Systemd{Log: log}).Start(ctx); err != nil {
			return reportFailure(ctx, awsCfg, node.ID, err)
		}
		ph.end("start", t0)
		ph.log.Info("init done", "node", node.NodeName, "elapsed", time.Since(ph.start).Round(time.Microsecond), "phases", ph.summary())
		return nil
	}
	if err := run.NodeMounts(o.root); err != nil {
		return reportFailure(ctx, awsCfg, node.ID, err)
	}
	if n, err := run.LinkCNIPlugins(containerd.CNIBinDir(copts), run.HostCNIPluginDirs); err != nil {
		return reportFailure(ctx, awsCfg, node.ID, err)
	} else if n > 0 {
		log.Info("linked the host's CNI plugins into the node's", "dir", containerd.CNIBinDir(copts), "count", n)
	}
	ph.end("node-mounts", t0)
	t0 = time.Now()
	flags := strings.Fields(string(kubelet.GenerateFlags(r.Config, kn, kopts)))
	procs := []run.Process{
		{Name: "containerd", Path: o.containerdBin, Args: []string{"--config", filepath.Join(o.root, containerd.ConfigPath)},
			LogFile: filepath.Join(o.root, "/var/log/berth/containerd.log"), Ready: run.SocketReady(kopts.Paths.ContainerdSocket),
			BeforeStop: run.RemovePods(kopts.Paths.ContainerdSocket, log)},
		// kubelet exits at once if the CRI socket does not answer yet.
		{Name: "kubelet", Path: o.kubeletBin, Args: flags, LogFile: filepath.Join(o.root, "/var/log/berth/kubelet.log"),
			After: []string{"containerd"}},
	}
	var launched sync.WaitGroup
	launched.Add(len(procs))
	go func() {
		launched.Wait()
		ph.log.Info("init done: containerd and kubelet launched", "node", node.NodeName, "elapsed", time.Since(ph.start).Round(time.Microsecond), "phases", ph.summary())
	}()
	// containerd-launched is its exec; kubelet-launched also covers
	// containerd coming up (kubelet starts once the CRI socket answers).
	err = (&run.Supervisor{Log: log}).Run(ctx, procs, func(name string, _ int) {
		ph.end(name+"-launched", t0)
		launched.Done()
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return reportFailure(context.WithoutCancel(ctx), awsCfg, node.ID, err)
	}
	return nil
}

type file struct {
	path string
	data []byte
	mode os.FileMode
}

// generateFiles renders every file init writes, one generator each.
func generateFiles(nc *v1alpha1.NodeConfig, kn kubelet.Node, mp maxpods.Result, kopts kubelet.Options, copts containerd.Options, mode string, o initOptions) ([]file, error) {
	cfg, err := kubelet.GenerateConfig(nc, kn, mp, kopts)
	if err != nil {
		return nil, err
	}
	kc, err := kubelet.GenerateKubeconfig(nc, kopts)
	if err != nil {
		return nil, err
	}
	flags := kubelet.GenerateFlags(nc, kn, kopts)
	ctrd, err := containerd.GenerateConfig(nc.Spec.Containerd.Config, copts)
	if err != nil {
		return nil, err
	}
	files := []file{
		{kubelet.ConfigPath, append(cfg, '\n'), 0o644},
		{kubelet.KubeconfigPath, kc, 0o600},
		{kubelet.CAPath, nc.Spec.Cluster.CertificateAuthority, 0o644},
		{kubelet.FlagsPath, flags, 0o644},
		{containerd.ConfigPath, ctrd, 0o644},
	}
	if mode == "systemd" {
		env, err := run.GenerateKubeletEnv(flags)
		if err != nil {
			return nil, err
		}
		uo := run.UnitOptions{KubeletBin: o.kubeletBin, ContainerdBin: o.containerdBin, ContainerdConfig: containerd.ConfigPath}
		files = append(files,
			file{run.KubeletEnvPath, env, 0o644},
			file{run.KubeletUnitPath, run.GenerateKubeletUnit(uo), 0o644},
			file{run.ContainerdDropInPath, run.GenerateContainerdDropIn(uo), 0o644})
	}
	return files, nil
}

// cgroupV1 reports whether /sys/fs/cgroup is not the unified (v2) hierarchy.
func cgroupV1() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return false
	}
	return st.Type != unix.CGROUP2_SUPER_MAGIC
}

func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", filepath.Dir(path), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

// ErrorTag is the EC2 tag a failed join leaves on the instance, so a
// broken node is visible from the console and the API, not a silent
// half-node.
const ErrorTag = "berth.io/bootstrap-error"

// reportFailure tags the instance with the error (best effort: the error
// itself is what init returns and prints). instanceID may be empty when
// discovery failed; it is then asked of IMDS once more.
func reportFailure(ctx context.Context, cfg aws.Config, instanceID string, failure error) error {
	if ctx.Err() != nil {
		return failure // interrupted, not failed
	}
	msg := failure.Error()
	if len(msg) > 256 {
		msg = msg[:253] + "..."
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md := imds.NewFromConfig(cfg)
	if instanceID == "" {
		id, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
		if err != nil {
			return failure
		}
		b, _ := io.ReadAll(id.Content)
		id.Content.Close()
		instanceID = strings.TrimSpace(string(b))
	}
	if cfg.Region == "" {
		if r, err := md.GetRegion(ctx, &imds.GetRegionInput{}); err == nil {
			cfg.Region = r.Region
		}
	}
	_, err := ec2.NewFromConfig(cfg).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{instanceID},
		Tags: []ec2types.Tag{{Key: aws.String(ErrorTag), Value: aws.String(msg)}}})
	if err != nil {
		return fmt.Errorf("%w (and tagging the instance with %s failed: %v)", failure, ErrorTag, err)
	}
	return failure
}
