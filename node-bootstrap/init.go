package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/spf13/cobra"

	"github.com/berth-io/berth/node-bootstrap/kubelet"
)

// containerdConfigPath is where containerd's configuration goes.
const containerdConfigPath = "/etc/containerd/config.toml"

// baseContainerdConfig is berth's containerd configuration; the user's
// spec.containerd.config TOML is appended (later tables win in containerd).
const baseContainerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
discard_unpacked_layers = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "/opt/cni/bin"
conf_dir = "/etc/cni/net.d"
`

func newInitCommand(f *configFlags) *cobra.Command {
	var root string
	var skip []string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Resolve the configuration and write kubelet's and containerd's files (then start them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			skipRun := false
			for _, s := range skip {
				switch s {
				case "run":
					skipRun = true
				default:
					return fmt.Errorf("--skip %q: the only skippable phase is run", s)
				}
			}
			if !skipRun {
				return fmt.Errorf("starting containerd and kubelet is not implemented yet: run with --skip run to write the files")
			}
			start := time.Now()
			r, mp, err := resolve(cmd.Context(), *f)
			if err != nil {
				return reportFailure(cmd.Context(), err)
			}
			node, region, err := discover(cmd.Context(), *f)
			if err != nil {
				return err
			}
			nc := r.Config
			cfg, err := kubelet.GenerateConfig(nc, node, mp)
			if err != nil {
				return reportFailure(cmd.Context(), err)
			}
			kc, err := kubelet.GenerateKubeconfig(nc, region)
			if err != nil {
				return err
			}
			files := []struct {
				path string
				data []byte
				mode os.FileMode
			}{
				{kubelet.ConfigPath, append(cfg, '\n'), 0o644},
				{kubelet.KubeconfigPath, kc, 0o600},
				{kubelet.CAPath, nc.Spec.Cluster.CertificateAuthority, 0o644},
				{kubelet.FlagsPath, kubelet.GenerateFlags(nc, node), 0o644},
				{containerdConfigPath, []byte(baseContainerdConfig + nc.Spec.Containerd.Config), 0o644},
			}
			// Everything is generated before anything is written: a bad
			// configuration leaves the disk untouched.
			for _, file := range files {
				if err := writeAtomic(filepath.Join(root, file.path), file.data, file.mode); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d files under %q for %s (maxPods %d) in %s\n", len(files), root, node.NodeName, mp.MaxPods, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "/", "prefix for every path written (image builds and tests)")
	cmd.Flags().StringSliceVar(&skip, "skip", nil, `phases to skip: "run" writes the files and starts nothing`)
	return cmd
}

// discover reads the instance's identity from IMDS.
func discover(ctx context.Context, f configFlags) (kubelet.Node, string, error) {
	c, err := imdsClient(ctx)
	if err != nil {
		return kubelet.Node{}, "", err
	}
	get := func(path string) (string, error) {
		out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", fmt.Errorf("imds %s: %w", path, err)
		}
		defer out.Content.Close()
		b, err := io.ReadAll(out.Content)
		return strings.TrimSpace(string(b)), err
	}
	var n kubelet.Node
	if n.InstanceID, err = get("instance-id"); err != nil {
		return n, "", err
	}
	if n.AvailabilityZone, err = get("placement/availability-zone"); err != nil {
		return n, "", err
	}
	if n.PrivateIP, err = get("local-ipv4"); err != nil {
		return n, "", err
	}
	if n.NodeName, err = get("local-hostname"); err != nil {
		return n, "", err
	}
	region, err := get("placement/region")
	if err != nil {
		return n, "", err
	}
	return n, region, nil
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
// itself is what init returns and prints).
func reportFailure(ctx context.Context, failure error) error {
	msg := failure.Error()
	if len(msg) > 256 {
		msg = msg[:253] + "..."
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return failure
	}
	md := imds.NewFromConfig(cfg)
	id, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
	if err != nil {
		return failure
	}
	b, _ := io.ReadAll(id.Content)
	id.Content.Close()
	if cfg.Region == "" {
		if r, err := md.GetRegion(ctx, &imds.GetRegionInput{}); err == nil {
			cfg.Region = r.Region
		}
	}
	_, err = ec2.NewFromConfig(cfg).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{strings.TrimSpace(string(b))},
		Tags: []ec2types.Tag{{Key: aws.String(ErrorTag), Value: aws.String(msg)}}})
	if err != nil {
		return fmt.Errorf("%w (and tagging the instance with %s failed: %v)", failure, ErrorTag, err)
	}
	return failure
}
