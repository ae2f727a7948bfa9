// Package efs is localcloud's Amazon EFS (REST-JSON, API 2015-02-01): file
// systems, mount targets, access points and tags. A file system is a
// directory under the state directory; an access point's root directory
// is created there with its CreationInfo owner and mode, as EFS does on
// first use, so the CSI driver's local mode can bind-mount it.
package efs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/store"
)

// MaxAccessPoints is EFS's quota of access points per file system.
const MaxAccessPoints = 10000

// Config configures EFS.
type Config struct {
	Region   string
	Account  string
	StateDir string
	Now      func() time.Time
}

// SubnetLookup answers what EFS needs to know about VPC subnets.
type SubnetLookup interface {
	Subnet(ctx context.Context, id string) (vpcID, az, cidr string, ok bool)
}

// Tag is a key/value pair, as EFS spells it in JSON.
type Tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// FileSystem is one EFS file system.
type FileSystem struct {
	ID              string    `json:"id"`
	CreationToken   string    `json:"creationToken"`
	CreationTime    time.Time `json:"creationTime"`
	ReadyAt         time.Time `json:"readyAt"`
	PerformanceMode string    `json:"performanceMode"`
	ThroughputMode  string    `json:"throughputMode"`
	ProvisionedMiBs float64   `json:"provisionedMibps,omitempty"`
	Encrypted       bool      `json:"encrypted"`
	KMSKeyID        string    `json:"kmsKeyId,omitempty"`
	AZName          string    `json:"azName,omitempty"`
	Tags            []Tag     `json:"tags"`
}

// MountTarget is a file system's network endpoint in one subnet.
type MountTarget struct {
	ID             string   `json:"id"`
	FileSystemID   string   `json:"fileSystemId"`
	SubnetID       string   `json:"subnetId"`
	VPCID          string   `json:"vpcId"`
	AZ             string   `json:"az"`
	IPAddress      string   `json:"ipAddress"`
	ENIID          string   `json:"eniId"`
	SecurityGroups []string `json:"securityGroups"`
}

// PosixUser is the identity an access point enforces.
type PosixUser struct {
	UID           int64   `json:"Uid"`
	GID           int64   `json:"Gid"`
	SecondaryGIDs []int64 `json:"SecondaryGids,omitempty"`
}

// CreationInfo says how to create an access point's root directory.
type CreationInfo struct {
	OwnerUID    int64  `json:"OwnerUid"`
	OwnerGID    int64  `json:"OwnerGid"`
	Permissions string `json:"Permissions"`
}

// RootDirectory is an access point's root.
type RootDirectory struct {
	Path         string        `json:"Path,omitempty"`
	CreationInfo *CreationInfo `json:"CreationInfo,omitempty"`
}

// AccessPoint is an application entry point into a file system.
type AccessPoint struct {
	ID            string         `json:"id"`
	FileSystemID  string         `json:"fileSystemId"`
	ClientToken   string         `json:"clientToken"`
	Name          string         `json:"name,omitempty"`
	PosixUser     *PosixUser     `json:"posixUser,omitempty"`
	RootDirectory *RootDirectory `json:"rootDirectory,omitempty"`
	Tags          []Tag          `json:"tags"`
	Created       time.Time      `json:"created"`
}

type state struct {
	FileSystems  map[string]*FileSystem  `json:"fileSystems"`
	MountTargets map[string]*MountTarget `json:"mountTargets"`
	AccessPoints map[string]*AccessPoint `json:"accessPoints"`
}

// Service is localcloud's EFS.
type Service struct {
	cfg     Config
	subnets SubnetLookup
	log     *slog.Logger
	path    string
	dataDir string
	mu      sync.Mutex
	st      state
}

// New loads (or creates) EFS state under cfg.StateDir.
func New(cfg Config, subnets SubnetLookup, log *slog.Logger) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, subnets: subnets, log: log.With("service", "efs"),
		path: filepath.Join(cfg.StateDir, "efs.json"), dataDir: filepath.Join(cfg.StateDir, "efs")}
	if _, err := store.Load(s.path, &s.st); err != nil {
		return nil, err
	}
	if s.st.FileSystems == nil {
		s.st.FileSystems = map[string]*FileSystem{}
	}
	if s.st.MountTargets == nil {
		s.st.MountTargets = map[string]*MountTarget{}
	}
	if s.st.AccessPoints == nil {
		s.st.AccessPoints = map[string]*AccessPoint{}
	}
	if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("efs data dir: %w", err)
	}
	return s, nil
}

func (s *Service) save() error { return store.Save(s.path, &s.st, 0o600) }

func newID(prefix string) string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])[:17]
}

// FileSystemPath is the host directory holding a file system's data.
func (s *Service) FileSystemPath(fsID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.FileSystems[fsID] == nil {
		return "", fmt.Errorf("file system %s: %w", fsID, ErrNotFound)
	}
	return filepath.Join(s.dataDir, fsID), nil
}

// AccessPointPath is the host directory of an access point's root.
func (s *Service) AccessPointPath(fsID, apID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ap := s.st.AccessPoints[apID]
	if ap == nil || ap.FileSystemID != fsID {
		return "", fmt.Errorf("access point %s of %s: %w", apID, fsID, ErrNotFound)
	}
	return s.apDir(ap), nil
}

// ErrNotFound is returned by the path helpers for unknown resources.
var ErrNotFound = fmt.Errorf("not found")

func (s *Service) apDir(ap *AccessPoint) string {
	p := "/"
	if ap.RootDirectory != nil && ap.RootDirectory.Path != "" {
		p = ap.RootDirectory.Path
	}
	return filepath.Join(s.dataDir, ap.FileSystemID, filepath.Clean("/"+p))
}

func (s *Service) arn(kind, id string) string {
	return "arn:aws:elasticfilesystem:" + s.cfg.Region + ":" + s.cfg.Account + ":" + kind + "/" + id
}

func (s *Service) lifeCycle(fs *FileSystem) string {
	if s.cfg.Now().Before(fs.ReadyAt) {
		return "creating"
	}
	return "available"
}

// fsNotFound and friends are EFS's error shapes.
func fsNotFound(id string) *awserr.Error {
	return awserr.New(404, "FileSystemNotFound", "File system '%s' does not exist.", id)
}

func apNotFound(id string) *awserr.Error {
	return awserr.New(404, "AccessPointNotFound", "Access point '%s' does not exist.", id)
}

func mtNotFound(id string) *awserr.Error {
	return awserr.New(404, "MountTargetNotFound", "Mount target '%s' does not exist.", id)
}

func badRequest(format string, args ...any) *awserr.Error {
	return awserr.New(400, "BadRequest", format, args...)
}

// pickMountTargetIP returns a free address in the subnet for a mount target.
func pickMountTargetIP(cidr string, used map[string]bool, want string) (string, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", badRequest("subnet CIDR %q is invalid", cidr)
	}
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !p.Contains(a) {
			return "", badRequest("IpAddress %s is not in the subnet's range %s", want, cidr)
		}
		if used[a.String()] {
			return "", awserr.New(409, "IpAddressInUse", "Address %s is already in use", want)
		}
		return a.String(), nil
	}
	// EFS takes addresses from the top of the subnet, away from EC2's picks.
	a := p.Masked().Addr()
	n := 1 << (32 - p.Bits())
	for i := n - 2; i >= 4; i-- {
		b := a.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(i)
		c := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
		if !used[c] {
			return c, nil
		}
	}
	return "", awserr.New(409, "NoFreeAddressesInSubnet", "The subnet has no free addresses")
}

func nameTag(tags []Tag) string {
	for _, t := range tags {
		if t.Key == "Name" {
			return t.Value
		}
	}
	return ""
}

func validTags(tags []Tag) *awserr.Error {
	for _, t := range tags {
		if t.Key == "" || len(t.Key) > 128 || len(t.Value) > 256 {
			return badRequest("Tag keys must be 1-128 characters and values at most 256")
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return badRequest("Tag keys starting with aws: are reserved")
		}
	}
	return nil
}
