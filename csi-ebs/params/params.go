// Package params parses the StorageClass parameters (CreateVolume) and the
// VolumeAttributesClass parameters (ControllerModifyVolume) of the EBS CSI
// driver. Keys are case-insensitive; an unknown key, a malformed value or a
// forbidden combination is an error wrapping ErrInvalid, which the driver
// maps to InvalidArgument.
//
//	opts, err := params.ParseCreate(req.GetParameters())
//	if errors.Is(err, params.ErrInvalid) { ... }
package params

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid parameter")

// Parameter keys, lower-cased (matching is case-insensitive).
const (
	KeyType           = "type"
	KeyIOPS           = "iops"
	KeyIOPSPerGB      = "iopspergb"
	KeyAutoIOPS       = "allowautoiopspergbincrease"
	KeyThroughput     = "throughput"
	KeyEncrypted      = "encrypted"
	KeyKMSKeyID       = "kmskeyid"
	KeyFSType         = "csi.storage.k8s.io/fstype"
	KeyBlockSize      = "blocksize"
	KeyInodeSize      = "inodesize"
	KeyBytesPerInode  = "bytesperinode"
	KeyNumberOfInodes = "numberofinodes"
	keyTagSpecPrefix  = "tagspecification_"
	keyPVName         = "csi.storage.k8s.io/pv/name"
	keyPVCName        = "csi.storage.k8s.io/pvc/name"
	keyPVCNamespace   = "csi.storage.k8s.io/pvc/namespace"
	DefaultVolumeType = "gp3"
	DefaultFSType     = "ext4"
	tagPVName         = "kubernetes.io/created-for/pv/name"
	tagPVCName        = "kubernetes.io/created-for/pvc/name"
	tagPVCNamespace   = "kubernetes.io/created-for/pvc/namespace"
)

// Volume context keys the controller hands to the node for formatting.
const (
	ContextFSType         = "fstype"
	ContextBlockSize      = "blocksize"
	ContextInodeSize      = "inodesize"
	ContextBytesPerInode  = "bytesperinode"
	ContextNumberOfInodes = "numberofinodes"
)

// TypeLimits are EBS's documented bounds for one volume type.
type TypeLimits struct {
	MinGiB, MaxGiB   int32
	MinIOPS, MaxIOPS int32
	IOPSSettable     bool
	Throughput       bool
	MultiAttach      bool
}

// Limits per volume type.
var Limits = map[string]TypeLimits{
	"gp2":      {MinGiB: 1, MaxGiB: 16384},
	"gp3":      {MinGiB: 1, MaxGiB: 16384, MinIOPS: 3000, MaxIOPS: 16000, IOPSSettable: true, Throughput: true},
	"io1":      {MinGiB: 4, MaxGiB: 16384, MinIOPS: 100, MaxIOPS: 64000, IOPSSettable: true, MultiAttach: true},
	"io2":      {MinGiB: 4, MaxGiB: 65536, MinIOPS: 100, MaxIOPS: 256000, IOPSSettable: true, MultiAttach: true},
	"st1":      {MinGiB: 125, MaxGiB: 16384},
	"sc1":      {MinGiB: 125, MaxGiB: 16384},
	"standard": {MinGiB: 1, MaxGiB: 1024},
}

// Format holds mkfs options (0 = filesystem default).
type Format struct {
	BlockSize, InodeSize, BytesPerInode, NumberOfInodes int64
}

// Create is a parsed StorageClass.
type Create struct {
	Type                string
	IOPS                int32 // 0: type default
	IOPSPerGB           int32
	AllowAutoIOPS       bool
	Throughput          int32 // MiB/s, 0: type default
	Encrypted           bool
	KMSKeyID            string
	FSType              string
	Format              Format
	Tags                map[string]string
	iopsSet, iopsPerSet bool
}

// Modify is a parsed VolumeAttributesClass (mutable parameters).
type Modify struct {
	Type       string
	IOPS       int32
	Throughput int32
	Tags       map[string]string
}

// Empty reports whether nothing would change.
func (m Modify) Empty() bool {
	return m.Type == "" && m.IOPS == 0 && m.Throughput == 0 && len(m.Tags) == 0
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// sortedKeys gives deterministic error messages.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func positive(key, v string, bits int) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, bits)
	if err != nil || n <= 0 {
		return 0, invalid("%s: %q is not a positive integer", key, v)
	}
	return n, nil
}

func volumeType(v string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(v))
	if _, ok := Limits[t]; !ok {
		return "", invalid("type: %q is not one of gp3, gp2, io1, io2, st1, sc1, standard", v)
	}
	return t, nil
}

// tagSpec parses "key=value" of a tagSpecification_N parameter.
func tagSpec(key, v string) (string, string, error) {
	k, val, ok := strings.Cut(v, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return "", "", invalid("%s: %q is not key=value", key, v)
	}
	if strings.HasPrefix(strings.ToLower(k), "aws:") {
		return "", "", invalid("%s: tag keys starting with aws: are reserved", key)
	}
	return k, strings.TrimSpace(val), nil
}

func isTagSpec(lk string) bool {
	n, ok := strings.CutPrefix(lk, keyTagSpecPrefix)
	if !ok || n == "" {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}

// ParseCreate parses StorageClass parameters.
func ParseCreate(in map[string]string) (Create, error) {
	c := Create{Type: DefaultVolumeType, Tags: map[string]string{}}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	for _, key := range sortedKeys(in) {
		v := in[key]
		lk := strings.ToLower(key)
		switch {
		case lk == KeyType:
			t, err := volumeType(v)
			if err != nil {
				fail(err)
			}
			c.Type = t
		case lk == KeyIOPS:
			n, err := positive(key, v, 32)
			if err != nil {
				fail(err)
			}
			c.IOPS, c.iopsSet = int32(n), true
		case lk == KeyIOPSPerGB:
			n, err := positive(key, v, 32)
			if err != nil {
				fail(err)
			}
			c.IOPSPerGB, c.iopsPerSet = int32(n), true
		case lk == KeyAutoIOPS:
			b, err := strconv.ParseBool(v)
			if err != nil {
				fail(invalid("%s: %q is not a boolean", key, v))
			}
			c.AllowAutoIOPS = b
		case lk == KeyThroughput:
			n, err := positive(key, v, 32)
			if err != nil {
				fail(err)
			}
			c.Throughput = int32(n)
		case lk == KeyEncrypted:
			b, err := strconv.ParseBool(v)
			if err != nil {
				fail(invalid("%s: %q is not a boolean", key, v))
			}
			c.Encrypted = b
		case lk == KeyKMSKeyID:
			c.KMSKeyID = v
		case lk == KeyFSType:
			c.FSType = strings.ToLower(v)
		case lk == KeyBlockSize, lk == KeyInodeSize, lk == KeyBytesPerInode, lk == KeyNumberOfInodes:
			n, err := positive(key, v, 64)
			if err != nil {
				fail(err)
			}
			switch lk {
			case KeyBlockSize:
				c.Format.BlockSize = n
			case KeyInodeSize:
				c.Format.InodeSize = n
			case KeyBytesPerInode:
				c.Format.BytesPerInode = n
			default:
				c.Format.NumberOfInodes = n
			}
		case isTagSpec(lk):
			k, val, err := tagSpec(key, v)
			if err != nil {
				fail(err)
			}
			c.Tags[k] = val
		case lk == keyPVName:
			c.Tags[tagPVName] = v
		case lk == keyPVCName:
			c.Tags[tagPVCName] = v
		case lk == keyPVCNamespace:
			c.Tags[tagPVCNamespace] = v
		default:
			fail(invalid("unknown parameter %q", key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *Create) validate() error {
	var errs []error
	lim := Limits[c.Type]
	if c.iopsSet && c.iopsPerSet {
		errs = append(errs, invalid("iops and iopsPerGB are mutually exclusive"))
	}
	if (c.iopsSet || c.iopsPerSet) && !lim.IOPSSettable {
		errs = append(errs, invalid("iops cannot be set for %s volumes", c.Type))
	}
	if c.Throughput != 0 && !lim.Throughput {
		errs = append(errs, invalid("throughput can only be set for gp3 volumes, not %s", c.Type))
	}
	if c.KMSKeyID != "" && !c.Encrypted {
		errs = append(errs, invalid("kmsKeyId needs encrypted: \"true\""))
	}
	switch c.FSType {
	case "", "ext4", "ext3":
	case "xfs":
		if c.Format.BytesPerInode != 0 || c.Format.NumberOfInodes != 0 {
			errs = append(errs, invalid("bytesPerInode and numberOfInodes are not supported by xfs"))
		}
	default:
		errs = append(errs, invalid("csi.storage.k8s.io/fstype: %q is not ext4, ext3 or xfs", c.FSType))
	}
	return errors.Join(errs...)
}

// IOPSFor returns the IOPS to request for a volume of sizeGiB (0: leave it
// to EC2's default for the type). iopsPerGB is capped at the type's
// maximum, and raised to its minimum only with allowAutoIOPSPerGBIncrease.
func (c Create) IOPSFor(sizeGiB int32) (int32, error) {
	if c.iopsSet {
		return c.IOPS, nil
	}
	if !c.iopsPerSet {
		return 0, nil
	}
	lim := Limits[c.Type]
	iops := int64(c.IOPSPerGB) * int64(sizeGiB)
	if iops > int64(lim.MaxIOPS) {
		iops = int64(lim.MaxIOPS)
	}
	if iops < int64(lim.MinIOPS) {
		if !c.AllowAutoIOPS {
			return 0, invalid("iopsPerGB %d × %d GiB = %d IOPS is below the %s minimum of %d (set allowAutoIOPSPerGBIncrease)", c.IOPSPerGB, sizeGiB, iops, c.Type, lim.MinIOPS)
		}
		iops = int64(lim.MinIOPS)
	}
	return int32(iops), nil
}

// VolumeContext returns what the node needs to format the volume.
func (c Create) VolumeContext() map[string]string {
	ctx := map[string]string{}
	if c.FSType != "" {
		ctx[ContextFSType] = c.FSType
	}
	put := func(k string, v int64) {
		if v != 0 {
			ctx[k] = strconv.FormatInt(v, 10)
		}
	}
	put(ContextBlockSize, c.Format.BlockSize)
	put(ContextInodeSize, c.Format.InodeSize)
	put(ContextBytesPerInode, c.Format.BytesPerInode)
	put(ContextNumberOfInodes, c.Format.NumberOfInodes)
	return ctx
}

// ParseModify parses mutable parameters: type, iops, throughput and
// tagSpecification_N.
func ParseModify(in map[string]string) (Modify, error) {
	m := Modify{Tags: map[string]string{}}
	var errs []error
	for _, key := range sortedKeys(in) {
		v := in[key]
		lk := strings.ToLower(key)
		switch {
		case lk == KeyType:
			t, err := volumeType(v)
			errs = append(errs, err)
			m.Type = t
		case lk == KeyIOPS:
			n, err := positive(key, v, 32)
			errs = append(errs, err)
			m.IOPS = int32(n)
		case lk == KeyThroughput:
			n, err := positive(key, v, 32)
			errs = append(errs, err)
			m.Throughput = int32(n)
		case isTagSpec(lk):
			k, val, err := tagSpec(key, v)
			errs = append(errs, err)
			if err == nil {
				m.Tags[k] = val
			}
		default:
			errs = append(errs, invalid("unknown mutable parameter %q", key))
		}
	}
	return m, errors.Join(errs...)
}

// FormatFromContext reads the mkfs options of a volume context.
func FormatFromContext(ctx map[string]string) (Format, error) {
	var f Format
	var errs []error
	get := func(k string) int64 {
		v, ok := ctx[k]
		if !ok {
			return 0
		}
		n, err := positive(k, v, 64)
		errs = append(errs, err)
		return n
	}
	f.BlockSize = get(ContextBlockSize)
	f.InodeSize = get(ContextInodeSize)
	f.BytesPerInode = get(ContextBytesPerInode)
	f.NumberOfInodes = get(ContextNumberOfInodes)
	return f, errors.Join(errs...)
}

// MkfsArgs returns the mkfs options for fsType.
func (f Format) MkfsArgs(fsType string) []string {
	var args []string
	add := func(flag string, v int64) {
		if v != 0 {
			args = append(args, flag, strconv.FormatInt(v, 10))
		}
	}
	switch fsType {
	case "xfs":
		if f.BlockSize != 0 {
			args = append(args, "-b", "size="+strconv.FormatInt(f.BlockSize, 10))
		}
		if f.InodeSize != 0 {
			args = append(args, "-i", "size="+strconv.FormatInt(f.InodeSize, 10))
		}
	default:
		add("-b", f.BlockSize)
		add("-I", f.InodeSize)
		add("-i", f.BytesPerInode)
		add("-N", f.NumberOfInodes)
	}
	return args
}
