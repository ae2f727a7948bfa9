// Package volume parses and formats EFS volume handles. berth writes
// "fs-…::fsap-…" (file system, empty sub-path, access point) and reads
// every form the AWS driver has used or accepts for static volumes:
//
//	fs-0123                       the file system root
//	fs-0123:/data                 a directory of the file system
//	fs-0123::fsap-0456            an access point
//	fs-0123:/data:fsap-0456       a directory below an access point's root
//	efs:fs-0123::fsap-0456        any of the above with the v3 "efs:" prefix
package volume

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// ErrMalformed is returned for a handle that is not one of the forms.
var ErrMalformed = errors.New("malformed volume handle")

var (
	fsIDRe = regexp.MustCompile(`^fs-[0-9a-f]{8,40}$`)
	apIDRe = regexp.MustCompile(`^fsap-[0-9a-f]{8,40}$`)
)

// ID is a parsed volume handle.
type ID struct {
	FileSystemID  string
	SubPath       string // "" or an absolute, clean path
	AccessPointID string // "" for a plain file system volume
}

// ValidFileSystemID reports whether s looks like an EFS file system ID.
func ValidFileSystemID(s string) bool { return fsIDRe.MatchString(s) }

// Parse reads any supported handle form.
func Parse(handle string) (ID, error) {
	h := strings.TrimPrefix(handle, "efs:")
	parts := strings.Split(h, ":")
	if len(parts) > 3 {
		return ID{}, fmt.Errorf("%q has %d \":\"-separated parts, want at most 3: %w", handle, len(parts), ErrMalformed)
	}
	id := ID{FileSystemID: parts[0]}
	if !fsIDRe.MatchString(id.FileSystemID) {
		return ID{}, fmt.Errorf("%q: file system ID %q is not fs-<hex>: %w", handle, id.FileSystemID, ErrMalformed)
	}
	if len(parts) > 1 && parts[1] != "" {
		p := parts[1]
		if !strings.HasPrefix(p, "/") {
			return ID{}, fmt.Errorf("%q: sub-path %q is not absolute: %w", handle, p, ErrMalformed)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == ".." {
				return ID{}, fmt.Errorf("%q: sub-path %q leaves the file system: %w", handle, p, ErrMalformed)
			}
		}
		if p = path.Clean(p); p != "/" {
			id.SubPath = p
		}
	}
	if len(parts) > 2 {
		id.AccessPointID = parts[2]
		if !apIDRe.MatchString(id.AccessPointID) {
			return ID{}, fmt.Errorf("%q: access point ID %q is not fsap-<hex>: %w", handle, id.AccessPointID, ErrMalformed)
		}
	}
	return id, nil
}

// String formats the handle in the shortest form that Parse reads back.
func (id ID) String() string {
	switch {
	case id.AccessPointID != "":
		return id.FileSystemID + ":" + id.SubPath + ":" + id.AccessPointID
	case id.SubPath != "":
		return id.FileSystemID + ":" + id.SubPath
	}
	return id.FileSystemID
}

// Source is the NFS source efs-utils mounts: "fs-…:/path" (the access
// point, when there is one, is a mount option and the path is below its
// root).
func (id ID) Source() string {
	p := id.SubPath
	if p == "" {
		p = "/"
	}
	return id.FileSystemID + ":" + p
}
