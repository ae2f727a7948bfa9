package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/berth-io/berth/csi-ebs/cloud"
	"github.com/berth-io/berth/csi-ebs/params"
)

// DevicePathKey is the publish-context key of the attached device name.
const DevicePathKey = "devicePath"

var controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
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

func topologyOf(zone string) []*csi.Topology {
	return []*csi.Topology{{Segments: map[string]string{ZoneKey: zone}}}
}

func csiVolume(disk *cloud.Disk, volCtx map[string]string, src *csi.VolumeContentSource) *csi.Volume {
	return &csi.Volume{VolumeId: disk.ID, CapacityBytes: int64(disk.SizeGiB) * GiB, VolumeContext: volCtx,
		ContentSource: src, AccessibleTopology: topologyOf(disk.AZ)}
}

// CreateVolume creates an EBS volume, idempotent by the CSI name.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, invalidArg("volume name is missing")
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, invalidArg("%v", err)
	}
	p, err := params.ParseCreate(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	mod, err := params.ParseModify(req.GetMutableParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	if mod.Type != "" {
		p.Type = mod.Type
	}
	if mod.IOPS != 0 {
		p.IOPS = mod.IOPS
	}
	if mod.Throughput != 0 {
		p.Throughput = mod.Throughput
	}
	for k, v := range mod.Tags {
		p.Tags[k] = v
	}
	size, err := sizeGiB(req.GetCapacityRange(), p.Type)
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	multi := multiNode(req.GetVolumeCapabilities())
	if multi && !params.Limits[p.Type].MultiAttach {
		return nil, invalidArg("multi-node access needs an io1 or io2 volume, not %s", p.Type)
	}
	topo := req.GetAccessibilityRequirements()
	zone := pickZone(topo, d.opts.DefaultZone)

	release, err := d.inflight.Acquire("create/" + name)
	if err != nil {
		return nil, err
	}
	defer release()

	opts := cloud.DiskOptions{Type: p.Type, Throughput: p.Throughput, Encrypted: p.Encrypted, KMSKeyID: p.KMSKeyID,
		MultiAttach: multi, Tags: p.Tags}
	src := req.GetVolumeContentSource()
	switch {
	case src.GetSnapshot() != nil:
		snap, err := d.opts.Cloud.GetSnapshot(ctx, src.GetSnapshot().GetSnapshotId())
		if err != nil {
			return nil, toStatus(err)
		}
		opts.SnapshotID = snap.ID
		if snap.SizeGiB > size {
			if l := req.GetCapacityRange().GetLimitBytes(); l > 0 && int64(snap.SizeGiB)*GiB > l {
				return nil, status.Errorf(codes.OutOfRange, "snapshot %s is %d GiB, over the limit", snap.ID, snap.SizeGiB)
			}
			size = snap.SizeGiB
		}
	case src.GetVolume() != nil:
		source, err := d.opts.Cloud.GetDisk(ctx, src.GetVolume().GetVolumeId())
		if err != nil {
			return nil, toStatus(err)
		}
		if !zoneAllowed(topo, source.AZ) {
			return nil, invalidArg("source volume %s is in %s, outside the requisite topology", source.ID, source.AZ)
		}
		zone = source.AZ
		if source.SizeGiB > size {
			return nil, status.Errorf(codes.OutOfRange, "clone of %d GiB volume %s cannot be %d GiB", source.SizeGiB, source.ID, size)
		}
	}
	if zone == "" {
		return nil, invalidArg("no zone: give topology requirements or start the controller with --default-zone")
	}
	opts.AZ, opts.SizeGiB = zone, size
	if opts.IOPS, err = p.IOPSFor(size); err != nil {
		return nil, toStatus(err)
	}
	if src.GetVolume() != nil {
		snapID, err := d.cloneSnapshot(ctx, name, src.GetVolume().GetVolumeId())
		if err != nil {
			return nil, toStatus(err)
		}
		opts.SnapshotID = snapID
	}

	disk, err := d.createDisk(ctx, name, opts)
	if err != nil {
		return nil, toStatus(err)
	}
	if src.GetVolume() != nil {
		// The snapshot served its purpose; a failure leaves it tagged for
		// the next CreateVolume retry or an operator.
		if err := d.opts.Cloud.DeleteSnapshot(ctx, opts.SnapshotID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
			d.log.Warn("delete clone snapshot", "snapshot", opts.SnapshotID, "err", err)
		}
	}
	return &csi.CreateVolumeResponse{Volume: csiVolume(disk, p.VolumeContext(), src)}, nil
}

// createDisk creates the disk with the name's ClientToken. A token burned
// by a deleted volume of the same name moves to the next generation; a live
// volume of the same name with other parameters is AlreadyExists.
func (d *Driver) createDisk(ctx context.Context, name string, opts cloud.DiskOptions) (*cloud.Disk, error) {
	for gen := 0; ; gen++ {
		opts.ClientTokenGeneration = gen
		disk, err := d.opts.Cloud.CreateDisk(ctx, name, opts)
		if !errors.Is(err, cloud.ErrIdempotentMismatch) {
			return disk, err
		}
		existing, ferr := d.opts.Cloud.FindDisk(ctx, name)
		switch {
		case ferr == nil:
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists as %s with other parameters (%d GiB %s)", name, existing.ID, existing.SizeGiB, existing.Type)
		case !errors.Is(ferr, cloud.ErrNotFound):
			return nil, ferr
		case gen >= 5:
			return nil, err
		}
	}
}

// cloneSnapshot returns a completed snapshot of source made for clone name.
func (d *Driver) cloneSnapshot(ctx context.Context, name, source string) (string, error) {
	snapName := "clone-" + name
	snap, err := d.opts.Cloud.FindSnapshot(ctx, snapName)
	if errors.Is(err, cloud.ErrNotFound) {
		snap, err = d.opts.Cloud.CreateSnapshot(ctx, snapName, source, map[string]string{cloud.TagCloneFor: name})
	}
	if err != nil {
		return "", fmt.Errorf("snapshot %s for clone %s: %w", source, name, err)
	}
	if _, err := d.opts.Cloud.WaitSnapshot(ctx, snap.ID); err != nil {
		return "", fmt.Errorf("snapshot for clone %s: %w", name, err)
	}
	return snap.ID, nil
}

// DeleteVolume deletes a volume; one already gone is success.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalidArg("volume ID is missing")
	}
	release, err := d.inflight.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.opts.Cloud.DeleteDisk(ctx, id); err != nil && !errors.Is(err, cloud.ErrNotFound) {
		return nil, toStatus(err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ControllerPublishVolume attaches a volume to a node's instance.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	vol, node := req.GetVolumeId(), req.GetNodeId()
	switch {
	case vol == "":
		return nil, invalidArg("volume ID is missing")
	case node == "":
		return nil, invalidArg("node ID is missing")
	}
	if err := validateCapability(req.GetVolumeCapability()); err != nil {
		return nil, invalidArg("%v", err)
	}
	release, err := d.inflight.Acquire(vol + "@" + node)
	if err != nil {
		return nil, err
	}
	defer release()
	dev, err := d.opts.Cloud.AttachDisk(ctx, vol, node)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{DevicePathKey: dev}}, nil
}

// ControllerUnpublishVolume detaches a volume; not attached is success.
func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	vol, node := req.GetVolumeId(), req.GetNodeId()
	if vol == "" {
		return nil, invalidArg("volume ID is missing")
	}
	if node == "" {
		return nil, invalidArg("node ID is missing (detaching from every node is not supported)")
	}
	release, err := d.inflight.Acquire(vol + "@" + node)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.opts.Cloud.DetachDisk(ctx, vol, node); err != nil && !errors.Is(err, cloud.ErrNotFound) {
		return nil, toStatus(err)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms capabilities a volume supports.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume ID is missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalidArg("volume capabilities are missing")
	}
	disk, err := d.opts.Cloud.GetDisk(ctx, req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if multiNode(req.GetVolumeCapabilities()) && !disk.MultiAttach {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "volume " + disk.ID + " is not multi-attach enabled"}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters()}}, nil
}

func publishedNodes(disk *cloud.Disk) []string {
	var out []string
	for _, a := range disk.Attachments {
		if a.State == "attached" || a.State == "attaching" {
			out = append(out, a.InstanceID)
		}
	}
	return out
}

// volumeHealth reports what EC2 knows: a volume in state error is
// inaccessible; otherwise no adverse condition is known.
func volumeHealth(disk *cloud.Disk) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: disk.ID}
	if disk.State == "error" {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: "VolumeError", Message: "EC2 reports volume " + disk.ID + " in state error"})
	}
	return h
}

// page returns items after token (an ID), at most max (0: all), and the
// next token. A token that is not an ID of the listed kind is Aborted, as
// the spec asks.
func page[T any](items []T, id func(T) string, prefix, token string, max int32) ([]T, string, error) {
	if max < 0 {
		return nil, "", invalidArg("max_entries must not be negative")
	}
	start := 0
	if token != "" {
		if !strings.HasPrefix(token, prefix) {
			return nil, "", status.Errorf(codes.Aborted, "invalid starting token %q", token)
		}
		for start < len(items) && id(items[start]) <= token {
			start++
		}
	}
	items = items[start:]
	if max == 0 || int(max) >= len(items) {
		return items, "", nil
	}
	items = items[:max]
	return items, id(items[len(items)-1]), nil
}

// ListVolumes lists the driver's volumes with their published nodes.
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalidArg("max_entries must not be negative")
	}
	disks, err := d.opts.Cloud.ListDisks(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	list, next, err := page(disks, func(d *cloud.Disk) string { return d.ID }, "vol-", req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	out := &csi.ListVolumesResponse{NextToken: next}
	for _, disk := range list {
		out.Entries = append(out.Entries, &csi.ListVolumesResponse_Entry{Volume: csiVolume(disk, nil, nil),
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: publishedNodes(disk)}})
	}
	return out, nil
}

// ControllerGetVolume returns one volume with its published nodes and
// condition.
func (d *Driver) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume ID is missing")
	}
	disk, err := d.opts.Cloud.GetDisk(ctx, req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeResponse{Volume: csiVolume(disk, nil, nil),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: publishedNodes(disk)}}, nil
}

// ControllerGetVolumeHealth reports one volume's health as EC2 sees it.
func (d *Driver) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume ID is missing")
	}
	disk, err := d.opts.Cloud.GetDisk(ctx, req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: volumeHealth(disk)}, nil
}

// ControllerListVolumeHealth lists the driver's volumes with an adverse
// health condition.
func (d *Driver) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	disks, err := d.opts.Cloud.ListDisks(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var sick []*csi.VolumeHealth
	for _, disk := range disks {
		if h := volumeHealth(disk); len(h.HealthStatuses) > 0 {
			sick = append(sick, h)
		}
	}
	list, next, err := page(sick, func(h *csi.VolumeHealth) string { return h.VolumeId }, "vol-", req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	return &csi.ControllerListVolumeHealthResponse{Entries: list, NextToken: next}, nil
}

// GetCapacity reports the size bounds of one volume of the class's type:
// EBS capacity is not pooled, so the largest volume is what is available.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for _, c := range req.GetVolumeCapabilities() {
		if err := validateCapability(c); err != nil {
			return nil, invalidArg("%v", err)
		}
	}
	p, err := params.ParseCreate(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	lim := params.Limits[p.Type]
	return &csi.GetCapacityResponse{AvailableCapacity: int64(lim.MaxGiB) * GiB,
		MaximumVolumeSize: wrapInt64(int64(lim.MaxGiB) * GiB), MinimumVolumeSize: wrapInt64(int64(lim.MinGiB) * GiB)}, nil
}

// ControllerExpandVolume grows a volume.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalidArg("volume ID is missing")
	}
	if req.GetCapacityRange() == nil || (req.GetCapacityRange().GetRequiredBytes() <= 0 && req.GetCapacityRange().GetLimitBytes() <= 0) {
		return nil, invalidArg("capacity range is missing")
	}
	release, err := d.inflight.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	disk, err := d.opts.Cloud.GetDisk(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	size, err := sizeGiB(req.GetCapacityRange(), disk.Type)
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	nodeExpansion := req.GetVolumeCapability().GetBlock() == nil
	if disk.SizeGiB >= size {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: int64(disk.SizeGiB) * GiB, NodeExpansionRequired: nodeExpansion}, nil
	}
	disk, err = d.opts.Cloud.ModifyDisk(ctx, id, cloud.ModifyOptions{SizeGiB: size})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: int64(disk.SizeGiB) * GiB, NodeExpansionRequired: nodeExpansion}, nil
}

// ControllerModifyVolume applies mutable parameters: type, iops,
// throughput and tags.
func (d *Driver) ControllerModifyVolume(ctx context.Context, req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalidArg("volume ID is missing")
	}
	mod, err := params.ParseModify(req.GetMutableParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	release, err := d.inflight.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := d.opts.Cloud.GetDisk(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	if mod.Type != "" || mod.IOPS != 0 || mod.Throughput != 0 {
		if _, err := d.opts.Cloud.ModifyDisk(ctx, id, cloud.ModifyOptions{Type: mod.Type, IOPS: mod.IOPS, Throughput: mod.Throughput}); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := d.opts.Cloud.TagDisk(ctx, id, mod.Tags); err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerModifyVolumeResponse{}, nil
}

func csiSnapshot(s *cloud.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{SnapshotId: s.ID, SourceVolumeId: s.VolumeID, SizeBytes: int64(s.SizeGiB) * GiB,
		CreationTime: timestamppb.New(s.StartTime), ReadyToUse: s.Ready()}
}

// snapshotTags parses VolumeSnapshotClass parameters: tagSpecification_N.
func snapshotTags(in map[string]string) (map[string]string, error) {
	m, err := params.ParseModify(in)
	if err != nil {
		return nil, err
	}
	if m.Type != "" || m.IOPS != 0 || m.Throughput != 0 {
		return nil, fmt.Errorf("%w: snapshot classes take tagSpecification_N only", params.ErrInvalid)
	}
	return m.Tags, nil
}

// CreateSnapshot snapshots a volume, idempotent by the CSI name.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, source := req.GetName(), req.GetSourceVolumeId()
	switch {
	case name == "":
		return nil, invalidArg("snapshot name is missing")
	case source == "":
		return nil, invalidArg("source volume ID is missing")
	}
	tags, err := snapshotTags(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	release, err := d.inflight.Acquire("snapshot/" + name)
	if err != nil {
		return nil, err
	}
	defer release()
	existing, err := d.opts.Cloud.FindSnapshot(ctx, name)
	switch {
	case err == nil && existing.VolumeID != source:
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists as %s of volume %s", name, existing.ID, existing.VolumeID)
	case err == nil:
		return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(existing)}, nil
	case !errors.Is(err, cloud.ErrNotFound):
		return nil, toStatus(err)
	}
	if _, err := d.opts.Cloud.GetDisk(ctx, source); err != nil {
		return nil, toStatus(err)
	}
	snap, err := d.opts.Cloud.CreateSnapshot(ctx, name, source, tags)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

// DeleteSnapshot deletes a snapshot; one already gone is success.
func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalidArg("snapshot ID is missing")
	}
	release, err := d.inflight.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.opts.Cloud.DeleteSnapshot(ctx, id); err != nil && !errors.Is(err, cloud.ErrNotFound) {
		return nil, toStatus(err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots lists snapshots, by ID, by source volume or all.
func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalidArg("max_entries must not be negative")
	}
	var snaps []*cloud.Snapshot
	if id := req.GetSnapshotId(); id != "" {
		s, err := d.opts.Cloud.GetSnapshot(ctx, id)
		if errors.Is(err, cloud.ErrNotFound) {
			return &csi.ListSnapshotsResponse{}, nil
		}
		if err != nil {
			return nil, toStatus(err)
		}
		if src := req.GetSourceVolumeId(); src == "" || src == s.VolumeID {
			snaps = append(snaps, s)
		}
	} else {
		var err error
		if snaps, err = d.opts.Cloud.ListSnapshots(ctx, req.GetSourceVolumeId()); err != nil {
			return nil, toStatus(err)
		}
	}
	list, next, err := page(snaps, func(s *cloud.Snapshot) string { return s.ID }, "snap-", req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	out := &csi.ListSnapshotsResponse{NextToken: next}
	for _, s := range list {
		out.Entries = append(out.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(s)})
	}
	return out, nil
}

// GetSnapshot returns one snapshot.
func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, invalidArg("snapshot ID is missing")
	}
	s, err := d.opts.Cloud.GetSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(s)}, nil
}

func wrapInt64(v int64) *wrapperspb.Int64Value { return wrapperspb.Int64(v) }
