package efs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	efssdk "github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/aws-sdk-go-v2/service/efs/types"
	"github.com/aws/smithy-go"
)

type subnets map[string][3]string

func (s subnets) Subnet(_ context.Context, id string) (string, string, string, bool) {
	v, ok := s[id]
	return v[0], v[1], v[2], ok
}

var testSubnets = subnets{
	"subnet-a": {"vpc-1", "us-west-2a", "10.0.1.0/24"},
	"subnet-b": {"vpc-1", "us-west-2b", "10.0.2.0/24"},
	"subnet-c": {"vpc-1", "us-west-2a", "10.0.3.0/24"},
}

func newTestService(t *testing.T, dir string) (*efssdk.Client, *Service) {
	t.Helper()
	svc, err := New(Config{Region: "us-west-2", Account: "000000000000", StateDir: dir}, testSubnets, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		op, e := svc.Operation(r)
		if e != nil {
			svc.WriteError(w, "req", e)
			return
		}
		svc.Serve(r.Context(), w, r, op, body, "req")
	}))
	t.Cleanup(srv.Close)
	return efssdk.New(efssdk.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""), Retryer: aws.NopRetryer{}}), svc
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return "?" + err.Error()
	}
	return ""
}

func availableFS(t *testing.T, c *efssdk.Client, token string) string {
	t.Helper()
	fs, err := c.CreateFileSystem(context.Background(), &efssdk.CreateFileSystemInput{CreationToken: aws.String(token),
		Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("data")}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := c.DescribeFileSystems(context.Background(), &efssdk.DescribeFileSystemsInput{FileSystemId: fs.FileSystemId})
		if err != nil {
			t.Fatal(err)
		}
		if d.FileSystems[0].LifeCycleState == types.LifeCycleStateAvailable {
			return *fs.FileSystemId
		}
		if time.Now().After(deadline) {
			t.Fatal("file system never became available")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFileSystemsAndMountTargets(t *testing.T) {
	c, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	fsID := availableFS(t, c, "tok-1")
	_, err := c.CreateFileSystem(ctx, &efssdk.CreateFileSystemInput{CreationToken: aws.String("tok-1")})
	var exists *types.FileSystemAlreadyExists
	if !errors.As(err, &exists) || *exists.FileSystemId != fsID {
		t.Fatalf("reused creation token: %v", err)
	}
	d, err := c.DescribeFileSystems(ctx, &efssdk.DescribeFileSystemsInput{FileSystemId: &fsID})
	if err != nil || *d.FileSystems[0].Name != "data" || d.FileSystems[0].PerformanceMode != types.PerformanceModeGeneralPurpose {
		t.Fatalf("describe: %v %+v", err, d)
	}
	mt, err := c.CreateMountTarget(ctx, &efssdk.CreateMountTargetInput{FileSystemId: &fsID, SubnetId: aws.String("subnet-a")})
	if err != nil {
		t.Fatal(err)
	}
	if *mt.AvailabilityZoneName != "us-west-2a" || *mt.IpAddress == "" {
		t.Fatalf("mount target %+v", mt)
	}
	if _, err := c.CreateMountTarget(ctx, &efssdk.CreateMountTargetInput{FileSystemId: &fsID, SubnetId: aws.String("subnet-c")}); code(err) != "MountTargetConflict" {
		t.Fatalf("second target in one AZ: %v", err)
	}
	if _, err := c.CreateMountTarget(ctx, &efssdk.CreateMountTargetInput{FileSystemId: &fsID, SubnetId: aws.String("subnet-x")}); code(err) != "SubnetNotFound" {
		t.Fatalf("unknown subnet: %v", err)
	}
	if _, err := c.DeleteFileSystem(ctx, &efssdk.DeleteFileSystemInput{FileSystemId: &fsID}); code(err) != "FileSystemInUse" {
		t.Fatalf("delete with mount targets: %v", err)
	}
	if _, err := c.DeleteMountTarget(ctx, &efssdk.DeleteMountTargetInput{MountTargetId: mt.MountTargetId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteFileSystem(ctx, &efssdk.DeleteFileSystemInput{FileSystemId: &fsID}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeFileSystems(ctx, &efssdk.DescribeFileSystemsInput{FileSystemId: &fsID})
	var nf *types.FileSystemNotFound
	if !errors.As(err, &nf) {
		t.Fatalf("deleted fs: %v", err)
	}
}

func TestAccessPoints(t *testing.T) {
	dir := t.TempDir()
	c, svc := newTestService(t, dir)
	ctx := context.Background()
	fsID := availableFS(t, c, "tok-ap")
	in := &efssdk.CreateAccessPointInput{FileSystemId: &fsID, ClientToken: aws.String("pvc-123"),
		PosixUser: &types.PosixUser{Uid: aws.Int64(1001), Gid: aws.Int64(2002)},
		RootDirectory: &types.RootDirectory{Path: aws.String("/dynamic/pvc-123"),
			CreationInfo: &types.CreationInfo{OwnerUid: aws.Int64(1001), OwnerGid: aws.Int64(2002), Permissions: aws.String("0750")}}}
	ap, err := c.CreateAccessPoint(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	path, err := svc.AccessPointPath(fsID, *ap.AccessPointId)
	if err != nil {
		t.Fatal(err)
	}
	// The layout is a contract: berth-csi-efs --local-efs-root=<state-dir>/efs
	// bind-mounts <root>/<fs-id>/<access point path>.
	if want := filepath.Join(dir, "efs", fsID, "dynamic", "pvc-123"); path != want {
		t.Fatalf("access point directory %s, want %s", path, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o750 || st.Uid != 1001 || st.Gid != 2002 {
		t.Fatalf("access point root %s: mode %v owner %d:%d", path, fi.Mode(), st.Uid, st.Gid)
	}
	_, err = c.CreateAccessPoint(ctx, in)
	var exists *types.AccessPointAlreadyExists
	if !errors.As(err, &exists) || *exists.AccessPointId != *ap.AccessPointId {
		t.Fatalf("reused client token: %v", err)
	}
	for i, bad := range []*efssdk.CreateAccessPointInput{
		{FileSystemId: &fsID, ClientToken: aws.String("b1"), RootDirectory: &types.RootDirectory{Path: aws.String("relative")}},
		{FileSystemId: &fsID, ClientToken: aws.String("b2"), RootDirectory: &types.RootDirectory{Path: aws.String("/x"), CreationInfo: &types.CreationInfo{OwnerUid: aws.Int64(1), OwnerGid: aws.Int64(1), Permissions: aws.String("999")}}},
		{FileSystemId: &fsID, ClientToken: aws.String("b3"), RootDirectory: &types.RootDirectory{Path: aws.String("/../etc")}},
	} {
		if _, err := c.CreateAccessPoint(ctx, bad); code(err) != "BadRequest" {
			t.Errorf("bad access point %d: %v", i, err)
		}
	}
	if _, err := c.CreateAccessPoint(ctx, &efssdk.CreateAccessPointInput{FileSystemId: aws.String("fs-0000"), ClientToken: aws.String("z")}); code(err) != "FileSystemNotFound" {
		t.Fatalf("unknown fs: %v", err)
	}
	for i := 0; i < 4; i++ {
		if _, err := c.CreateAccessPoint(ctx, &efssdk.CreateAccessPointInput{FileSystemId: &fsID, ClientToken: aws.String("more-" + string(rune('a'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	p := efssdk.NewDescribeAccessPointsPaginator(c, &efssdk.DescribeAccessPointsInput{FileSystemId: &fsID, MaxResults: aws.Int32(2)})
	n := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.AccessPoints)
	}
	if n != 5 {
		t.Fatalf("paginated %d access points, want 5", n)
	}
	if _, err := c.DeleteAccessPoint(ctx, &efssdk.DeleteAccessPointInput{AccessPointId: ap.AccessPointId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteAccessPoint(ctx, &efssdk.DeleteAccessPointInput{AccessPointId: ap.AccessPointId})
	var apnf *types.AccessPointNotFound
	if !errors.As(err, &apnf) {
		t.Fatalf("delete twice: %v", err)
	}

	// State survives a restart.
	c2, _ := newTestService(t, dir)
	out, err := c2.DescribeAccessPoints(ctx, &efssdk.DescribeAccessPointsInput{FileSystemId: &fsID})
	if err != nil || len(out.AccessPoints) != 4 {
		t.Fatalf("after restart: %v %d", err, len(out.AccessPoints))
	}
}

func TestTags(t *testing.T) {
	c, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	fsID := availableFS(t, c, "tok-tags")
	if _, err := c.TagResource(ctx, &efssdk.TagResourceInput{ResourceId: &fsID, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("x")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagResource(ctx, &efssdk.UntagResourceInput{ResourceId: &fsID, TagKeys: []string{"Name"}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.ListTagsForResource(ctx, &efssdk.ListTagsForResourceInput{ResourceId: &fsID})
	if err != nil || len(out.Tags) != 1 || *out.Tags[0].Key != "team" {
		t.Fatalf("tags %v %+v", err, out)
	}
}

func FuzzRequests(f *testing.F) {
	svc, err := New(Config{Region: "us-west-2", Account: "000000000000", StateDir: f.TempDir()}, testSubnets, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("POST", "/2015-02-01/access-points", `{"FileSystemId":"fs-1","ClientToken":"x","RootDirectory":{"Path":"/a","CreationInfo":{"Permissions":"7"}}}`)
	f.Add("POST", "/2015-02-01/file-systems", `{"CreationToken":"a","ThroughputMode":"provisioned"}`)
	f.Add("GET", "/2015-02-01/mount-targets?MaxItems=-1", ``)
	f.Add("DELETE", "/2015-02-01/resource-tags/fs-1?tagKeys=a", ``)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		r, err := http.NewRequest(method, "http://h"+target, nil)
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		op, e := svc.Operation(r)
		if e != nil {
			svc.WriteError(rec, "r", e)
		} else {
			svc.Serve(context.Background(), rec, r, op, []byte(body), "r")
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %s %s: %d %s", method, target, body, rec.Code, rec.Body)
		}
	})
}
