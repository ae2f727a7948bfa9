package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-io/berth/csi-efs/cloud"
	"github.com/berth-io/berth/csi-efs/driver"
	"github.com/berth-io/berth/csi-efs/mounter"
	"github.com/berth-io/berth/internal/buildinfo"
	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/internal/csiserver"
	"github.com/berth-io/berth/internal/metrics"
)

type flags struct {
	endpoint, mode, name, metricsAddr, region string
	mountCommand, localRoot, nodeID           string
	deleteRootDir                             bool
}

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-csi-efs", "EFS CSI driver: controller and node")
	var f flags
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		return run(cmd.Context(), f, logger())
	}
	fs := root.Flags()
	fs.StringVar(&f.endpoint, "endpoint", "unix:///var/lib/csi/sockets/pluginproxy/csi.sock", "CSI endpoint: unix:///path (mode 0660) or tcp://host:port")
	fs.StringVar(&f.mode, "mode", "all", `services to serve: "controller", "node" or "all"`)
	fs.StringVar(&f.name, "driver-name", "efs.csi.aws.com", "CSI driver name")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", `Prometheus metrics address ("" to disable)`)
	fs.StringVar(&f.region, "region", "", "AWS region (default: AWS_REGION, else IMDS)")
	fs.StringVar(&f.mountCommand, "mount-command", "mount", "mount(8) that runs efs-utils' mount.efs (`mount -t efs -o tls,accesspoint=…`)")
	fs.StringVar(&f.localRoot, "local-efs-root", "", "local mode (localcloud): bind-mount <dir>/<fs-id>/<path> instead of mounting EFS; <dir> is localcloud's <state-dir>/efs")
	fs.StringVar(&f.nodeID, "node-id", "", "node ID (default: the instance ID from IMDS)")
	fs.BoolVar(&f.deleteRootDir, "delete-access-point-root-dir", false, "DeleteVolume also removes the access point's directory")
	return root
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	// mount-utils logs through klog: send it to our logger.
	klog.SetSlogLogger(log.With("lib", "mount-utils"))
	mode, err := csiserver.ParseMode(f.mode)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry("csi-efs")
	if f.metricsAddr != "" {
		if _, err := metrics.Serve(ctx, log, f.metricsAddr, reg); err != nil {
			return err
		}
	}
	opts := driver.Options{Name: f.name, Version: buildinfo.Get().Version, Mode: mode, DeleteRootDir: f.deleteRootDir, NodeID: f.nodeID}
	// The node needs the EFS API only in local mode (to find an access
	// point's directory); efs-utils resolves access points itself.
	if mode.Controller() || f.localRoot != "" {
		if opts.Cloud, err = cloud.Load(ctx, f.region, cloud.NewMetrics(reg), log); err != nil {
			return err
		}
	}
	if f.localRoot != "" {
		c := opts.Cloud
		opts.Mounter = &mounter.Local{Root: f.localRoot, AccessPointRoot: func(ctx context.Context, fsID, apID string) (string, error) {
			ap, err := c.AccessPoint(ctx, apID)
			if err != nil {
				return "", err
			}
			if ap.FileSystemID != fsID {
				return "", fmt.Errorf("access point %s belongs to %s, not %s: %w", apID, ap.FileSystemID, fsID, cloud.ErrNotFound)
			}
			return ap.RootPath, nil
		}}
		log.Info("local mode: bind mounts from localcloud's EFS directory", "root", f.localRoot)
	} else {
		opts.Mounter = &mounter.EFSUtils{Command: f.mountCommand}
	}
	if mode.Node() && opts.NodeID == "" {
		doc, err := identity(ctx)
		if err != nil {
			return err
		}
		opts.NodeID, opts.Zone = doc.InstanceID, doc.AvailabilityZone
		log.Info("node", "instance", doc.InstanceID, "zone", doc.AvailabilityZone)
	}
	d, err := driver.New(opts, log)
	if err != nil {
		return err
	}
	ln, err := csiserver.Listen(ctx, f.endpoint)
	if err != nil {
		return err
	}
	return d.Serve(ctx, ln)
}

// identity reads the instance identity document, retrying while IMDS lags.
func identity(ctx context.Context) (imds.InstanceIdentityDocument, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return imds.InstanceIdentityDocument{}, fmt.Errorf("load aws config: %w", err)
	}
	c := imds.NewFromConfig(cfg)
	var last error
	for attempt := 0; attempt < 10; attempt++ {
		out, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
		if err == nil {
			return out.InstanceIdentityDocument, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return imds.InstanceIdentityDocument{}, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	return imds.InstanceIdentityDocument{}, fmt.Errorf("imds instance identity: %w", last)
}
