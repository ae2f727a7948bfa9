// Package params parses the StorageClass parameters of efs-ap dynamic
// provisioning. Keys are exact (as the AWS driver spells them); an unknown
// key, a missing required one or a bad value is an error wrapping
// ErrInvalid that names the field.
//
//	p, err := params.Parse(req.GetParameters())
//	dir, err := p.Directory(req.GetName())
package params

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/berth-io/berth/csi-efs/volume"
)

// ErrInvalid marks a bad parameter.
var ErrInvalid = errors.New("invalid parameter")

// Keys.
const (
	ProvisioningMode      = "provisioningMode"
	FileSystemID          = "fileSystemId"
	DirectoryPerms        = "directoryPerms"
	UID                   = "uid"
	GID                   = "gid"
	GIDRangeStart         = "gidRangeStart"
	GIDRangeEnd           = "gidRangeEnd"
	BasePath              = "basePath"
	SubPathPattern        = "subPathPattern"
	EnsureUniqueDirectory = "ensureUniqueDirectory"
	ReuseAccessPoint      = "reuseAccessPoint"
	EnableTagging         = "enableTagging"

	// Set by the external-provisioner with --extra-create-metadata.
	PVCName      = "csi.storage.k8s.io/pvc/name"
	PVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	PVName       = "csi.storage.k8s.io/pv/name"
)

// ModeAccessPoint is the one provisioning mode: a new access point per volume.
const ModeAccessPoint = "efs-ap"

// Default GID range, as the AWS driver documents it.
const (
	DefaultGIDRangeStart = 50000
	DefaultGIDRangeEnd   = 7000000
)

// DefaultSubPathPattern puts each volume in a directory named for its PV.
const DefaultSubPathPattern = "${.PV.name}"

// maxPath is EFS's limit on an access point's root directory.
const maxPath = 100

// maxID is the largest POSIX ID EFS accepts.
const maxID = 4294967295

// Params are parsed efs-ap parameters.
type Params struct {
	FileSystemID   string
	DirectoryPerms string // 3 or 4 octal digits
	// UID and GID are fixed IDs (-1 when not given); a GID not given is
	// allocated from [GIDRangeStart, GIDRangeEnd].
	UID, GID                   int64
	GIDRangeStart, GIDRangeEnd int64
	BasePath                   string
	SubPathPattern             string
	EnsureUniqueDirectory      bool
	ReuseAccessPoint           bool
	EnableTagging              bool
	PVCName, PVCNamespace      string
	PVName                     string
}

func invalid(field, format string, a ...any) error {
	return fmt.Errorf("parameter %s: %s: %w", field, fmt.Sprintf(format, a...), ErrInvalid)
}

func parseBool(field, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid(field, "%q is not true or false", v)
	}
	return b, nil
}

func parseID(field, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxID {
		return 0, invalid(field, "%q is not an integer in [0, %d]", v, int64(maxID))
	}
	return n, nil
}

var permsRe = regexp.MustCompile(`^[0-7]{3,4}$`)

// Parse validates StorageClass parameters.
func Parse(in map[string]string) (Params, error) {
	p := Params{UID: -1, GID: -1, SubPathPattern: DefaultSubPathPattern, EnsureUniqueDirectory: true, EnableTagging: true}
	var err error
	var rangeStart, rangeEnd string
	var haveStart, haveEnd bool
	for k, v := range in {
		switch k {
		case ProvisioningMode:
			if v != ModeAccessPoint {
				return p, invalid(k, "%q is not supported (want %s)", v, ModeAccessPoint)
			}
		case FileSystemID:
			if !volume.ValidFileSystemID(v) {
				return p, invalid(k, "%q is not a file system ID (fs-<hex>)", v)
			}
			p.FileSystemID = v
		case DirectoryPerms:
			if !permsRe.MatchString(v) {
				return p, invalid(k, "%q is not 3 or 4 octal digits", v)
			}
			p.DirectoryPerms = v
		case UID:
			if p.UID, err = parseID(k, v); err != nil {
				return p, err
			}
		case GID:
			if p.GID, err = parseID(k, v); err != nil {
				return p, err
			}
		case GIDRangeStart:
			rangeStart, haveStart = v, true
		case GIDRangeEnd:
			rangeEnd, haveEnd = v, true
		case BasePath:
			p.BasePath = v
		case SubPathPattern:
			p.SubPathPattern = v
		case EnsureUniqueDirectory:
			if p.EnsureUniqueDirectory, err = parseBool(k, v); err != nil {
				return p, err
			}
		case ReuseAccessPoint:
			if p.ReuseAccessPoint, err = parseBool(k, v); err != nil {
				return p, err
			}
		case EnableTagging:
			if p.EnableTagging, err = parseBool(k, v); err != nil {
				return p, err
			}
		case PVCName:
			p.PVCName = v
		case PVCNamespace:
			p.PVCNamespace = v
		case PVName:
			p.PVName = v
		default:
			return p, invalid(k, "unknown parameter")
		}
	}
	if _, ok := in[ProvisioningMode]; !ok {
		return p, invalid(ProvisioningMode, "missing (want %s)", ModeAccessPoint)
	}
	if p.FileSystemID == "" {
		return p, invalid(FileSystemID, "missing")
	}
	if p.DirectoryPerms == "" {
		return p, invalid(DirectoryPerms, "missing")
	}
	switch {
	case haveStart != haveEnd:
		return p, invalid(GIDRangeStart+"/"+GIDRangeEnd, "give both or neither")
	case haveStart:
		if p.GIDRangeStart, err = parseID(GIDRangeStart, rangeStart); err != nil {
			return p, err
		}
		if p.GIDRangeEnd, err = parseID(GIDRangeEnd, rangeEnd); err != nil {
			return p, err
		}
		if p.GIDRangeStart > p.GIDRangeEnd {
			return p, invalid(GIDRangeStart+"/"+GIDRangeEnd, "range [%d, %d] is empty (start after end)", p.GIDRangeStart, p.GIDRangeEnd)
		}
	default:
		p.GIDRangeStart, p.GIDRangeEnd = DefaultGIDRangeStart, DefaultGIDRangeEnd
	}
	if p.BasePath != "" {
		for _, seg := range strings.Split(p.BasePath, "/") {
			if seg == ".." || seg == "." {
				return p, invalid(BasePath, "%q must not contain . or .. segments", p.BasePath)
			}
		}
	}
	// The PV name falls back to the CSI name (see Directory): check the
	// pattern with a stand-in for it.
	check := p
	if check.PVName == "" {
		check.PVName = "pv"
	}
	if _, err := check.expand(); err != nil {
		return p, err
	}
	if p.ReuseAccessPoint && p.PVCName == "" {
		// Without the PVC name every reuse-enabled volume would share one
		// access point; refuse rather than collapse them.
		return p, invalid(ReuseAccessPoint, "needs %s (external-provisioner --extra-create-metadata)", PVCName)
	}
	return p, nil
}

var varRe = regexp.MustCompile(`\$\{([^}]*)\}`)

// expand substitutes the subPathPattern variables.
func (p Params) expand() (string, error) {
	var bad error
	out := varRe.ReplaceAllStringFunc(p.SubPathPattern, func(m string) string {
		name := strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(m, "${"), "}"), ".")
		var v, need string
		switch name {
		case "PVC.name":
			v, need = p.PVCName, PVCName
		case "PVC.namespace":
			v, need = p.PVCNamespace, PVCNamespace
		case "PV.name":
			v, need = p.PVName, PVName
		default:
			bad = invalid(SubPathPattern, "unknown variable %s (want ${.PVC.name}, ${.PVC.namespace} or ${.PV.name})", m)
			return ""
		}
		if v == "" && bad == nil {
			bad = invalid(SubPathPattern, "%s needs %s (external-provisioner --extra-create-metadata)", m, need)
		}
		if strings.Contains(v, "/") || v == ".." || v == "." {
			bad = invalid(SubPathPattern, "%s expands to %q, not one path segment", m, v)
		}
		return v
	})
	if bad != nil {
		return "", bad
	}
	if strings.ContainsAny(out, "${}") {
		return "", invalid(SubPathPattern, "%q has an unterminated variable", p.SubPathPattern)
	}
	for _, seg := range strings.Split(out, "/") {
		if seg == ".." || seg == "." {
			return "", invalid(SubPathPattern, "%q expands to %q, which has . or .. segments", p.SubPathPattern, out)
		}
	}
	return out, nil
}

// Directory is the access point's root directory for the volume named
// name: basePath/subPathPattern, with a suffix unique to the volume when
// ensureUniqueDirectory is on (derived from the name, so a retried
// CreateVolume asks for the same directory).
func (p Params) Directory(name string) (string, error) {
	if p.PVName == "" {
		// The CSI name is the PV name when the external-provisioner runs
		// without --extra-create-metadata.
		p.PVName = name
	}
	sub, err := p.expand()
	if err != nil {
		return "", err
	}
	base := path.Clean("/" + p.BasePath)
	sub = strings.Trim(sub, "/")
	suffix := ""
	if p.EnsureUniqueDirectory {
		sum := sha256.Sum256([]byte(name))
		suffix = hex.EncodeToString(sum[:])[:12]
		if sub != "" {
			suffix = "-" + suffix
		}
		// EFS root directories are at most 100 characters; a long PV or
		// PVC name (CSI names go up to 128) is cut, and the suffix keeps
		// the directory unique.
		if room := maxPath - len(strings.TrimSuffix(base, "/")) - 1 - len(suffix); len(sub) > room && room > 0 {
			sub = strings.TrimRight(sub[:room], "/")
		}
	}
	dir := path.Clean(base + "/" + sub + suffix)
	if len(dir) > maxPath {
		return "", invalid(BasePath+"/"+SubPathPattern, "directory %q is longer than EFS's %d characters", dir, maxPath)
	}
	return dir, nil
}

// ClientToken is the access point's idempotency token: the volume name
// (hashed when longer than EFS's 64 characters), or with reuseAccessPoint
// the PVC name, so a PVC re-created elsewhere finds its access point.
func (p Params) ClientToken(name string) string {
	if p.ReuseAccessPoint {
		sum := sha256.Sum256([]byte("pvc/" + p.PVCName))
		return "reuse-" + hex.EncodeToString(sum[:])[:58]
	}
	return Token(name)
}

// Token shortens s to a valid EFS client token (1-64 characters).
func Token(s string) string {
	if len(s) <= 64 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
