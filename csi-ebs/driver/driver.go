// Package driver implements the CSI identity, controller and node services
// of the EBS driver. Every RPC reads the same: validate → in-flight guard →
// cloud or kernel call → error mapping (one switch, toStatus) → response.
//
//	d, err := driver.New(driver.Options{Name: "ebs.csi.aws.com", Mode: driver.ModeAll, Cloud: c, Node: info}, log)
//	ln, err := csiserver.Listen(ctx, "unix:///run/csi/csi.sock")
//	err = d.Serve(ctx, ln)
package driver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-ebs/cloud"
	"github.com/berth-io/berth/csi-ebs/mounter"
	"github.com/berth-io/berth/csi-ebs/params"
	"github.com/berth-io/berth/internal/csiserver"
)

// Mode selects which services the binary serves.
type Mode = csiserver.Mode

// Modes.
const (
	ModeController = csiserver.ModeController
	ModeNode       = csiserver.ModeNode
	ModeAll        = csiserver.ModeAll
)

// Topology keys: the well-known zone label, and the AWS driver's legacy key
// (accepted in requests so its StorageClasses keep working).
const (
	ZoneKey       = "topology.kubernetes.io/zone"
	LegacyZoneKey = "topology.ebs.csi.aws.com/zone"
)

// NodeInfo is what the node service learned about its instance.
type NodeInfo struct {
	InstanceID, AZ string
	MaxVolumes     int64
}

// Options configure a driver.
type Options struct {
	Name    string
	Version string
	Mode    Mode
	// Cloud is required in controller mode.
	Cloud cloud.Cloud
	// DefaultZone is used by CreateVolume without topology requirements.
	DefaultZone string
	// Node and Mounter are required in node mode.
	Node    NodeInfo
	Mounter *mounter.Mounter
	// DeviceWait bounds how long NodeStage waits for an attached device to
	// appear (default 10s).
	DeviceWait time.Duration
}

// Driver serves the CSI services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts     Options
	log      *slog.Logger
	inflight *csiserver.Inflight
}

var (
	_ csi.IdentityServer   = (*Driver)(nil)
	_ csi.ControllerServer = (*Driver)(nil)
	_ csi.NodeServer       = (*Driver)(nil)
)

// New validates opts and returns a driver.
func New(opts Options, log *slog.Logger) (*Driver, error) {
	if opts.Name == "" {
		return nil, errors.New("driver name is empty")
	}
	if opts.Mode.Controller() && opts.Cloud == nil {
		return nil, errors.New("controller mode needs a cloud")
	}
	if opts.Mode.Node() && (opts.Mounter == nil || opts.Node.InstanceID == "") {
		return nil, errors.New("node mode needs a mounter and the instance ID")
	}
	if opts.DeviceWait == 0 {
		opts.DeviceWait = 10 * time.Second
	}
	return &Driver{opts: opts, log: log, inflight: csiserver.NewInflight()}, nil
}

// Serve serves the driver on ln until ctx ends.
func (d *Driver) Serve(ctx context.Context, ln net.Listener) error {
	d.log.Info("starting", "mode", d.opts.Mode, "name", d.opts.Name)
	return csiserver.Serve(ctx, ln, d.log, func(srv *grpc.Server) {
		csi.RegisterIdentityServer(srv, d)
		if d.opts.Mode.Controller() {
			csi.RegisterControllerServer(srv, d)
		}
		if d.opts.Mode.Node() {
			csi.RegisterNodeServer(srv, d)
		}
	})
}

// toStatus maps errors to gRPC codes: the one place sentinels meet codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, params.ErrInvalid), errors.Is(err, cloud.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, cloud.ErrNotFound), errors.Is(err, mounter.ErrDeviceNotFound):
		code = codes.NotFound
	case errors.Is(err, cloud.ErrIdempotentMismatch):
		code = codes.AlreadyExists
	case errors.Is(err, cloud.ErrAttachLimit):
		code = codes.ResourceExhausted
	case errors.Is(err, cloud.ErrInUse), errors.Is(err, mounter.ErrDeviceMismatch):
		code = codes.FailedPrecondition
	case errors.Is(err, cloud.ErrBusy), errors.Is(err, cloud.ErrThrottled):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

func invalidArg(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// GetPluginInfo returns the driver name and version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.opts.Name, VendorVersion: d.opts.Version}, nil
}

// GetPluginCapabilities advertises the controller service, topology and
// online expansion.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	caps := []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}
	if d.opts.Mode.Controller() {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe reports readiness: the driver is ready once it serves.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}
