package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-io/berth/csi-ebs/cloud"
	"github.com/berth-io/berth/csi-ebs/driver"
	"github.com/berth-io/berth/csi-ebs/mounter"
	"github.com/berth-io/berth/internal/buildinfo"
	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/internal/csiserver"
	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/internal/metrics"
)

type flags struct {
	endpoint, mode, name, metricsAddr, defaultZone, region string
	attachLimit                                            int64
	batchDelay                                             time.Duration
}

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-csi-ebs", "EBS CSI driver: controller and node")
	var f flags
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		return run(cmd.Context(), f, logger())
	}
	fs := root.Flags()
	fs.StringVar(&f.endpoint, "endpoint", "unix:///var/lib/csi/sockets/pluginproxy/csi.sock", "CSI endpoint: unix:///path (mode 0660) or tcp://host:port")
	fs.StringVar(&f.mode, "mode", "all", `services to serve: "controller", "node" or "all"`)
	fs.StringVar(&f.name, "driver-name", "ebs.csi.aws.com", "CSI driver name")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", `Prometheus metrics address ("" to disable)`)
	fs.StringVar(&f.defaultZone, "default-zone", "", "zone for volumes without topology requirements (default: the controller's own zone from IMDS)")
	fs.StringVar(&f.region, "region", "", "AWS region (default: AWS_REGION, else IMDS)")
	fs.Int64Var(&f.attachLimit, "volume-attach-limit", 0, "override the node's EBS attachment limit (0: from the instance type)")
	fs.DurationVar(&f.batchDelay, "describe-batch-delay", 20*time.Millisecond, "how long Describe calls wait to batch concurrent lookups")
	return root
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	// mount-utils logs through klog: send it to our logger.
	klog.SetSlogLogger(log.With("lib", "mount-utils"))
	mode, err := csiserver.ParseMode(f.mode)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry("csi-ebs")
	if f.metricsAddr != "" {
		if _, err := metrics.Serve(ctx, log, f.metricsAddr, reg); err != nil {
			return err
		}
	}
	opts := driver.Options{Name: f.name, Version: buildinfo.Get().Version, Mode: mode, DefaultZone: f.defaultZone}

	var md *imdsClient
	needIMDS := mode != driver.ModeController || f.defaultZone == ""
	if needIMDS {
		md, err = newIMDS(ctx)
		if err != nil && mode != driver.ModeController {
			return err
		}
	}
	if mode != driver.ModeNode {
		c, err := cloud.Load(ctx, cloud.Options{BatchDelay: f.batchDelay, Metrics: cloud.NewMetrics(reg)}, f.region, log)
		if err != nil {
			return err
		}
		opts.Cloud = c
		if opts.DefaultZone == "" && md != nil {
			opts.DefaultZone = md.doc.AvailabilityZone
		}
	}
	if mode != driver.ModeController {
		info, err := md.nodeInfo(ctx, f.attachLimit)
		if err != nil {
			return err
		}
		log.Info("node", "instance", info.InstanceID, "zone", info.AZ, "maxVolumes", info.MaxVolumes)
		opts.Node, opts.Mounter = info, mounter.New()
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

type imdsClient struct {
	c   *imds.Client
	doc imds.InstanceIdentityDocument
}

// newIMDS reads the instance identity document, retrying while IMDS lags.
func newIMDS(ctx context.Context) (*imdsClient, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	c := imds.NewFromConfig(cfg)
	var last error
	for attempt := 0; attempt < 10; attempt++ {
		out, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
		if err == nil {
			return &imdsClient{c: c, doc: out.InstanceIdentityDocument}, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("imds instance identity: %w", last)
}

func (m *imdsClient) get(ctx context.Context, path string) (string, error) {
	out, err := m.c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("imds %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("imds %s: %w", path, err)
	}
	return string(b), nil
}

// nodeInfo derives the node's identity and attach limit: the instance
// type's EBS attachments, minus the root volume and, on Nitro types whose
// limit is shared, the attached ENIs.
func (m *imdsClient) nodeInfo(ctx context.Context, override int64) (driver.NodeInfo, error) {
	if m == nil {
		return driver.NodeInfo{}, errors.New("node mode needs IMDS")
	}
	info := driver.NodeInfo{InstanceID: m.doc.InstanceID, AZ: m.doc.AvailabilityZone, MaxVolumes: override}
	if override > 0 {
		return info, nil
	}
	t, ok := instancetypes.Lookup(m.doc.InstanceType)
	if !ok {
		info.MaxVolumes = 26 // the AWS driver's 27 shared slots minus the root volume
		return info, nil
	}
	limit := int64(t.MaxEBSAttachments) - 1
	if t.EBSSharedWithENIs {
		macs, err := m.get(ctx, "network/interfaces/macs/")
		if err != nil {
			return info, err
		}
		limit -= int64(len(strings.Fields(macs)))
	}
	info.MaxVolumes = max(limit, 1)
	return info, nil
}
