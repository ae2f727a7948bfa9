package efs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth-io/berth/localcloud/awserr"
)

func (s *Service) renderAP(ap *AccessPoint) map[string]any {
	out := map[string]any{"AccessPointId": ap.ID, "AccessPointArn": s.arn("access-point", ap.ID), "FileSystemId": ap.FileSystemID,
		"ClientToken": ap.ClientToken, "OwnerId": s.cfg.Account, "LifeCycleState": "available", "Tags": nonNil(ap.Tags), "Name": nameTag(ap.Tags)}
	if ap.PosixUser != nil {
		out["PosixUser"] = ap.PosixUser
	}
	root := RootDirectory{Path: "/"}
	if ap.RootDirectory != nil {
		root = *ap.RootDirectory
		if root.Path == "" {
			root.Path = "/"
		}
	}
	out["RootDirectory"] = root
	return out
}

func validateAccessPoint(u *PosixUser, root *RootDirectory) error {
	if u != nil {
		if u.UID < 0 || u.UID > 4294967295 || u.GID < 0 || u.GID > 4294967295 {
			return badRequest("PosixUser Uid and Gid must be between 0 and 4294967295")
		}
		if len(u.SecondaryGIDs) > 16 {
			return badRequest("PosixUser allows at most 16 SecondaryGids")
		}
	}
	if root == nil {
		return nil
	}
	if root.Path != "" {
		if !strings.HasPrefix(root.Path, "/") || len(root.Path) > 100 {
			return badRequest("RootDirectory.Path must be an absolute path of at most 100 characters")
		}
		for _, seg := range strings.Split(root.Path, "/") {
			if seg == ".." || seg == "." {
				return badRequest("RootDirectory.Path must not contain . or .. segments")
			}
		}
	}
	if ci := root.CreationInfo; ci != nil {
		if ci.Permissions == "" {
			return badRequest("RootDirectory.CreationInfo.Permissions is required")
		}
		if len(ci.Permissions) < 3 || len(ci.Permissions) > 4 {
			return badRequest("RootDirectory.CreationInfo.Permissions must be 3 or 4 octal digits, got %q", ci.Permissions)
		}
		if _, err := strconv.ParseUint(ci.Permissions, 8, 32); err != nil {
			return badRequest("RootDirectory.CreationInfo.Permissions must be octal, got %q", ci.Permissions)
		}
		if ci.OwnerUID < 0 || ci.OwnerGID < 0 || ci.OwnerUID > 4294967295 || ci.OwnerGID > 4294967295 {
			return badRequest("RootDirectory.CreationInfo OwnerUid and OwnerGid must be between 0 and 4294967295")
		}
	}
	return nil
}

func (s *Service) createAccessPoint(body []byte) (int, any, error) {
	var in struct {
		ClientToken   string
		FileSystemId  string
		PosixUser     *PosixUser
		RootDirectory *RootDirectory
		Tags          []Tag
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if in.ClientToken == "" || len(in.ClientToken) > 64 {
		return 0, nil, badRequest("ClientToken is required (1 to 64 characters)")
	}
	if in.FileSystemId == "" {
		return 0, nil, badRequest("FileSystemId is required")
	}
	fs := s.st.FileSystems[in.FileSystemId]
	if fs == nil {
		return 0, nil, fsNotFound(in.FileSystemId)
	}
	if s.lifeCycle(fs) != "available" {
		return 0, nil, awserr.New(409, "IncorrectFileSystemLifeCycleState", "File system '%s' is not available yet.", fs.ID)
	}
	n := 0
	for _, ap := range s.st.AccessPoints {
		if ap.ClientToken == in.ClientToken {
			return 0, nil, &conflict{err: awserr.New(409, "AccessPointAlreadyExists", "Access point '%s' already exists with client token '%s'", ap.ID, in.ClientToken), field: "AccessPointId", id: ap.ID}
		}
		if ap.FileSystemID == fs.ID {
			n++
		}
	}
	if n >= MaxAccessPoints {
		return 0, nil, awserr.New(403, "AccessPointLimitExceeded", "File system '%s' already has the maximum of %d access points.", fs.ID, MaxAccessPoints)
	}
	if err := validateAccessPoint(in.PosixUser, in.RootDirectory); err != nil {
		return 0, nil, err
	}
	if e := validTags(in.Tags); e != nil {
		return 0, nil, e
	}
	ap := &AccessPoint{ID: newID("fsap"), FileSystemID: fs.ID, ClientToken: in.ClientToken, PosixUser: in.PosixUser,
		RootDirectory: in.RootDirectory, Tags: in.Tags, Created: s.cfg.Now()}
	if err := s.makeRoot(ap); err != nil {
		return 0, nil, err
	}
	s.st.AccessPoints[ap.ID] = ap
	if err := s.save(); err != nil {
		delete(s.st.AccessPoints, ap.ID)
		return 0, nil, err
	}
	return 200, s.renderAP(ap), nil
}

// makeRoot creates the access point's root directory with its
// CreationInfo owner and mode, unless it exists (EFS never changes an
// existing directory). Intermediate directories are root-owned 0755.
func (s *Service) makeRoot(ap *AccessPoint) error {
	dir := s.apDir(ap)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	ci := (*CreationInfo)(nil)
	if ap.RootDirectory != nil {
		ci = ap.RootDirectory.CreationInfo
	}
	if ci == nil {
		// Without CreationInfo EFS does not create the directory; mounting
		// then fails, as on AWS. Nothing to do here.
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create access point parent %s: %w", dir, err)
	}
	mode, _ := strconv.ParseUint(ci.Permissions, 8, 32)
	if err := os.Mkdir(dir, os.FileMode(mode)&os.ModePerm); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create access point root %s: %w", dir, err)
	}
	if err := os.Lchown(dir, int(ci.OwnerUID), int(ci.OwnerGID)); err != nil {
		return fmt.Errorf("chown access point root %s: %w", dir, err)
	}
	// Mkdir is subject to the umask; set the exact mode.
	if err := os.Chmod(dir, os.FileMode(mode)&os.ModePerm|fileModeBits(mode)); err != nil {
		return fmt.Errorf("chmod access point root %s: %w", dir, err)
	}
	return nil
}

// fileModeBits maps the setuid/setgid/sticky octal bits to os.FileMode.
func fileModeBits(mode uint64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func (s *Service) describeAccessPoints(q map[string][]string) (int, any, error) {
	get := func(k string) string { return first(q, k) }
	max, err := intParam(get("MaxResults"), "MaxResults")
	if err != nil {
		return 0, nil, err
	}
	apID, fsID := get("AccessPointId"), get("FileSystemId")
	if apID != "" && fsID != "" {
		return 0, nil, badRequest("Specify AccessPointId or FileSystemId, not both")
	}
	var ids []string
	switch {
	case apID != "":
		if s.st.AccessPoints[apID] == nil {
			return 0, nil, apNotFound(apID)
		}
		ids = []string{apID}
	default:
		if fsID != "" && s.st.FileSystems[fsID] == nil {
			return 0, nil, fsNotFound(fsID)
		}
		for id, ap := range s.st.AccessPoints {
			if fsID == "" || ap.FileSystemID == fsID {
				ids = append(ids, id)
			}
		}
	}
	pageIDs, next, err := page(ids, get("NextToken"), max)
	if err != nil {
		return 0, nil, err
	}
	out := []any{}
	for _, id := range pageIDs {
		out = append(out, s.renderAP(s.st.AccessPoints[id]))
	}
	resp := map[string]any{"AccessPoints": out}
	if next != "" {
		resp["NextToken"] = next
	}
	return 200, resp, nil
}

func (s *Service) deleteAccessPoint(id string) (int, any, error) {
	if s.st.AccessPoints[id] == nil {
		return 0, nil, apNotFound(id)
	}
	delete(s.st.AccessPoints, id)
	if err := s.save(); err != nil {
		return 0, nil, err
	}
	return 204, nil, nil
}

func (s *Service) tagsOf(id string) (*[]Tag, error) {
	switch {
	case strings.HasPrefix(id, "fs-"):
		if fs := s.st.FileSystems[id]; fs != nil {
			return &fs.Tags, nil
		}
		return nil, fsNotFound(id)
	case strings.HasPrefix(id, "fsap-"):
		if ap := s.st.AccessPoints[id]; ap != nil {
			return &ap.Tags, nil
		}
		return nil, apNotFound(id)
	}
	return nil, badRequest("Resource ID %q is neither a file system nor an access point", id)
}

func (s *Service) tagResource(id string, body []byte) (int, any, error) {
	var in struct{ Tags []Tag }
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if len(in.Tags) == 0 {
		return 0, nil, badRequest("Tags is required")
	}
	if e := validTags(in.Tags); e != nil {
		return 0, nil, e
	}
	tags, err := s.tagsOf(id)
	if err != nil {
		return 0, nil, err
	}
	for _, t := range in.Tags {
		replaced := false
		for i := range *tags {
			if (*tags)[i].Key == t.Key {
				(*tags)[i].Value, replaced = t.Value, true
			}
		}
		if !replaced {
			*tags = append(*tags, t)
		}
	}
	if len(*tags) > 50 {
		return 0, nil, badRequest("A resource can have at most 50 tags")
	}
	if err := s.save(); err != nil {
		return 0, nil, err
	}
	return 200, nil, nil
}

func (s *Service) untagResource(id string, keys []string) (int, any, error) {
	if len(keys) == 0 {
		return 0, nil, badRequest("tagKeys is required")
	}
	tags, err := s.tagsOf(id)
	if err != nil {
		return 0, nil, err
	}
	kept := (*tags)[:0]
	for _, t := range *tags {
		drop := false
		for _, k := range keys {
			drop = drop || t.Key == k
		}
		if !drop {
			kept = append(kept, t)
		}
	}
	*tags = kept
	if err := s.save(); err != nil {
		return 0, nil, err
	}
	return 200, nil, nil
}
