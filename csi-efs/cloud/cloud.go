// Package cloud is the controller's boundary with Amazon EFS, in two
// layers: EFS lists the SDK methods used, and Cloud offers domain
// operations on access points that never expose SDK types. EFS error codes
// become sentinels here, once.
//
//	c, err := cloud.Load(ctx, region, cloud.NewMetrics(reg), log)
//	ap, err := c.CreateAccessPoint(ctx, cloud.AccessPointOptions{FileSystemID: "fs-…", ClientToken: "pvc-…", …})
package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/aws-sdk-go-v2/service/efs/types"
	"github.com/aws/smithy-go"
)

// Sentinels; every EFS error code maps to one of them (or none).
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrLimit         = errors.New("limit exceeded")
	ErrInvalid       = errors.New("invalid request")
	ErrThrottled     = errors.New("throttled")
	ErrBusy          = errors.New("not available yet")
)

// EFS is the part of the EFS API the driver calls.
type EFS interface {
	DescribeFileSystems(ctx context.Context, in *efs.DescribeFileSystemsInput, opts ...func(*efs.Options)) (*efs.DescribeFileSystemsOutput, error)
	DescribeAccessPoints(ctx context.Context, in *efs.DescribeAccessPointsInput, opts ...func(*efs.Options)) (*efs.DescribeAccessPointsOutput, error)
	CreateAccessPoint(ctx context.Context, in *efs.CreateAccessPointInput, opts ...func(*efs.Options)) (*efs.CreateAccessPointOutput, error)
	DeleteAccessPoint(ctx context.Context, in *efs.DeleteAccessPointInput, opts ...func(*efs.Options)) (*efs.DeleteAccessPointOutput, error)
}

var _ EFS = (*efs.Client)(nil)

// AccessPoint is what the driver needs to know about an access point.
type AccessPoint struct {
	ID, FileSystemID, ClientToken string
	// RootPath is the root directory in the file system ("/" by default).
	RootPath string
	// UID and GID are the enforced POSIX identity (-1 when none).
	UID, GID int64
	// Owner and Perms are the root directory's CreationInfo (Perms "" when none).
	OwnerUID, OwnerGID int64
	Perms              string
	Tags               map[string]string
}

// AccessPointOptions describe a new access point.
type AccessPointOptions struct {
	FileSystemID, ClientToken string
	UID, GID                  int64
	RootPath, Perms           string
	Tags                      map[string]string
}

// Cloud is the domain interface the controller uses.
type Cloud interface {
	// FileSystem returns nil when the file system exists, ErrNotFound if not.
	FileSystem(ctx context.Context, fsID string) error
	AccessPoints(ctx context.Context, fsID string) ([]AccessPoint, error)
	AccessPoint(ctx context.Context, apID string) (AccessPoint, error)
	// CreateAccessPoint creates one, or on AccessPointAlreadyExists (the
	// token was used) returns the existing one.
	CreateAccessPoint(ctx context.Context, o AccessPointOptions) (AccessPoint, error)
	DeleteAccessPoint(ctx context.Context, apID string) error
}

type cloud struct {
	efs EFS
	log *slog.Logger
}

var _ Cloud = (*cloud)(nil)

// New wraps an EFS client.
func New(c EFS, log *slog.Logger) Cloud { return &cloud{efs: c, log: log.With("component", "cloud")} }

// Load builds a client from the default AWS config chain (AWS_ENDPOINT_URL,
// IMDS role credentials); region "" means AWS_REGION, else IMDS.
func Load(ctx context.Context, region string, m *Metrics, log *slog.Logger) (Cloud, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	} else {
		// The SDK asks IMDS for the region (after the environment and
		// shared config) only when told to.
		opts = append(opts, config.WithEC2IMDSRegion())
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: set --region, AWS_REGION or run where IMDS answers")
	}
	if m != nil {
		cfg.APIOptions = append(cfg.APIOptions, m.apiOption)
	}
	return New(efs.NewFromConfig(cfg), log), nil
}

// translate maps an EFS error to a sentinel, keeping the original text.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "FileSystemNotFound", "AccessPointNotFound":
			sentinel = ErrNotFound
		case "AccessPointAlreadyExists":
			sentinel = ErrAlreadyExists
		case "AccessPointLimitExceeded":
			sentinel = ErrLimit
		case "BadRequest", "ValidationException":
			sentinel = ErrInvalid
		case "ThrottlingException", "TooManyRequestsException":
			sentinel = ErrThrottled
		case "IncorrectFileSystemLifeCycleState":
			sentinel = ErrBusy
		}
	}
	if sentinel == nil {
		return fmt.Errorf("efs %s: %w", op, err)
	}
	return fmt.Errorf("efs %s: %w: %w", op, sentinel, err)
}

func (c *cloud) FileSystem(ctx context.Context, fsID string) error {
	_, err := c.efs.DescribeFileSystems(ctx, &efs.DescribeFileSystemsInput{FileSystemId: aws.String(fsID)})
	return translate("DescribeFileSystems "+fsID, err)
}

func (c *cloud) AccessPoints(ctx context.Context, fsID string) ([]AccessPoint, error) {
	var out []AccessPoint
	in := &efs.DescribeAccessPointsInput{FileSystemId: aws.String(fsID), MaxResults: aws.Int32(1000)}
	for {
		page, err := c.efs.DescribeAccessPoints(ctx, in)
		if err != nil {
			return nil, translate("DescribeAccessPoints "+fsID, err)
		}
		for _, d := range page.AccessPoints {
			out = append(out, fromSDK(d))
		}
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

func (c *cloud) AccessPoint(ctx context.Context, apID string) (AccessPoint, error) {
	out, err := c.efs.DescribeAccessPoints(ctx, &efs.DescribeAccessPointsInput{AccessPointId: aws.String(apID)})
	if err != nil {
		return AccessPoint{}, translate("DescribeAccessPoints "+apID, err)
	}
	if len(out.AccessPoints) == 0 {
		return AccessPoint{}, fmt.Errorf("access point %s: %w", apID, ErrNotFound)
	}
	return fromSDK(out.AccessPoints[0]), nil
}

func (c *cloud) CreateAccessPoint(ctx context.Context, o AccessPointOptions) (AccessPoint, error) {
	in := &efs.CreateAccessPointInput{
		ClientToken:  aws.String(o.ClientToken),
		FileSystemId: aws.String(o.FileSystemID),
		PosixUser:    &types.PosixUser{Uid: aws.Int64(o.UID), Gid: aws.Int64(o.GID)},
		RootDirectory: &types.RootDirectory{Path: aws.String(o.RootPath), CreationInfo: &types.CreationInfo{
			OwnerUid: aws.Int64(o.UID), OwnerGid: aws.Int64(o.GID), Permissions: aws.String(o.Perms)}},
	}
	for k, v := range o.Tags {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := c.efs.CreateAccessPoint(ctx, in)
	if err == nil {
		return AccessPoint{ID: aws.ToString(out.AccessPointId), FileSystemID: aws.ToString(out.FileSystemId),
			ClientToken: aws.ToString(out.ClientToken), RootPath: rootPath(out.RootDirectory), UID: o.UID, GID: o.GID,
			OwnerUID: o.UID, OwnerGID: o.GID, Perms: o.Perms, Tags: tagMap(out.Tags)}, nil
	}
	var exists *types.AccessPointAlreadyExists
	if errors.As(err, &exists) && aws.ToString(exists.AccessPointId) != "" {
		// A retry after a lost response: the token already made one.
		c.log.Info("access point exists for token", "token", o.ClientToken, "accessPoint", aws.ToString(exists.AccessPointId))
		return c.AccessPoint(ctx, aws.ToString(exists.AccessPointId))
	}
	return AccessPoint{}, translate("CreateAccessPoint "+o.FileSystemID, err)
}

func (c *cloud) DeleteAccessPoint(ctx context.Context, apID string) error {
	_, err := c.efs.DeleteAccessPoint(ctx, &efs.DeleteAccessPointInput{AccessPointId: aws.String(apID)})
	return translate("DeleteAccessPoint "+apID, err)
}

func rootPath(r *types.RootDirectory) string {
	if r == nil || aws.ToString(r.Path) == "" {
		return "/"
	}
	return aws.ToString(r.Path)
}

func tagMap(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func fromSDK(d types.AccessPointDescription) AccessPoint {
	ap := AccessPoint{ID: aws.ToString(d.AccessPointId), FileSystemID: aws.ToString(d.FileSystemId), ClientToken: aws.ToString(d.ClientToken),
		RootPath: rootPath(d.RootDirectory), UID: -1, GID: -1, OwnerUID: -1, OwnerGID: -1, Tags: tagMap(d.Tags)}
	if u := d.PosixUser; u != nil {
		ap.UID, ap.GID = aws.ToInt64(u.Uid), aws.ToInt64(u.Gid)
	}
	if d.RootDirectory != nil && d.RootDirectory.CreationInfo != nil {
		ci := d.RootDirectory.CreationInfo
		ap.OwnerUID, ap.OwnerGID, ap.Perms = aws.ToInt64(ci.OwnerUid), aws.ToInt64(ci.OwnerGid), aws.ToString(ci.Permissions)
	}
	return ap
}
