// Package driver implements the CSI identity, controller and node services
// of the EBS driver. Every RPC reads the same: validate → in-flight guard →
// cloud or kernel call → error mapping (one switch, toStatus) → response.
//
//	d, err := driver.New(driver.Options{Name: "ebs.csi.aws.com", Mode: driver.ModeAll, Cloud: c, Node: info}, log)
//	err = d.Serve(ctx, "unix:///run/csi/csi.sock")
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-ebs/cloud"
	"github.com/berth-io/berth/csi-ebs/mounter"
	"github.com/berth-io/berth/csi-ebs/params"
)

// Mode selects which services the binary serves.
type Mode string

// Modes.
const (
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	ModeAll        Mode = "all"
)

// ParseMode validates a --mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeController, ModeNode, ModeAll:
		return m, nil
	}
	return "", fmt.Errorf("invalid mode %q: want controller, node or all", s)
}

func (m Mode) controller() bool { return m == ModeController || m == ModeAll }
func (m Mode) node() bool       { return m == ModeNode || m == ModeAll }

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
	inflight *inflight
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
	if opts.Mode.controller() && opts.Cloud == nil {
		return nil, errors.New("controller mode needs a cloud")
	}
	if opts.Mode.node() && (opts.Mounter == nil || opts.Node.InstanceID == "") {
		return nil, errors.New("node mode needs a mounter and the instance ID")
	}
	if opts.DeviceWait == 0 {
		opts.DeviceWait = 10 * time.Second
	}
	return &Driver{opts: opts, log: log, inflight: newInflight()}, nil
}

// Listen opens the endpoint: unix:///path (mode 0660, a stale socket
// removed) or tcp://host:port.
func Listen(ctx context.Context, endpoint string) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("parse endpoint %q: %w", endpoint, err)
	}
	var lc net.ListenConfig
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Host
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("socket directory: %w", err)
		}
		// Bind under a temporary name, chmod, then rename: the socket
		// appears at its path with mode 0660 already.
		tmp := path + ".tmp"
		if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", tmp, err)
		}
		ln, err := lc.Listen(ctx, "unix", tmp)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", tmp, err)
		}
		if err := os.Chmod(tmp, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chmod %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			ln.Close()
			return nil, fmt.Errorf("move socket to %s: %w", path, err)
		}
		return ln, nil
	case "tcp":
		ln, err := lc.Listen(ctx, "tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", u.Host, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
}

// Serve serves the driver on ln until ctx ends.
func (d *Driver) Serve(ctx context.Context, ln net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logRPC))
	csi.RegisterIdentityServer(srv, d)
	if d.opts.Mode.controller() {
		csi.RegisterControllerServer(srv, d)
	}
	if d.opts.Mode.node() {
		csi.RegisterNodeServer(srv, d)
	}
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	d.log.Info("serving", "endpoint", ln.Addr().String(), "mode", d.opts.Mode, "name", d.opts.Name)
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serve csi: %w", err)
	}
	return nil
}

// logRPC is the one logging interceptor. It logs the method, duration and
// code, never request bodies (which may carry secrets).
func (d *Driver) logRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	code := status.Code(err)
	attrs := []any{"method", info.FullMethod, "duration", time.Since(start).Round(time.Microsecond), "code", code.String()}
	if v, ok := req.(interface{ GetVolumeId() string }); ok && v.GetVolumeId() != "" {
		attrs = append(attrs, "volume", v.GetVolumeId())
	}
	switch code {
	case codes.OK:
		d.log.Debug("rpc", attrs...)
	case codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		d.log.Error("rpc", append(attrs, "err", err)...)
	default:
		d.log.Info("rpc", append(attrs, "err", err)...)
	}
	return resp, err
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
	if d.opts.Mode.controller() {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe reports readiness: the driver is ready once it serves.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}
