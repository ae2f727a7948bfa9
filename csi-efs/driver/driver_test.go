package driver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/csi-efs/cloud"
	"github.com/berth-io/berth/csi-efs/mounter"
	"github.com/berth-io/berth/csi-efs/params"
	"github.com/berth-io/berth/csi-efs/volume"
)

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", params.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", volume.ErrMalformed), codes.InvalidArgument},
		{fmt.Errorf("x: %w", cloud.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", cloud.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", mounter.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", cloud.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", cloud.ErrLimit), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", errGIDsExhausted), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", cloud.ErrThrottled), codes.Unavailable},
		{fmt.Errorf("x: %w", cloud.ErrBusy), codes.Unavailable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.Aborted, "busy"), codes.Aborted},
		{errors.New("anything else"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestAllocateGID(t *testing.T) {
	ap := func(gid, owner int64) cloud.AccessPoint { return cloud.AccessPoint{GID: gid, OwnerGID: owner} }
	for _, tc := range []struct {
		aps        []cloud.AccessPoint
		start, end int64
		want       int64
		exhausted  bool
	}{
		{nil, 100, 200, 100, false},
		{[]cloud.AccessPoint{ap(100, 100), ap(101, 101)}, 100, 200, 102, false},
		{[]cloud.AccessPoint{ap(100, 100), ap(102, 102)}, 100, 200, 101, false},
		{[]cloud.AccessPoint{ap(-1, 100)}, 100, 200, 101, false}, // the directory's group counts too
		{[]cloud.AccessPoint{ap(5, 5)}, 100, 200, 100, false},    // outside the range
		{[]cloud.AccessPoint{ap(100, 100)}, 100, 100, 0, true},
	} {
		got, err := allocateGID(tc.aps, tc.start, tc.end)
		if tc.exhausted != errors.Is(err, errGIDsExhausted) || (!tc.exhausted && got != tc.want) {
			t.Errorf("allocateGID(%v, %d, %d) = %d, %v; want %d (exhausted %t)", tc.aps, tc.start, tc.end, got, err, tc.want, tc.exhausted)
		}
	}
}

func TestValidateCapability(t *testing.T) {
	mount := &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	mode := func(m csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability_AccessMode {
		return &csi.VolumeCapability_AccessMode{Mode: m}
	}
	for _, tc := range []struct {
		c  *csi.VolumeCapability
		ok bool
	}{
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, true},
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}, true},
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}, true},
		{&csi.VolumeCapability{AccessType: mount, AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)}, false},
		{&csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}, AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}, false},
		{&csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}}, AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, false},
		{&csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}, false},
		{&csi.VolumeCapability{AccessType: mount}, false},
		{nil, false},
	} {
		if err := validateCapability(tc.c); (err == nil) != tc.ok {
			t.Errorf("validateCapability(%v) = %v, want ok %t", tc.c, err, tc.ok)
		}
	}
}

func TestKeyedMutex(t *testing.T) {
	k := newKeyedMutex()
	unlockA := k.lock("fs-a")
	done := make(chan struct{})
	go func() {
		k.lock("fs-b")() // another key is not blocked
		unlock := k.lock("fs-a")
		unlock()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("second lock of fs-a did not wait")
	default:
	}
	unlockA()
	<-done
}
