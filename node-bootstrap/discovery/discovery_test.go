package discovery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// flakyIMDS fails its first `fail` identity calls.
type flakyIMDS struct {
	Metadata
	fail, calls int
}

func (f *flakyIMDS) GetInstanceIdentityDocument(context.Context, *imds.GetInstanceIdentityDocumentInput, ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error) {
	f.calls++
	if f.calls <= f.fail {
		return nil, errors.New("connection refused")
	}
	out := &imds.GetInstanceIdentityDocumentOutput{}
	out.InstanceID, out.InstanceType, out.AvailabilityZone, out.Region, out.PrivateIP = "i-0abc", "m5.large", "us-west-2a", "us-west-2", "10.0.1.7"
	return out, nil
}

// lateDNS reports the private DNS name from its `after`th call on.
type lateDNS struct{ after, calls int }

func (l *lateDNS) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	l.calls++
	i := ec2types.Instance{InstanceId: aws.String(in.InstanceIds[0])}
	if l.calls >= l.after {
		i.PrivateDnsName = aws.String("ip-10-0-1-7.us-west-2.compute.internal")
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{i}}}}, nil
}

func TestIMDSRetriesAreBoundedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	md := &flakyIMDS{fail: 2}
	d := New(md, nil, log, Options{NameSource: InstanceID, IMDSAttempts: 3, IMDSBackoff: time.Millisecond})
	in, err := d.Discover(context.Background())
	if err != nil || in.NodeName != "i-0abc" || md.calls != 3 {
		t.Fatalf("discover after 2 failures: %+v %v (%d calls)", in, err, md.calls)
	}
	if n := strings.Count(logs.String(), "imds call failed, retrying"); n != 2 {
		t.Fatalf("%d retries logged, want 2:\n%s", n, logs.String())
	}
	md = &flakyIMDS{fail: 100}
	d = New(md, nil, log, Options{NameSource: InstanceID, IMDSAttempts: 4, IMDSBackoff: time.Millisecond})
	if _, err := d.Discover(context.Background()); err == nil || md.calls != 4 || !strings.Contains(err.Error(), "4 attempts") {
		t.Fatalf("unreachable IMDS: %v after %d calls", err, md.calls)
	}
}

func TestPrivateDNSNameWaitsForEC2(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	c := &lateDNS{after: 2}
	d := New(&flakyIMDS{}, func(region string) EC2 {
		if region != "us-west-2" {
			t.Errorf("EC2 client for region %q", region)
		}
		return c
	}, log, Options{})
	in, err := d.Discover(context.Background())
	if err != nil || in.NodeName != "ip-10-0-1-7.us-west-2.compute.internal" || c.calls != 2 {
		t.Fatalf("node name %+v %v (%d calls)", in, err, c.calls)
	}
	d = New(&flakyIMDS{}, func(string) EC2 { return &lateDNS{after: 1 << 30} }, log, Options{DNSNameWait: 300 * time.Millisecond})
	if _, err := d.Discover(context.Background()); !errors.Is(err, ErrNoPrivateDNSName) {
		t.Fatalf("no DNS name ever: %v", err)
	}
	if _, err := ParseNameSource("hostname"); err == nil {
		t.Fatal("bad --node-name accepted")
	}
}
