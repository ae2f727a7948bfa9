package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/spf13/cobra"

	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/internal/maxpods"
	"github.com/berth-io/berth/node-bootstrap/discovery"
	"github.com/berth-io/berth/node-bootstrap/nodeconfig"
)

type configFlags struct {
	sources      []string
	dropIn       string
	instanceType string
	mode         string
	imdsAttempts int
}

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-bootstrap", "Join an EC2 host to an EKS-compatible cluster from its NodeConfig")
	var f configFlags
	cfg := &cobra.Command{Use: "config", Short: "Validate or explain the node configuration"}
	pf := cfg.PersistentFlags()
	pf.StringArrayVar(&f.sources, "config-source", nil, "where to read NodeConfig: imds://user-data (default) or file:///path; repeatable, merged in order")
	pf.StringVar(&f.dropIn, "drop-in-dir", "/etc/berth/nodeconfig.d", "directory of *.yaml NodeConfig drop-ins merged after the sources")
	pf.StringVar(&f.instanceType, "instance-type", "", "instance type (default: from IMDS)")
	pf.StringVar(&f.mode, "networking-mode", "secondary-ip", "pod networking: secondary-ip, prefix-delegation, custom-networking or custom-networking-prefix-delegation")
	pf.IntVar(&f.imdsAttempts, "imds-attempts", 10, "attempts per IMDS call (backoff from 50ms, doubling to 1s)")
	cfg.AddCommand(&cobra.Command{
		Use: "check", Short: "Validate the configuration without writing anything", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, _, err := resolve(cmd.Context(), f, newDiscoverer(cmd.Context(), logger(), f.imdsAttempts))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), "configuration is valid")
			return err
		},
	})
	cfg.AddCommand(&cobra.Command{
		Use: "explain", Short: "Print each effective setting and the source that set it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, mp, err := resolve(cmd.Context(), f, newDiscoverer(cmd.Context(), logger(), f.imdsAttempts))
			if err != nil {
				return err
			}
			return explain(cmd.OutOrStdout(), r, mp)
		},
	})
	root.AddCommand(cfg)
	ini := newInitCommand(&f, logger)
	ini.Flags().StringArrayVar(&f.sources, "config-source", nil, "where to read NodeConfig: imds://user-data (default) or file:///path; repeatable")
	ini.Flags().StringVar(&f.dropIn, "drop-in-dir", "/etc/berth/nodeconfig.d", "directory of *.yaml NodeConfig drop-ins")
	ini.Flags().StringVar(&f.instanceType, "instance-type", "", "instance type (default: from IMDS)")
	ini.Flags().StringVar(&f.mode, "networking-mode", "secondary-ip", "pod networking mode")
	ini.Flags().IntVar(&f.imdsAttempts, "imds-attempts", 10, "attempts per IMDS call (backoff from 50ms, doubling to 1s)")
	root.AddCommand(ini)
	return root
}

// newDiscoverer returns a lazy IMDS discoverer for config check and
// explain (they call IMDS only for imds:// sources and the instance type).
func newDiscoverer(ctx context.Context, log *slog.Logger, attempts int) func() (*discovery.Discoverer, error) {
	var d *discovery.Discoverer
	return func() (*discovery.Discoverer, error) {
		if d != nil {
			return d, nil
		}
		c, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("load AWS config: %w", err)
		}
		d = discovery.New(imds.NewFromConfig(c, discovery.NoSDKRetries), nil, log, discovery.Options{NameSource: discovery.InstanceID, IMDSAttempts: attempts})
		return d, nil
	}
}

func resolve(ctx context.Context, f configFlags, disc func() (*discovery.Discoverer, error)) (*nodeconfig.Resolved, maxpods.Result, error) {
	userData := func(ctx context.Context) ([]byte, error) {
		d, err := disc()
		if err != nil {
			return nil, err
		}
		b, err := d.UserData(ctx)
		if err != nil {
			return nil, fmt.Errorf("user data from IMDS: %w", err)
		}
		return b, nil
	}
	r, err := nodeconfig.Resolve(ctx, f.sources, f.dropIn, userData)
	if err != nil {
		return nil, maxpods.Result{}, err
	}
	if err := nodeconfig.Validate(r.Config); err != nil {
		return nil, maxpods.Result{}, fmt.Errorf("invalid NodeConfig:\n%w", err)
	}
	typ := f.instanceType
	if typ == "" {
		d, err := disc()
		if err != nil {
			return nil, maxpods.Result{}, err
		}
		if typ, err = d.Metadata(ctx, "instance-type"); err != nil {
			return nil, maxpods.Result{}, fmt.Errorf("instance type from IMDS: %w (or pass --instance-type)", err)
		}
	}
	info, ok := instancetypes.Lookup(typ)
	if !ok {
		return nil, maxpods.Result{}, fmt.Errorf("instance type %q is not in berth's instance-type table; set kubelet.config.maxPods explicitly", typ)
	}
	in := maxpods.Input{Type: info, Explicit: nodeconfig.ExplicitMaxPods(r.Config)}
	switch f.mode {
	case "secondary-ip":
	case "prefix-delegation":
		in.Mode = maxpods.PrefixDelegation
	case "custom-networking":
		in.CustomNetworking = true
	case "custom-networking-prefix-delegation":
		in.Mode, in.CustomNetworking = maxpods.PrefixDelegation, true
	default:
		return nil, maxpods.Result{}, fmt.Errorf("--networking-mode %q: want secondary-ip, prefix-delegation, custom-networking or custom-networking-prefix-delegation", f.mode)
	}
	mp, err := maxpods.Resolve(in)
	if err != nil {
		return nil, maxpods.Result{}, err
	}
	return r, mp, nil
}

func explain(w io.Writer, r *nodeconfig.Resolved, mp maxpods.Result) error {
	c := r.Config.Spec
	rows := [][2]string{
		{"spec.cluster.name", c.Cluster.Name},
		{"spec.cluster.apiServerEndpoint", c.Cluster.APIServerEndpoint},
		{"spec.cluster.certificateAuthority", fmt.Sprintf("%d bytes of PEM", len(c.Cluster.CertificateAuthority))},
		{"spec.cluster.cidr", c.Cluster.CIDR},
		{"spec.containerd.config", fmt.Sprintf("%d bytes of TOML", len(c.Containerd.Config))},
		{"spec.instance.localStorage.strategy", c.Instance.LocalStorage.Strategy},
		{"spec.kubelet.flags", strings.Join(c.Kubelet.Flags, " ")},
	}
	keys := make([]string, 0, len(c.Kubelet.Config))
	for k := range c.Kubelet.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rows = append(rows, [2]string{"spec.kubelet.config." + k, string(c.Kubelet.Config[k])})
	}
	for _, row := range rows {
		src := r.Sources[row[0]]
		if src == "" {
			src = "default"
		}
		if _, err := fmt.Fprintf(w, "%-40s %-40s from %s\n", row[0], row[1], src); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "%-40s %-40d from %s\n%-40s %-40s from maxPods %d (11 × maxPods + 255)\n%-40s %-40s from the vCPU ladder\n",
		"effective maxPods", mp.MaxPods, mp.Source,
		"kubeReserved.memory", fmt.Sprintf("%dMi", mp.KubeReservedMemoryMiB), mp.MaxPods,
		"kubeReserved.cpu", fmt.Sprintf("%dm", mp.KubeReservedCPUMilli))
	return err
}
