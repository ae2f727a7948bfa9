package efs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
)

const prefix = "/2015-02-01/"

// route is one operation: method and path pattern ("{}" is an ID segment).
type route struct {
	method, pattern, op string
}

var routes = []route{
	{http.MethodPost, "file-systems", "CreateFileSystem"},
	{http.MethodGet, "file-systems", "DescribeFileSystems"},
	{http.MethodDelete, "file-systems/{}", "DeleteFileSystem"},
	{http.MethodPost, "mount-targets", "CreateMountTarget"},
	{http.MethodGet, "mount-targets", "DescribeMountTargets"},
	{http.MethodDelete, "mount-targets/{}", "DeleteMountTarget"},
	{http.MethodGet, "mount-targets/{}/security-groups", "DescribeMountTargetSecurityGroups"},
	{http.MethodPost, "access-points", "CreateAccessPoint"},
	{http.MethodGet, "access-points", "DescribeAccessPoints"},
	{http.MethodDelete, "access-points/{}", "DeleteAccessPoint"},
	{http.MethodPost, "resource-tags/{}", "TagResource"},
	{http.MethodDelete, "resource-tags/{}", "UntagResource"},
	{http.MethodGet, "resource-tags/{}", "ListTagsForResource"},
	{http.MethodGet, "file-systems/{}/backup-policy", "DescribeBackupPolicy"},
	{http.MethodGet, "file-systems/{}/lifecycle-configuration", "DescribeLifecycleConfiguration"},
}

// match returns the operation and the ID path segment of r.
func match(r *http.Request) (op, id string, ok bool) {
	path, found := strings.CutPrefix(r.URL.EscapedPath(), prefix)
	if !found {
		return "", "", false
	}
	segs := strings.Split(strings.TrimSuffix(path, "/"), "/")
	for _, rt := range routes {
		if rt.method != r.Method {
			continue
		}
		pat := strings.Split(rt.pattern, "/")
		if len(pat) != len(segs) {
			continue
		}
		id = ""
		good := true
		for i := range pat {
			if pat[i] == "{}" {
				v, err := unescape(segs[i])
				if err != nil || v == "" {
					good = false
					break
				}
				id = v
			} else if pat[i] != segs[i] {
				good = false
				break
			}
		}
		if good {
			return rt.op, id, true
		}
	}
	return "", "", false
}

func unescape(s string) (string, error) { return url.PathUnescape(s) }

// Operation names the operation of r.
func (s *Service) Operation(r *http.Request) (string, *awserr.Error) {
	op, _, ok := match(r)
	if !ok {
		return "", awserr.New(http.StatusNotFound, "UnknownOperationException", "No EFS operation for %s %s", r.Method, r.URL.Path)
	}
	return op, nil
}

// WriteError renders a REST-JSON error as EFS does.
func (s *Service) WriteError(w http.ResponseWriter, requestID string, e *awserr.Error) {
	writeError(w, requestID, e, nil)
}

func writeError(w http.ResponseWriter, requestID string, e *awserr.Error, extra map[string]string) {
	body := map[string]string{"ErrorCode": e.Code, "Message": e.Message}
	for k, v := range extra {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.Code)
	w.Header().Set("X-Amzn-RequestId", requestID)
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

// conflict is an AlreadyExists error that names the existing resource in
// an extra member (FileSystemId or AccessPointId), as EFS does.
type conflict struct {
	err       *awserr.Error
	field, id string
}

func (e *conflict) Error() string { return e.err.Error() }
func (e *conflict) Unwrap() error { return e.err }

// Serve runs one operation.
func (s *Service) Serve(ctx context.Context, w http.ResponseWriter, r *http.Request, op string, body []byte, requestID string) {
	_, id, _ := match(r)
	status, resp, err := s.dispatch(ctx, r, op, id, body)
	if err != nil {
		var ex *conflict
		if errors.As(err, &ex) {
			writeError(w, requestID, ex.err, map[string]string{ex.field: ex.id})
			return
		}
		e := awserr.As(err)
		if e.Code == "InternalError" {
			s.log.Error("efs internal error", "op", op, "err", err)
		}
		writeError(w, requestID, e, nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-RequestId", requestID)
	if resp == nil {
		w.WriteHeader(status)
		return
	}
	b, err := json.Marshal(resp)
	if err != nil {
		writeError(w, requestID, awserr.As(err), nil)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func decode(body []byte, v any) error {
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("The request body is not valid JSON: %v", err)
	}
	return nil
}

func (s *Service) dispatch(ctx context.Context, r *http.Request, op, id string, body []byte) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := r.URL.Query()
	switch op {
	case "CreateFileSystem":
		return s.createFileSystem(body)
	case "DescribeFileSystems":
		return s.describeFileSystems(q)
	case "DeleteFileSystem":
		return s.deleteFileSystem(id)
	case "CreateMountTarget":
		return s.createMountTarget(ctx, body)
	case "DescribeMountTargets":
		return s.describeMountTargets(q)
	case "DeleteMountTarget":
		return s.deleteMountTarget(id)
	case "DescribeMountTargetSecurityGroups":
		mt := s.st.MountTargets[id]
		if mt == nil {
			return 0, nil, mtNotFound(id)
		}
		return 200, map[string]any{"SecurityGroups": mt.SecurityGroups}, nil
	case "CreateAccessPoint":
		return s.createAccessPoint(body)
	case "DescribeAccessPoints":
		return s.describeAccessPoints(q)
	case "DeleteAccessPoint":
		return s.deleteAccessPoint(id)
	case "TagResource":
		return s.tagResource(id, body)
	case "UntagResource":
		return s.untagResource(id, q["tagKeys"])
	case "ListTagsForResource":
		tags, err := s.tagsOf(id)
		if err != nil {
			return 0, nil, err
		}
		return 200, map[string]any{"Tags": *tags}, nil
	case "DescribeBackupPolicy":
		if s.st.FileSystems[id] == nil {
			return 0, nil, fsNotFound(id)
		}
		return 200, map[string]any{"BackupPolicy": map[string]string{"Status": "DISABLED"}}, nil
	case "DescribeLifecycleConfiguration":
		if s.st.FileSystems[id] == nil {
			return 0, nil, fsNotFound(id)
		}
		return 200, map[string]any{"LifecyclePolicies": []any{}}, nil
	}
	return 0, nil, awserr.New(http.StatusNotFound, "UnknownOperationException", "unknown operation %s", op)
}

func (s *Service) renderFS(fs *FileSystem) map[string]any {
	n := 0
	for _, mt := range s.st.MountTargets {
		if mt.FileSystemID == fs.ID {
			n++
		}
	}
	out := map[string]any{
		"FileSystemId": fs.ID, "FileSystemArn": s.arn("file-system", fs.ID), "CreationToken": fs.CreationToken,
		"CreationTime": float64(fs.CreationTime.Unix()), "OwnerId": s.cfg.Account, "LifeCycleState": s.lifeCycle(fs),
		"NumberOfMountTargets": n, "PerformanceMode": fs.PerformanceMode, "ThroughputMode": fs.ThroughputMode,
		"Encrypted": fs.Encrypted, "Tags": nonNil(fs.Tags), "Name": nameTag(fs.Tags),
		"SizeInBytes":          map[string]any{"Value": 6144, "ValueInStandard": 6144, "ValueInIA": 0},
		"FileSystemProtection": map[string]string{"ReplicationOverwriteProtection": "ENABLED"},
	}
	if fs.KMSKeyID != "" {
		out["KmsKeyId"] = fs.KMSKeyID
	}
	if fs.ThroughputMode == "provisioned" {
		out["ProvisionedThroughputInMibps"] = fs.ProvisionedMiBs
	}
	if fs.AZName != "" {
		out["AvailabilityZoneName"] = fs.AZName
	}
	return out
}

func nonNil(t []Tag) []Tag {
	if t == nil {
		return []Tag{}
	}
	return t
}

var creationToken = regexp.MustCompile(`^.{1,64}$`)

func (s *Service) createFileSystem(body []byte) (int, any, error) {
	var in struct {
		CreationToken                string
		PerformanceMode              string
		ThroughputMode               string
		ProvisionedThroughputInMibps float64
		Encrypted                    bool
		KmsKeyId                     string
		AvailabilityZoneName         string
		Backup                       bool
		Tags                         []Tag
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if !creationToken.MatchString(in.CreationToken) {
		return 0, nil, badRequest("CreationToken must be 1 to 64 characters")
	}
	for _, fs := range s.st.FileSystems {
		if fs.CreationToken == in.CreationToken {
			return 0, nil, &conflict{err: awserr.New(409, "FileSystemAlreadyExists", "File system '%s' already exists with creation token '%s'", fs.ID, in.CreationToken), field: "FileSystemId", id: fs.ID}
		}
	}
	switch in.PerformanceMode {
	case "":
		in.PerformanceMode = "generalPurpose"
	case "generalPurpose", "maxIO":
	default:
		return 0, nil, badRequest("PerformanceMode must be generalPurpose or maxIO")
	}
	switch in.ThroughputMode {
	case "":
		in.ThroughputMode = "bursting"
	case "bursting", "elastic":
	case "provisioned":
		if in.ProvisionedThroughputInMibps < 1 {
			return 0, nil, awserr.New(400, "BadRequest", "ProvisionedThroughputInMibps is required for provisioned throughput mode")
		}
	default:
		return 0, nil, badRequest("ThroughputMode must be bursting, provisioned or elastic")
	}
	if in.KmsKeyId != "" && !in.Encrypted {
		return 0, nil, badRequest("KmsKeyId requires Encrypted")
	}
	if e := validTags(in.Tags); e != nil {
		return 0, nil, e
	}
	now := s.cfg.Now()
	fs := &FileSystem{ID: newID("fs"), CreationToken: in.CreationToken, CreationTime: now, ReadyAt: now.Add(500 * time.Millisecond),
		PerformanceMode: in.PerformanceMode, ThroughputMode: in.ThroughputMode, ProvisionedMiBs: in.ProvisionedThroughputInMibps,
		Encrypted: in.Encrypted, KMSKeyID: in.KmsKeyId, AZName: in.AvailabilityZoneName, Tags: in.Tags}
	if err := os.MkdirAll(s.dataDirOf(fs.ID), 0o755); err != nil {
		return 0, nil, fmt.Errorf("create file system directory: %w", err)
	}
	s.st.FileSystems[fs.ID] = fs
	if err := s.save(); err != nil {
		delete(s.st.FileSystems, fs.ID)
		return 0, nil, err
	}
	return 201, s.renderFS(fs), nil
}

func (s *Service) dataDirOf(fsID string) string { return s.dataDir + "/" + fsID }

// page implements Marker/MaxItems and NextToken/MaxResults pagination over
// IDs in sorted order.
func page(ids []string, marker string, max int) ([]string, string, error) {
	sort.Strings(ids)
	start := 0
	if marker != "" {
		b, err := base64.RawURLEncoding.DecodeString(marker)
		if err != nil {
			return nil, "", badRequest("invalid pagination token")
		}
		start = sort.SearchStrings(ids, string(b)+"\x00")
	}
	ids = ids[start:]
	if max > 0 && len(ids) > max {
		return ids[:max], base64.RawURLEncoding.EncodeToString([]byte(ids[max-1])), nil
	}
	return ids, "", nil
}

// first returns the first value of a query parameter, or "".
func first(q map[string][]string, k string) string {
	if v := q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func intParam(v string, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest("%s must be a positive integer", name)
	}
	return n, nil
}

func (s *Service) describeFileSystems(q map[string][]string) (int, any, error) {
	get := func(k string) string { return first(q, k) }
	max, err := intParam(get("MaxItems"), "MaxItems")
	if err != nil {
		return 0, nil, err
	}
	var ids []string
	if id := get("FileSystemId"); id != "" {
		if s.st.FileSystems[id] == nil {
			return 0, nil, fsNotFound(id)
		}
		ids = []string{id}
	} else {
		for id, fs := range s.st.FileSystems {
			if tok := get("CreationToken"); tok == "" || fs.CreationToken == tok {
				ids = append(ids, id)
			}
		}
	}
	pageIDs, next, err := page(ids, get("Marker"), max)
	if err != nil {
		return 0, nil, err
	}
	out := []any{}
	for _, id := range pageIDs {
		out = append(out, s.renderFS(s.st.FileSystems[id]))
	}
	resp := map[string]any{"FileSystems": out}
	if next != "" {
		resp["NextMarker"] = next
	}
	if m := get("Marker"); m != "" {
		resp["Marker"] = m
	}
	return 200, resp, nil
}

func (s *Service) deleteFileSystem(id string) (int, any, error) {
	if s.st.FileSystems[id] == nil {
		return 0, nil, fsNotFound(id)
	}
	for _, mt := range s.st.MountTargets {
		if mt.FileSystemID == id {
			return 0, nil, awserr.New(409, "FileSystemInUse", "File system '%s' has mount targets and cannot be deleted.", id)
		}
	}
	// Access points go with their file system, as on EFS.
	for apID, ap := range s.st.AccessPoints {
		if ap.FileSystemID == id {
			delete(s.st.AccessPoints, apID)
		}
	}
	delete(s.st.FileSystems, id)
	if err := s.save(); err != nil {
		return 0, nil, err
	}
	if err := os.RemoveAll(s.dataDirOf(id)); err != nil {
		s.log.Error("remove file system data", "fs", id, "err", err)
	}
	return 204, nil, nil
}

func (s *Service) renderMT(mt *MountTarget) map[string]any {
	return map[string]any{"MountTargetId": mt.ID, "FileSystemId": mt.FileSystemID, "SubnetId": mt.SubnetID, "VpcId": mt.VPCID,
		"AvailabilityZoneName": mt.AZ, "IpAddress": mt.IPAddress, "NetworkInterfaceId": mt.ENIID, "OwnerId": s.cfg.Account,
		"LifeCycleState": "available"}
}

func (s *Service) createMountTarget(ctx context.Context, body []byte) (int, any, error) {
	var in struct {
		FileSystemId   string
		SubnetId       string
		IpAddress      string
		SecurityGroups []string
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if in.FileSystemId == "" || in.SubnetId == "" {
		return 0, nil, badRequest("FileSystemId and SubnetId are required")
	}
	fs := s.st.FileSystems[in.FileSystemId]
	if fs == nil {
		return 0, nil, fsNotFound(in.FileSystemId)
	}
	vpc, az, cidr, ok := s.subnets.Subnet(ctx, in.SubnetId)
	if !ok {
		return 0, nil, awserr.New(404, "SubnetNotFound", "Subnet '%s' does not exist.", in.SubnetId)
	}
	used := map[string]bool{}
	for _, mt := range s.st.MountTargets {
		used[mt.IPAddress] = true
		if mt.FileSystemID != fs.ID {
			continue
		}
		if mt.AZ == az {
			return 0, nil, awserr.New(409, "MountTargetConflict", "File system '%s' already has a mount target in availability zone %s", fs.ID, az)
		}
		if mt.VPCID != vpc {
			return 0, nil, awserr.New(409, "MountTargetConflict", "All mount targets of a file system must be in one VPC")
		}
	}
	if fs.AZName != "" && fs.AZName != az {
		return 0, nil, badRequest("One Zone file system %s lives in %s, not %s", fs.ID, fs.AZName, az)
	}
	ip, err := pickMountTargetIP(cidr, used, in.IpAddress)
	if err != nil {
		return 0, nil, err
	}
	if len(in.SecurityGroups) > 5 {
		return 0, nil, awserr.New(400, "SecurityGroupLimitExceeded", "At most 5 security groups")
	}
	mt := &MountTarget{ID: newID("fsmt"), FileSystemID: fs.ID, SubnetID: in.SubnetId, VPCID: vpc, AZ: az, IPAddress: ip, ENIID: newID("eni"), SecurityGroups: in.SecurityGroups}
	s.st.MountTargets[mt.ID] = mt
	if err := s.save(); err != nil {
		delete(s.st.MountTargets, mt.ID)
		return 0, nil, err
	}
	return 200, s.renderMT(mt), nil
}

func (s *Service) describeMountTargets(q map[string][]string) (int, any, error) {
	get := func(k string) string { return first(q, k) }
	max, err := intParam(get("MaxItems"), "MaxItems")
	if err != nil {
		return 0, nil, err
	}
	fsID, mtID, apID := get("FileSystemId"), get("MountTargetId"), get("AccessPointId")
	if fsID == "" && mtID == "" && apID == "" {
		return 0, nil, badRequest("One of FileSystemId, MountTargetId or AccessPointId is required")
	}
	if apID != "" {
		ap := s.st.AccessPoints[apID]
		if ap == nil {
			return 0, nil, apNotFound(apID)
		}
		fsID = ap.FileSystemID
	}
	if fsID != "" && s.st.FileSystems[fsID] == nil {
		return 0, nil, fsNotFound(fsID)
	}
	if mtID != "" && s.st.MountTargets[mtID] == nil {
		return 0, nil, mtNotFound(mtID)
	}
	var ids []string
	for id, mt := range s.st.MountTargets {
		if (mtID == "" || id == mtID) && (fsID == "" || mt.FileSystemID == fsID) {
			ids = append(ids, id)
		}
	}
	pageIDs, next, err := page(ids, get("Marker"), max)
	if err != nil {
		return 0, nil, err
	}
	out := []any{}
	for _, id := range pageIDs {
		out = append(out, s.renderMT(s.st.MountTargets[id]))
	}
	resp := map[string]any{"MountTargets": out}
	if next != "" {
		resp["NextMarker"] = next
	}
	return 200, resp, nil
}

func (s *Service) deleteMountTarget(id string) (int, any, error) {
	if s.st.MountTargets[id] == nil {
		return 0, nil, mtNotFound(id)
	}
	delete(s.st.MountTargets, id)
	if err := s.save(); err != nil {
		return 0, nil, err
	}
	return 204, nil, nil
}
