package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-ebs/mounter"
	"github.com/berth-io/berth/csi-ebs/params"
)

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// NodeGetCapabilities lists the node RPCs served.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	out := &csi.NodeGetCapabilitiesResponse{}
	for _, c := range nodeCaps {
		out.Capabilities = append(out.Capabilities, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return out, nil
}

// NodeGetInfo returns the instance ID, the attach limit and the zone.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	n := d.opts.Node
	return &csi.NodeGetInfoResponse{NodeId: n.InstanceID, MaxVolumesPerNode: n.MaxVolumes,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{ZoneKey: n.AZ, LegacyZoneKey: n.AZ}}}, nil
}

// findDevice waits briefly for an attached volume's device to show up.
func (d *Driver) findDevice(ctx context.Context, volumeID string, publishContext map[string]string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.DeviceWait)
	defer cancel()
	for {
		dev, err := mounter.FindDevice(volumeID, publishContext[DevicePathKey])
		if err == nil || !errors.Is(err, mounter.ErrDeviceNotFound) {
			return dev, err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NodeStageVolume formats a blank device and mounts it at the staging
// path; block volumes only need their device to exist.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	vol, staging, c := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case staging == "":
		return nil, invalidArg("staging target path is missing")
	}
	if err := validateCapability(c); err != nil {
		return nil, invalidArg("%v", err)
	}
	release, err := d.inflight.Acquire(vol)
	if err != nil {
		return nil, err
	}
	defer release()
	dev, err := d.findDevice(ctx, vol, req.GetPublishContext())
	if err != nil {
		return nil, toStatus(err)
	}
	if c.GetBlock() != nil {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	m := d.opts.Mounter
	mounted, err := m.IsMountPoint(staging)
	if err != nil {
		return nil, toStatus(err)
	}
	if mounted {
		cur, err := m.MountedDevice(staging)
		if err != nil {
			return nil, toStatus(err)
		}
		if cur != dev {
			return nil, status.Errorf(codes.FailedPrecondition, "%s is already a mount of %s, not of %s (volume %s)", staging, cur, dev, vol)
		}
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, toStatus(fmt.Errorf("create staging path: %w", err))
	}
	fsType := c.GetMount().GetFsType()
	if fsType == "" {
		fsType = req.GetVolumeContext()[params.ContextFSType]
	}
	if fsType == "" {
		fsType = params.DefaultFSType
	}
	format, err := params.FormatFromContext(req.GetVolumeContext())
	if err != nil {
		return nil, toStatus(err)
	}
	opts := slices.Clone(c.GetMount().GetMountFlags())
	if fsType == "xfs" {
		// Clones and restored snapshots share an XFS UUID with their source.
		opts = append(opts, "nouuid")
	}
	existing, err := m.Format(dev)
	if err != nil {
		return nil, toStatus(err)
	}
	// Complete an expansion made while the volume was detached: ext grows
	// before the mount, xfs (online only) after it. A blank device gets a
	// filesystem of its full size.
	if _, err := m.GrowOffline(dev, existing); err != nil {
		return nil, toStatus(err)
	}
	if err := m.FormatAndMount(dev, staging, fsType, opts, format.MkfsArgs(fsType)); err != nil {
		return nil, toStatus(err)
	}
	if existing == "xfs" {
		if _, err := m.Resize(dev, staging); err != nil {
			return nil, toStatus(err)
		}
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the staging path; not mounted is success.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	vol, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case staging == "":
		return nil, invalidArg("staging target path is missing")
	}
	release, err := d.inflight.Acquire(vol)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.opts.Mounter.Release(staging, false); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged filesystem (or, for block
// volumes, the device onto a file) at the target path.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	vol, target, staging, c := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case target == "":
		return nil, invalidArg("target path is missing")
	case staging == "":
		return nil, invalidArg("staging target path is missing")
	}
	if err := validateCapability(c); err != nil {
		return nil, invalidArg("%v", err)
	}
	release, err := d.inflight.Acquire(vol + ":" + target)
	if err != nil {
		return nil, err
	}
	defer release()
	m := d.opts.Mounter
	mounted, err := m.IsMountPoint(target)
	if err != nil {
		return nil, toStatus(err)
	}
	if mounted {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	dev, err := d.findDevice(ctx, vol, req.GetPublishContext())
	if err != nil {
		return nil, toStatus(err)
	}
	if c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		mounts, err := mounter.MountsOf(dev)
		if err != nil {
			return nil, toStatus(err)
		}
		for _, p := range mounts {
			if p != staging && p != target {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", vol, p)
			}
		}
	}
	ro := req.GetReadonly() || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if c.GetBlock() != nil {
		if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
			return nil, toStatus(fmt.Errorf("create target parent: %w", err))
		}
		f, err := os.OpenFile(target, os.O_CREATE, 0o640)
		if err != nil {
			return nil, toStatus(fmt.Errorf("create target file: %w", err))
		}
		f.Close()
		if err := mounter.BindMount(dev, target, ro); err != nil {
			return nil, toStatus(err)
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	stagedOK, err := m.IsMountPoint(staging)
	if err != nil {
		return nil, toStatus(err)
	}
	if !stagedOK {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", vol, staging)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, toStatus(fmt.Errorf("create target path: %w", err))
	}
	if flags := c.GetMount().GetMountFlags(); len(flags) > 0 {
		// Arbitrary mount(8) options: let mount-utils and mount(8) parse them.
		opts := append([]string{"bind"}, flags...)
		if ro {
			opts = append(opts, "ro")
		}
		if err := m.Mount(staging, target, "", opts); err != nil {
			return nil, toStatus(fmt.Errorf("bind %s to %s: %w", staging, target, err))
		}
	} else if err := mounter.BindMount(staging, target, ro); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts and removes the target path.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	vol, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case target == "":
		return nil, invalidArg("target path is missing")
	}
	release, err := d.inflight.Acquire(vol + ":" + target)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.opts.Mounter.Release(target, true); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports usage and the volume's condition.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	vol, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case path == "":
		return nil, invalidArg("volume path is missing")
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
		}
		return nil, toStatus(err)
	}
	block, err := mounter.IsBlockDevice(path)
	if err != nil {
		return nil, toStatus(err)
	}
	if block {
		size, err := mounter.DeviceSize(path)
		if err != nil {
			return nil, toStatus(err)
		}
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}, nil
	}
	st, err := mounter.Stats(path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Available: st.AvailableBytes, Used: st.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Available: st.FreeInodes, Used: st.UsedInodes},
	}}, nil
}

// NodeGetVolumeHealth checks that the volume's device is present (and is
// the volume's, by serial) and, given a publish path, that the path is still
// a readable mount of it.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	vol, path := req.GetVolumeId(), req.GetVolumePublishPath()
	if vol == "" {
		return nil, invalidArg("volume ID is missing")
	}
	h := &csi.VolumeHealth{VolumeId: vol}
	sick := func(reason, msg string) (*csi.NodeGetVolumeHealthResponse, error) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: msg})
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
	}
	dev, err := mounter.FindDevice(vol, "")
	switch {
	case errors.Is(err, mounter.ErrDeviceNotFound) && path == "":
		return nil, toStatus(err)
	case errors.Is(err, mounter.ErrDeviceNotFound):
		return sick("DeviceMissing", err.Error())
	case err != nil:
		return sick("DeviceMismatch", err.Error())
	case path == "":
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
	}
	if block, err := mounter.IsBlockDevice(path); err == nil && block {
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
	}
	mounted, err := d.opts.Mounter.IsMountPoint(path)
	if err != nil || !mounted {
		return sick("NotMounted", fmt.Sprintf("%s is not a mount of %s (%v)", path, dev, err))
	}
	if _, err := mounter.Stats(path); err != nil {
		return sick("IOError", err.Error())
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}

// NodeGetStorageHealth reports whether the node can format and mount EBS
// volumes: the tools NodeStage runs must be installed.
func (d *Driver) NodeGetStorageHealth(ctx context.Context, req *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	out := &csi.NodeGetStorageHealthResponse{}
	var missing []string
	for _, tool := range []string{"blkid", "mkfs.ext4", "mkfs.xfs", "mount", "e2fsck", "resize2fs", "xfs_growfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		out.BackendHealth = append(out.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: csi.StorageHealthErrorType_STORAGE_DEGRADED, Reason: "MissingTools", Message: "not installed: " + strings.Join(missing, ", ")})
	}
	return out, nil
}

// NodeExpandVolume grows the filesystem to the device's new size.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	vol, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case path == "":
		return nil, invalidArg("volume path is missing")
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
		}
		return nil, toStatus(err)
	}
	release, err := d.inflight.Acquire(vol)
	if err != nil {
		return nil, err
	}
	defer release()
	dev, err := d.findDevice(ctx, vol, nil)
	if err != nil {
		return nil, toStatus(err)
	}
	block, err := mounter.IsBlockDevice(path)
	if err != nil {
		return nil, toStatus(err)
	}
	if !block && req.GetVolumeCapability().GetBlock() == nil {
		if _, err := d.opts.Mounter.Resize(dev, path); err != nil {
			return nil, toStatus(err)
		}
	}
	size, err := mounter.DeviceSize(dev)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
