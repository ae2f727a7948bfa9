package cloud

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeIMDS map[string]string

func (f fakeIMDS) GetMetadata(_ context.Context, in *imds.GetMetadataInput, _ ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	v, ok := f[in.Path]
	if !ok {
		return nil, &notFound{}
	}
	return &imds.GetMetadataOutput{Content: io.NopCloser(strings.NewReader(v))}, nil
}

func (f fakeIMDS) GetRegion(context.Context, *imds.GetRegionInput, ...func(*imds.Options)) (*imds.GetRegionOutput, error) {
	return &imds.GetRegionOutput{Region: "us-west-2"}, nil
}

type notFound struct{}

func (*notFound) Error() string       { return "404" }
func (*notFound) HTTPStatusCode() int { return 404 }

// fakeEC2 answers the calls the tests make; the others panic (nil EC2API).
type fakeEC2 struct {
	EC2API
	assignErr error
	deleteErr error
}

func (f *fakeEC2) AssignPrivateIpAddresses(context.Context, *ec2.AssignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error) {
	if f.assignErr != nil {
		return nil, f.assignErr
	}
	return &ec2.AssignPrivateIpAddressesOutput{AssignedPrivateIpAddresses: []types.AssignedPrivateIpAddress{{PrivateIpAddress: aws.String("10.0.1.9")}}}, nil
}

func (f *fakeEC2) DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error) {
	return &ec2.DescribeNetworkInterfacesOutput{NetworkInterfaces: []types.NetworkInterface{{NetworkInterfaceId: aws.String("eni-2")}}}, nil
}

func (f *fakeEC2) DeleteNetworkInterface(context.Context, *ec2.DeleteNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error) {
	return nil, f.deleteErr
}

func newTestAWS(t *testing.T, e EC2API) (*AWS, *prometheus.Registry) {
	t.Helper()
	p := "network/interfaces/macs/0a:00:00:00:00:01/"
	md := fakeIMDS{"instance-id": "i-1", "instance-type": "m5.large", "placement/availability-zone": "us-west-2a",
		"mac": "0a:00:00:00:00:01", p + "interface-id": "eni-1", p + "subnet-id": "subnet-1", p + "vpc-id": "vpc-1",
		"local-ipv4": "10.0.0.10", p + "subnet-ipv4-cidr-block": "10.0.0.0/16", p + "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
		p + "security-group-ids": "sg-1"}
	reg := prometheus.NewRegistry()
	c, err := New(context.Background(), e, md, "us-west-2", slog.New(slog.DiscardHandler), NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func TestAPIErrorMetrics(t *testing.T) {
	f := &fakeEC2{}
	c, reg := newTestAWS(t, f)
	if _, err := c.AssignIPs(context.Background(), "eni-1", 1); err != nil {
		t.Fatal(err)
	}
	f.assignErr = &smithy.GenericAPIError{Code: "InsufficientFreeAddressesInSubnet", Message: "subnet full"}
	_, err := c.AssignIPs(context.Background(), "eni-1", 1)
	if !errors.Is(err, ErrSubnetExhausted) {
		t.Fatalf("AssignIPs: %v, want ErrSubnetExhausted", err)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InsufficientFreeAddressesInSubnet" {
		t.Fatalf("the AWS error is lost behind %v", err)
	}
	exp := `# HELP awscni_aws_api_error_count The number of times AWS API returns an error
# TYPE awscni_aws_api_error_count counter
awscni_aws_api_error_count{api="AssignPrivateIpAddresses",error="InsufficientFreeAddressesInSubnet"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_aws_api_error_count"); err != nil {
		t.Fatal(err)
	}
	// A summary labelled {api, error, status} as the VPC CNI's; the
	// latencies themselves vary, so compare the counts.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "awscni_aws_api_latency_ms" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetSummary() == nil {
				t.Fatalf("awscni_aws_api_latency_ms is a %v, want a summary", mf.GetType())
			}
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if len(l) != 3 {
				t.Fatalf("labels %v, want api, error and status", l)
			}
			counts[l["api"]+" "+l["error"]+" "+l["status"]] = m.GetSummary().GetSampleCount()
		}
	}
	for k, want := range map[string]uint64{
		"AssignPrivateIpAddresses false 200":                              1,
		"AssignPrivateIpAddresses true InsufficientFreeAddressesInSubnet": 1,
	} {
		if counts[k] != want {
			t.Errorf("awscni_aws_api_latency_ms{%s} count %d, want %d (all: %v)", k, counts[k], want, counts)
		}
	}
	if counts["GetMetadata false 200"] == 0 {
		t.Errorf("IMDS reads are not timed: %v", counts)
	}
}

func TestUtilsErrorMetrics(t *testing.T) {
	f := &fakeEC2{deleteErr: &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "not allowed"}}
	c, reg := newTestAWS(t, f)
	err := c.FreeENI(context.Background(), "eni-2")
	if err == nil {
		t.Fatal("FreeENI succeeded")
	}
	exp := `# HELP awscni_aws_utils_error_count The number of errors not handled in awsutils library
# TYPE awscni_aws_utils_error_count counter
awscni_aws_utils_error_count{error="UnauthorizedOperation",fn="FreeENIDeleteErr"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_aws_utils_error_count"); err != nil {
		t.Fatal(err)
	}
}
