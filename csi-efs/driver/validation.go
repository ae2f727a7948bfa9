package driver

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berth-io/berth/csi-efs/cloud"
)

// validateCapability checks one volume capability: EFS volumes are file
// systems (mount access only) that many nodes may share.
func validateCapability(c *csi.VolumeCapability) error {
	switch {
	case c == nil:
		return fmt.Errorf("volume_capability is missing")
	case c.GetAccessMode() == nil:
		return fmt.Errorf("volume_capability.access_mode is missing")
	case c.GetBlock() != nil:
		return fmt.Errorf("volume_capability.block: EFS volumes are file systems; raw block access is not supported")
	case c.GetMount() == nil:
		return fmt.Errorf("volume_capability.mount is missing")
	}
	switch fs := c.GetMount().GetFsType(); fs {
	case "", "efs", "nfs", "nfs4":
	default:
		return fmt.Errorf("volume_capability.mount.fs_type %q is not supported (efs)", fs)
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return nil
	default:
		return fmt.Errorf("volume_capability.access_mode %s is not supported (SINGLE_NODE_WRITER, MULTI_NODE_MULTI_WRITER, MULTI_NODE_READER_ONLY)", m)
	}
}

func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("volume_capabilities are missing")
	}
	for _, c := range caps {
		if err := validateCapability(c); err != nil {
			return err
		}
	}
	return nil
}

func readOnlyMode(c *csi.VolumeCapability) bool {
	return c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}

// allocateGID returns the lowest GID in [start, end] that no access point
// of the file system uses. The state is the access points themselves, so
// a restarted controller (or a second replica after failover) allocates
// from the same picture.
func allocateGID(aps []cloud.AccessPoint, start, end int64) (int64, error) {
	used := make(map[int64]bool, len(aps))
	for _, ap := range aps {
		if ap.GID >= 0 {
			used[ap.GID] = true
		}
		if ap.OwnerGID >= 0 {
			used[ap.OwnerGID] = true
		}
	}
	for g := start; g <= end; g++ {
		if !used[g] {
			return g, nil
		}
	}
	return 0, fmt.Errorf("gidRangeStart/gidRangeEnd: all GIDs in [%d, %d] are held by access points of the file system: %w", start, end, errGIDsExhausted)
}
