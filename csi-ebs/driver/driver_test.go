package driver

import (
	"context"
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-ebs/cloud"
	"github.com/berth-io/berth/csi-ebs/mounter"
	"github.com/berth-io/berth/csi-ebs/params"
)

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", params.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", cloud.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("x: %w", cloud.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", mounter.ErrDeviceNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", cloud.ErrIdempotentMismatch), codes.AlreadyExists},
		{fmt.Errorf("x: %w", cloud.ErrAttachLimit), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", cloud.ErrInUse), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", mounter.ErrDeviceMismatch), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", cloud.ErrThrottled), codes.Unavailable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.Aborted, "busy"), codes.Aborted},
		{fmt.Errorf("anything else"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestSizeGiB(t *testing.T) {
	const gib = int64(1) << 30
	for _, tc := range []struct {
		r       *csi.CapacityRange
		typ     string
		want    int32
		wantErr bool
	}{
		{nil, "gp3", 1, false},
		{&csi.CapacityRange{RequiredBytes: 1}, "gp3", 1, false},
		{&csi.CapacityRange{RequiredBytes: gib + 1}, "gp3", 2, false},
		{&csi.CapacityRange{RequiredBytes: gib}, "io2", 4, false},
		{&csi.CapacityRange{RequiredBytes: gib, LimitBytes: gib}, "io2", 0, true},
		{&csi.CapacityRange{LimitBytes: 5 * gib}, "gp3", 5, false},
		{&csi.CapacityRange{RequiredBytes: 2000 * gib}, "standard", 0, true},
		{nil, "st1", 125, false},
	} {
		got, err := sizeGiB(tc.r, tc.typ)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("sizeGiB(%v, %s) = %d, %v; want %d (err %t)", tc.r, tc.typ, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPickZone(t *testing.T) {
	topo := func(k, z string) *csi.Topology { return &csi.Topology{Segments: map[string]string{k: z}} }
	req := &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(ZoneKey, "b"), topo(ZoneKey, "c")}, Preferred: []*csi.Topology{topo(ZoneKey, "c")}}
	if z := pickZone(req, "a"); z != "c" {
		t.Errorf("preferred: %s", z)
	}
	if z := pickZone(&csi.TopologyRequirement{Requisite: []*csi.Topology{topo(LegacyZoneKey, "d")}}, "a"); z != "d" {
		t.Errorf("legacy requisite: %s", z)
	}
	if z := pickZone(nil, "a"); z != "a" {
		t.Errorf("fallback: %s", z)
	}
	if zoneAllowed(req, "a") || !zoneAllowed(req, "b") || !zoneAllowed(nil, "x") {
		t.Error("zoneAllowed")
	}
}

func TestValidateCapability(t *testing.T) {
	mode := func(m csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability_AccessMode {
		return &csi.VolumeCapability_AccessMode{Mode: m}
	}
	mount := &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	block := &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	for _, tc := range []struct {
		c  *csi.VolumeCapability
		ok bool
	}{
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, true},
		{&csi.VolumeCapability{AccessType: block, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}, true},
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}, false},
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}, false},
		{&csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "btrfs"}}, AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, false},
		{&csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, false},
		{&csi.VolumeCapability{AccessType: mount}, false},
		{nil, false},
	} {
		if err := validateCapability(tc.c); (err == nil) != tc.ok {
			t.Errorf("validateCapability(%v) = %v, want ok=%t", tc.c, err, tc.ok)
		}
	}
}

func TestPage(t *testing.T) {
	ids := []string{"vol-1", "vol-2", "vol-3", "vol-4", "vol-5"}
	id := func(s string) string { return s }
	got, next, err := page(ids, id, "vol-", "", 2)
	if err != nil || len(got) != 2 || next != "vol-2" {
		t.Fatalf("first page %v %q %v", got, next, err)
	}
	got, next, err = page(ids, id, "vol-", next, 2)
	if err != nil || got[0] != "vol-3" || next != "vol-4" {
		t.Fatalf("second page %v %q %v", got, next, err)
	}
	got, next, err = page(ids, id, "vol-", next, 0)
	if err != nil || len(got) != 1 || next != "" {
		t.Fatalf("last page %v %q %v", got, next, err)
	}
	if _, _, err := page(ids, id, "vol-", "bogus", 1); status.Code(err) != codes.Aborted {
		t.Fatalf("bad token: %v", err)
	}
}
