package driver

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berth-io/berth/csi-ebs/params"
)

// GiB is the allocation unit of EBS.
const GiB = int64(1) << 30

// validateCapability checks one volume capability. EBS volumes attach to
// one node; only io1/io2 block volumes can be attached to several
// (multi-attach), which CreateVolume checks against the type.
func validateCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("volume capability is missing")
	}
	if c.GetAccessMode() == nil {
		return fmt.Errorf("access mode is missing")
	}
	block := c.GetBlock() != nil
	switch {
	case block && c.GetMount() != nil:
		return fmt.Errorf("access type cannot be both block and mount")
	case !block && c.GetMount() == nil:
		return fmt.Errorf("access type (block or mount) is missing")
	}
	if m := c.GetMount(); m != nil {
		switch m.GetFsType() {
		case "", "ext4", "ext3", "xfs":
		default:
			return fmt.Errorf("fsType %q is not supported (ext4, ext3, xfs)", m.GetFsType())
		}
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		return nil
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		if block {
			return nil
		}
		return fmt.Errorf("multi-node access needs a block volume")
	}
	return fmt.Errorf("access mode %s is not supported", c.GetAccessMode().GetMode())
}

func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("volume capabilities are missing")
	}
	for _, c := range caps {
		if err := validateCapability(c); err != nil {
			return err
		}
	}
	return nil
}

func multiNode(caps []*csi.VolumeCapability) bool {
	for _, c := range caps {
		if c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER {
			return true
		}
	}
	return false
}

// sizeGiB turns a capacity range into whole GiB: required rounded up (the
// type's minimum when unset), failing when that exceeds the limit.
func sizeGiB(r *csi.CapacityRange, volumeType string) (int32, error) {
	lim := params.Limits[volumeType]
	want := int64(lim.MinGiB)
	if req := r.GetRequiredBytes(); req > 0 {
		want = max((req+GiB-1)/GiB, int64(lim.MinGiB))
	} else if r.GetLimitBytes() > 0 {
		// Without a required size, take the largest whole GiB under the limit.
		want = max(r.GetLimitBytes()/GiB, int64(lim.MinGiB))
	}
	if l := r.GetLimitBytes(); l > 0 && want*GiB > l {
		return 0, fmt.Errorf("%d GiB (the %s minimum or required size rounded up) exceeds the limit of %d bytes", want, volumeType, l)
	}
	if want > int64(lim.MaxGiB) {
		return 0, fmt.Errorf("%d GiB exceeds the %s maximum of %d GiB", want, volumeType, lim.MaxGiB)
	}
	return int32(want), nil
}

func zoneOf(t *csi.Topology) string {
	if z := t.GetSegments()[ZoneKey]; z != "" {
		return z
	}
	return t.GetSegments()[LegacyZoneKey]
}

// pickZone takes the first preferred zone, then the first requisite one.
func pickZone(req *csi.TopologyRequirement, fallback string) string {
	for _, t := range req.GetPreferred() {
		if z := zoneOf(t); z != "" {
			return z
		}
	}
	for _, t := range req.GetRequisite() {
		if z := zoneOf(t); z != "" {
			return z
		}
	}
	return fallback
}

// zoneAllowed reports whether zone satisfies the requisite topologies.
func zoneAllowed(req *csi.TopologyRequirement, zone string) bool {
	if len(req.GetRequisite()) == 0 {
		return true
	}
	for _, t := range req.GetRequisite() {
		if zoneOf(t) == zone {
			return true
		}
	}
	return false
}
