// Package driver implements the CSI identity, controller and node services
// of the EFS driver. Every RPC reads the same: validate → in-flight guard →
// cloud or kernel call → error mapping (one switch, toStatus) → response.
//
//	d, err := driver.New(driver.Options{Name: "efs.csi.aws.com", Mode: csiserver.ModeAll, Cloud: c, Mounter: m, NodeID: id}, log)
//	err = d.Serve(ctx, ln)
package driver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-efs/cloud"
	"github.com/berth-io/berth/csi-efs/mounter"
	"github.com/berth-io/berth/csi-efs/params"
	"github.com/berth-io/berth/csi-efs/volume"
	"github.com/berth-io/berth/internal/csiserver"
)

// ZoneKey is the topology key NodeGetInfo reports.
const ZoneKey = "topology.kubernetes.io/zone"

// Options configure a driver.
type Options struct {
	Name    string
	Version string
	Mode    csiserver.Mode
	// Cloud is required in controller mode.
	Cloud cloud.Cloud
	// Mounter is required in node mode, and in controller mode with
	// DeleteRootDir (to reach the file system root).
	Mounter mounter.Mounter
	// DeleteRootDir makes DeleteVolume remove the access point's directory.
	DeleteRootDir bool
	// NodeID (the instance ID) is required in node mode; Zone is optional.
	NodeID, Zone string
}

// Driver serves the CSI services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts     Options
	log      *slog.Logger
	inflight *csiserver.Inflight
	kernel   *mounter.Kernel
	fsLocks  *keyedMutex
}

var (
	_ csi.IdentityServer   = (*Driver)(nil)
	_ csi.ControllerServer = (*Driver)(nil)
	_ csi.NodeServer       = (*Driver)(nil)
)

// New validates opts and returns a driver.
func New(opts Options, log *slog.Logger) (*Driver, error) {
	switch {
	case opts.Name == "":
		return nil, errors.New("driver name is empty")
	case opts.Mode.Controller() && opts.Cloud == nil:
		return nil, errors.New("controller mode needs a cloud")
	case opts.Mode.Controller() && opts.DeleteRootDir && opts.Mounter == nil:
		return nil, errors.New("deleting access point directories needs a mounter")
	case opts.Mode.Node() && (opts.Mounter == nil || opts.NodeID == ""):
		return nil, errors.New("node mode needs a mounter and the node ID")
	}
	return &Driver{opts: opts, log: log.With("component", "driver"), inflight: csiserver.NewInflight(),
		kernel: mounter.NewKernel(), fsLocks: newKeyedMutex()}, nil
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

// errGIDsExhausted is returned when every GID of the range is taken.
var errGIDsExhausted = errors.New("GID range exhausted")

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
	case errors.Is(err, params.ErrInvalid), errors.Is(err, volume.ErrMalformed), errors.Is(err, cloud.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, cloud.ErrNotFound), errors.Is(err, mounter.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, cloud.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, cloud.ErrLimit), errors.Is(err, errGIDsExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, cloud.ErrThrottled), errors.Is(err, cloud.ErrBusy):
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

// GetPluginCapabilities advertises the controller service: the plugin has
// one even where this process serves only the node (the spec describes the
// plugin, and csi-sanity asks the node endpoint). EFS file systems are
// regional: no accessibility constraints.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

// Probe reports readiness: the driver is ready once it serves.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// keyedMutex serializes work per key (a file system): GID allocation reads
// the access points and creates one, and two requests must not both see a
// GID as free.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func newKeyedMutex() *keyedMutex { return &keyedMutex{locks: map[string]*sync.Mutex{}} }

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	l, ok := k.locks[key]
	if !ok {
		l = &sync.Mutex{}
		k.locks[key] = l
	}
	k.mu.Unlock()
	l.Lock()
	return l.Unlock
}
