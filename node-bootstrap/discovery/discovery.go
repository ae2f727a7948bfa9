// Package discovery finds out who the instance is: its identity from IMDSv2
// (bounded, logged retries) and its node name from EC2 DescribeInstances
// (the private DNS name the IAM authenticator maps nodes to), or the
// instance ID when node names are instance IDs.
//
//	d := discovery.New(cfg, log, discovery.Options{NameSource: discovery.PrivateDNSName})
//	node, err := d.Discover(ctx)
package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// NameSource says where the node name comes from.
type NameSource string

const (
	// PrivateDNSName is the EC2 private DNS name (DescribeInstances), as
	// aws-auth's system:node:{{EC2PrivateDNSName}} and EC2_LINUX access
	// entries expect.
	PrivateDNSName NameSource = "private-dns-name"
	// InstanceID names the node after its instance ID: no EC2 call.
	InstanceID NameSource = "instance-id"
)

// ParseNameSource validates a --node-name value.
func ParseNameSource(s string) (NameSource, error) {
	switch NameSource(s) {
	case PrivateDNSName, InstanceID:
		return NameSource(s), nil
	}
	return "", fmt.Errorf("node name source %q: want %s or %s", s, PrivateDNSName, InstanceID)
}

// ErrNoPrivateDNSName is returned when EC2 never reported a private DNS
// name within the wait.
var ErrNoPrivateDNSName = errors.New("instance has no private DNS name")

// Instance is what discovery found.
type Instance struct {
	ID, Type, AvailabilityZone, Region, PrivateIP, AccountID string
	// NodeName is the Kubernetes node name.
	NodeName string
}

// Metadata is the part of the IMDS client discovery uses.
type Metadata interface {
	GetInstanceIdentityDocument(context.Context, *imds.GetInstanceIdentityDocumentInput, ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error)
	GetMetadata(context.Context, *imds.GetMetadataInput, ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
	GetUserData(context.Context, *imds.GetUserDataInput, ...func(*imds.Options)) (*imds.GetUserDataOutput, error)
}

// EC2 is the part of the EC2 API discovery calls.
type EC2 interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

var (
	_ Metadata = (*imds.Client)(nil)
	_ EC2      = (*ec2.Client)(nil)
)

// Options bound the retries.
type Options struct {
	NameSource NameSource
	// IMDSAttempts bounds every IMDS call (default 10); IMDSBackoff is the
	// first pause, doubled up to one second (default 50ms).
	IMDSAttempts int
	IMDSBackoff  time.Duration
	// DNSNameWait bounds the wait for EC2 to report the private DNS name,
	// which is eventually consistent (default 30s).
	DNSNameWait time.Duration
}

func (o *Options) setDefaults() {
	if o.NameSource == "" {
		o.NameSource = PrivateDNSName
	}
	if o.IMDSAttempts <= 0 {
		o.IMDSAttempts = 10
	}
	if o.IMDSBackoff <= 0 {
		o.IMDSBackoff = 50 * time.Millisecond
	}
	if o.DNSNameWait <= 0 {
		o.DNSNameWait = 30 * time.Second
	}
}

// Discoverer asks IMDS and EC2.
type Discoverer struct {
	md   Metadata
	ec2  func(region string) EC2
	log  *slog.Logger
	opts Options
}

// New returns a Discoverer. newEC2 builds an EC2 client for the region IMDS
// reports (it is called only for PrivateDNSName).
func New(md Metadata, newEC2 func(region string) EC2, log *slog.Logger, opts Options) *Discoverer {
	opts.setDefaults()
	return &Discoverer{md: md, ec2: newEC2, log: log.With("phase", "discover"), opts: opts}
}

// NoSDKRetries turns off the IMDS client's own retries: Discoverer
// retries, bounded and logged.
func NoSDKRetries(o *imds.Options) { o.Retryer = aws.NopRetryer{} }

// retry runs fn up to the attempt bound, logging each failure.
func (d *Discoverer) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	pause := d.opts.IMDSBackoff
	var err error
	for attempt := 1; attempt <= d.opts.IMDSAttempts; attempt++ {
		if err = fn(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("imds %s: %w", what, ctx.Err())
		}
		if attempt == d.opts.IMDSAttempts {
			break
		}
		d.log.Warn("imds call failed, retrying", "call", what, "attempt", attempt, "of", d.opts.IMDSAttempts, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("imds %s: %w", what, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
	return fmt.Errorf("imds %s: %d attempts: %w", what, d.opts.IMDSAttempts, err)
}

// Metadata reads one IMDS path with the bounded retries.
func (d *Discoverer) Metadata(ctx context.Context, path string) (string, error) {
	var s string
	err := d.retry(ctx, path, func(ctx context.Context) error {
		out, err := d.md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path}, NoSDKRetries)
		if err != nil {
			return err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(out.Content)
		s = strings.TrimSpace(string(b))
		return err
	})
	return s, err
}

// UserData reads the user data (at most 1 MiB) with the bounded retries.
func (d *Discoverer) UserData(ctx context.Context) ([]byte, error) {
	var b []byte
	err := d.retry(ctx, "user-data", func(ctx context.Context) error {
		out, err := d.md.GetUserData(ctx, &imds.GetUserDataInput{}, NoSDKRetries)
		if err != nil {
			return err
		}
		defer out.Content.Close()
		b, err = io.ReadAll(io.LimitReader(out.Content, 1<<20))
		return err
	})
	return b, err
}

// Identity reads the instance identity document.
func (d *Discoverer) Identity(ctx context.Context) (Instance, error) {
	var in Instance
	err := d.retry(ctx, "instance-identity/document", func(ctx context.Context) error {
		out, err := d.md.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{}, NoSDKRetries)
		if err != nil {
			return err
		}
		doc := out.InstanceIdentityDocument
		in = Instance{ID: doc.InstanceID, Type: doc.InstanceType, AvailabilityZone: doc.AvailabilityZone,
			Region: doc.Region, PrivateIP: doc.PrivateIP, AccountID: doc.AccountID}
		return nil
	})
	if err != nil {
		return in, err
	}
	if in.ID == "" || in.AvailabilityZone == "" || in.Region == "" || in.PrivateIP == "" {
		return in, fmt.Errorf("imds identity document lacks instanceId, availabilityZone, region or privateIp: %+v", in)
	}
	return in, nil
}

// Discover returns the instance with its node name.
func (d *Discoverer) Discover(ctx context.Context) (Instance, error) {
	in, err := d.Identity(ctx)
	if err != nil {
		return in, err
	}
	return d.NodeName(ctx, in)
}

// NodeName fills in the node name of an instance Identity returned.
func (d *Discoverer) NodeName(ctx context.Context, in Instance) (Instance, error) {
	start := time.Now()
	var err error
	switch d.opts.NameSource {
	case InstanceID:
		in.NodeName = in.ID
	default:
		if in.NodeName, err = d.privateDNSName(ctx, in); err != nil {
			return in, err
		}
	}
	d.log.Info("instance discovered", "instance", in.ID, "type", in.Type, "az", in.AvailabilityZone,
		"node", in.NodeName, "nameSource", d.opts.NameSource, "elapsed", time.Since(start).Round(time.Microsecond))
	return in, nil
}

// privateDNSName asks EC2, waiting out its eventual consistency (an
// instance seen before its name is set) up to DNSNameWait.
func (d *Discoverer) privateDNSName(ctx context.Context, in Instance) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.DNSNameWait)
	defer cancel()
	c := d.ec2(in.Region)
	pause := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in.ID}})
		if err == nil {
			for _, r := range out.Reservations {
				for _, i := range r.Instances {
					if aws.ToString(i.InstanceId) == in.ID && aws.ToString(i.PrivateDnsName) != "" {
						return aws.ToString(i.PrivateDnsName), nil
					}
				}
			}
			err = ErrNoPrivateDNSName
		}
		d.log.Warn("ec2 DescribeInstances gave no private DNS name yet", "instance", in.ID, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("node name of %s from ec2 DescribeInstances (waited %s): %w", in.ID, d.opts.DNSNameWait, err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}
