package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-efs/cloud"
	"github.com/berth-io/berth/csi-efs/mounter"
	"github.com/berth-io/berth/csi-efs/volume"
)

// Volume context keys a static PV may set (volumeAttributes).
const (
	// ContextEncryptInTransit "false" mounts without TLS (no access point).
	ContextEncryptInTransit = "encryptInTransit"
)

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
}

// NodeGetCapabilities lists the node RPCs served. Staging is what makes
// one mount per volume per node: pods get bind mounts of it.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	out := &csi.NodeGetCapabilitiesResponse{}
	for _, c := range nodeCaps {
		out.Capabilities = append(out.Capabilities, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return out, nil
}

// NodeGetInfo returns the instance ID and zone. EFS has no per-node volume
// limit.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	out := &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}
	if d.opts.Zone != "" {
		out.AccessibleTopology = &csi.Topology{Segments: map[string]string{ZoneKey: d.opts.Zone}}
	}
	return out, nil
}

func parseHandle(handle string) (volume.ID, error) {
	id, err := volume.Parse(handle)
	if err != nil {
		return id, status.Errorf(codes.InvalidArgument, "volume_id: %v", err)
	}
	return id, nil
}

// NodeStageVolume mounts the volume once for the node at the staging path.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	handle, staging, c := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case staging == "":
		return nil, invalidArg("staging_target_path is missing")
	}
	if err := validateCapability(c); err != nil {
		return nil, invalidArg("%v", err)
	}
	id, err := parseHandle(handle)
	if err != nil {
		return nil, err
	}
	encrypt := true
	if v, ok := req.GetVolumeContext()[ContextEncryptInTransit]; ok {
		if encrypt, err = strconv.ParseBool(v); err != nil {
			return nil, invalidArg("volume_context %s: %q is not true or false", ContextEncryptInTransit, v)
		}
	}
	release, err := d.inflight.Acquire(handle)
	if err != nil {
		return nil, err
	}
	defer release()
	mounted, err := d.kernel.IsMountPoint(staging)
	if err != nil && mounter.Corrupted(err) {
		// A dead mount (its proxy gone with a restart): replace it rather
		// than leave every pod of the node failing on it.
		d.log.Warn("staged mount is corrupted: remounting", "volume", handle, "staging", staging, "err", err)
		if err := d.kernel.Release(staging, false); err != nil {
			return nil, toStatus(err)
		}
		mounted, err = false, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if mounted {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, toStatus(fmt.Errorf("create staging path: %w", err))
	}
	r := mounter.Request{ID: id, Options: c.GetMount().GetMountFlags(), ReadOnly: readOnlyMode(c), Encrypt: encrypt}
	if err := d.opts.Mounter.Mount(ctx, r, staging); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the staging path; not mounted is success.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	handle, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case staging == "":
		return nil, invalidArg("staging_target_path is missing")
	}
	release, err := d.inflight.Acquire(handle)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.kernel.Release(staging, false); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged volume at the target path,
// read-only when asked (only this pod's mount: the staged one stays as it
// is for the others).
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	handle, target, staging, c := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case target == "":
		return nil, invalidArg("target_path is missing")
	case staging == "":
		return nil, invalidArg("staging_target_path is missing")
	}
	if err := validateCapability(c); err != nil {
		return nil, invalidArg("%v", err)
	}
	if _, err := parseHandle(handle); err != nil {
		return nil, err
	}
	release, err := d.inflight.Acquire(handle + ":" + target)
	if err != nil {
		return nil, err
	}
	defer release()
	mounted, err := d.kernel.IsMountPoint(target)
	if err != nil {
		return nil, toStatus(err)
	}
	if mounted {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	staged, err := d.kernel.IsMountPoint(staging)
	if err != nil {
		return nil, toStatus(err)
	}
	if !staged {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", handle, staging)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, toStatus(fmt.Errorf("create target path: %w", err))
	}
	ro := req.GetReadonly() || readOnlyMode(c)
	if err := mounter.BindMount(staging, target, ro); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts and removes the target path.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	handle, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case target == "":
		return nil, invalidArg("target_path is missing")
	}
	release, err := d.inflight.Acquire(handle + ":" + target)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.kernel.Release(target, true); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports the usage of the file system behind a path:
// one statfs, never a walk of the tree.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	handle, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case handle == "":
		return nil, invalidArg("volume_id is missing")
	case path == "":
		return nil, invalidArg("volume_path is missing")
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
		}
		return nil, toStatus(err)
	}
	mounted, err := d.kernel.IsMountPoint(path)
	if err != nil {
		return nil, toStatus(err)
	}
	if !mounted {
		return nil, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", handle, path)
	}
	st, err := mounter.StatFS(path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Available: st.AvailableBytes, Used: st.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Available: st.FreeInodes, Used: st.UsedInodes},
	}}, nil
}

// NodeGetVolumeHealth reports a volume inaccessible when its published path
// is no longer a working mount (a stale handle, a dead proxy) or, without
// a path, when the node cannot reach what the volume names.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	handle, path := req.GetVolumeId(), req.GetVolumePublishPath()
	if handle == "" {
		return nil, invalidArg("volume_id is missing")
	}
	id, err := parseHandle(handle)
	if err != nil {
		return nil, err
	}
	h := &csi.VolumeHealth{VolumeId: handle}
	sick := func(reason string, err error) (*csi.NodeGetVolumeHealthResponse, error) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: err.Error()})
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
	}
	if path == "" {
		if err := d.opts.Mounter.Check(ctx, id); err != nil {
			if errors.Is(err, mounter.ErrNotFound) || errors.Is(err, cloud.ErrNotFound) {
				return sick("NotFound", err)
			}
			return nil, toStatus(err)
		}
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
	}
	mounted, err := d.kernel.IsMountPoint(path)
	switch {
	case err != nil && mounter.Corrupted(err):
		return sick("CorruptedMount", err)
	case err != nil:
		return nil, toStatus(err)
	case !mounted:
		return sick("NotMounted", fmt.Errorf("%s is not a mount of volume %s", path, handle))
	}
	if _, err := mounter.StatFS(path); err != nil {
		return sick("IOError", err)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}

// NodeGetStorageHealth reports whether the node can mount EFS volumes at
// all: efs-utils installed, or localcloud's directory present.
func (d *Driver) NodeGetStorageHealth(ctx context.Context, req *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	out := &csi.NodeGetStorageHealthResponse{}
	if err := d.opts.Mounter.Ready(); err != nil {
		out.BackendHealth = append(out.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: csi.StorageHealthErrorType_STORAGE_UNREACHABLE, Reason: "MountUnavailable", Message: err.Error()})
	}
	return out, nil
}
