package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-efs/cloud"
	"github.com/berth-io/berth/csi-efs/params"
	"github.com/berth-io/berth/csi-efs/volume"
)

// Tags the controller puts on the access points it creates.
const (
	// ClusterTag is the AWS driver's tag (enableTagging).
	ClusterTag = "efs.csi.aws.com/cluster"
	// CapacityTag records the requested size, so that a repeated
	// CreateVolume with another size is refused (EFS itself is elastic).
	CapacityTag = "berth.io/csi-capacity-bytes"
)

var controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
}

// ControllerGetCapabilities lists the controller RPCs served.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	out := &csi.ControllerGetCapabilitiesResponse{}
	for _, c := range controllerCaps {
		out.Capabilities = append(out.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return out, nil
}

// capacity is the size reported for a volume: the required bytes, else the
// limit (EFS has no size of its own).
func capacity(r *csi.CapacityRange) int64 {
	if r.GetRequiredBytes() > 0 {
		return r.GetRequiredBytes()
	}
	return r.GetLimitBytes()
}

// CreateVolume makes an access point (efs-ap provisioning): a root
// directory for the volume with a GID of its own, created with
// directoryPerms.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, invalidArg("name is missing")
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, invalidArg("%v", err)
	}
	if req.GetVolumeContentSource() != nil {
		return nil, invalidArg("volume_content_source: EFS volumes cannot be created from snapshots or volumes")
	}
	if r := req.GetCapacityRange(); r.GetLimitBytes() > 0 && r.GetRequiredBytes() > r.GetLimitBytes() {
		return nil, invalidArg("capacity_range: required_bytes %d exceeds limit_bytes %d", r.GetRequiredBytes(), r.GetLimitBytes())
	}
	p, err := params.Parse(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	dir, err := p.Directory(name)
	if err != nil {
		return nil, toStatus(err)
	}
	release, err := d.inflight.Acquire("create/" + name)
	if err != nil {
		return nil, err
	}
	defer release()
	// One allocation at a time per file system: list, pick, create.
	unlock := d.fsLocks.lock(p.FileSystemID)
	defer unlock()

	// Listing the access points also answers whether the file system
	// exists (FileSystemNotFound): no separate DescribeFileSystems.
	c := d.opts.Cloud
	aps, err := c.AccessPoints(ctx, p.FileSystemID)
	if err != nil {
		return nil, toStatus(err)
	}
	size := capacity(req.GetCapacityRange())
	token := p.ClientToken(name)
	for _, ap := range aps {
		if ap.ClientToken != token {
			continue
		}
		if got, ok := ap.Tags[CapacityTag]; ok && !p.ReuseAccessPoint && got != strconv.FormatInt(size, 10) {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists (access point %s) with capacity %s bytes, not %d", name, ap.ID, got, size)
		}
		d.log.Info("access point exists", "name", name, "accessPoint", ap.ID, "reuse", p.ReuseAccessPoint)
		return createResponse(ap, size), nil
	}
	gid := p.GID
	if gid < 0 {
		if gid, err = allocateGID(aps, p.GIDRangeStart, p.GIDRangeEnd); err != nil {
			return nil, toStatus(err)
		}
	}
	uid := p.UID
	if uid < 0 {
		uid = gid
	}
	tags := map[string]string{}
	if p.EnableTagging {
		tags[ClusterTag] = "true"
		tags[CapacityTag] = strconv.FormatInt(size, 10)
	}
	ap, err := c.CreateAccessPoint(ctx, cloud.AccessPointOptions{FileSystemID: p.FileSystemID, ClientToken: token,
		UID: uid, GID: gid, RootPath: dir, Perms: p.DirectoryPerms, Tags: tags})
	if err != nil {
		return nil, toStatus(err)
	}
	if ap.FileSystemID != p.FileSystemID {
		// Client tokens are per account and region, not per file system:
		// a reuse token already used on another file system.
		return nil, status.Errorf(codes.AlreadyExists, "client token of volume %s is used by access point %s of %s, not of %s", name, ap.ID, ap.FileSystemID, p.FileSystemID)
	}
	d.log.Info("created access point", "name", name, "accessPoint", ap.ID, "dir", ap.RootPath, "uid", uid, "gid", gid)
	return createResponse(ap, size), nil
}

func createResponse(ap cloud.AccessPoint, size int64) *csi.CreateVolumeResponse {
	id := volume.ID{FileSystemID: ap.FileSystemID, AccessPointID: ap.ID}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id.String(), CapacityBytes: size}}
}

// DeleteVolume deletes the volume's access point and, with DeleteRootDir,
// its directory. Volumes without an access point (static ones) and
// unparseable or vanished ones are success.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	handle := req.GetVolumeId()
	if handle == "" {
		return nil, invalidArg("volume_id is missing")
	}
	id, err := volume.Parse(handle)
	if err != nil {
		// Nothing this driver made can have such an ID (CSI: deleting an
		// unknown volume succeeds).
		d.log.Info("delete of an unparseable volume ID: nothing to do", "volume", handle, "err", err)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if id.AccessPointID == "" {
		return &csi.DeleteVolumeResponse{}, nil
	}
	release, err := d.inflight.Acquire(handle)
	if err != nil {
		return nil, err
	}
	defer release()
	c := d.opts.Cloud
	if d.opts.DeleteRootDir {
		if err := d.deleteRootDir(ctx, id); err != nil {
			if errors.Is(err, cloud.ErrNotFound) {
				return &csi.DeleteVolumeResponse{}, nil
			}
			return nil, toStatus(err)
		}
	}
	if err := c.DeleteAccessPoint(ctx, id.AccessPointID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
		return nil, toStatus(err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// deleteRootDir removes the access point's directory, unless it is the
// file system root or another access point shares it (reuseAccessPoint,
// or ensureUniqueDirectory off).
func (d *Driver) deleteRootDir(ctx context.Context, id volume.ID) error {
	c := d.opts.Cloud
	ap, err := c.AccessPoint(ctx, id.AccessPointID)
	if err != nil {
		return err
	}
	rel := filepath.Clean("/" + ap.RootPath)
	if rel == "/" {
		return nil
	}
	aps, err := c.AccessPoints(ctx, ap.FileSystemID)
	if err != nil {
		return err
	}
	for _, o := range aps {
		if o.ID != ap.ID && filepath.Clean("/"+o.RootPath) == rel {
			d.log.Info("access point directory is shared: kept", "dir", rel, "accessPoint", ap.ID, "sharedWith", o.ID)
			return nil
		}
	}
	return d.opts.Mounter.WithRoot(ctx, ap.FileSystemID, func(root string) error {
		return os.RemoveAll(filepath.Join(root, rel))
	})
}

// ValidateVolumeCapabilities confirms capabilities EFS volumes support.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	handle := req.GetVolumeId()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case len(req.GetVolumeCapabilities()) == 0:
		return nil, invalidArg("volume_capabilities are missing")
	}
	id, err := volume.Parse(handle)
	if err != nil {
		// CSI: a volume that does not exist is NotFound, whatever its ID.
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", handle, err)
	}
	if id.AccessPointID != "" {
		ap, err := d.opts.Cloud.AccessPoint(ctx, id.AccessPointID)
		if err != nil {
			return nil, toStatus(err)
		}
		if ap.FileSystemID != id.FileSystemID {
			return nil, status.Errorf(codes.NotFound, "access point %s belongs to %s, not %s", ap.ID, ap.FileSystemID, id.FileSystemID)
		}
	} else if err := d.opts.Cloud.FileSystem(ctx, id.FileSystemID); err != nil {
		return nil, toStatus(err)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters()}}, nil
}
