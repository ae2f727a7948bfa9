package ec2

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
)

// testConfig has near-instant asynchronous transitions so tests do not wait.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.AttachDelayMin, cfg.AttachDelayMax = 0, 0
	cfg.InstanceStartDelay = 0
	cfg.VolumeCreateDelay = 0
	return cfg
}

// serveEC2 is the Query front-end of Service without authentication; the
// server package adds SigV4, throttling and faults in front of the same call.
func serveEC2(svc *Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, err := url.ParseQuery(string(body))
		if err != nil {
			awsquery.WriteEC2Error(w, "req-1", awserr.BadRequest("MalformedQueryString", "%v", err))
			return
		}
		req := &Request{Action: form.Get("Action"), Params: awsquery.New(form), Account: svc.cfg.Account, RequestID: "req-1"}
		resp, err := svc.Handle(r.Context(), req)
		if err != nil {
			awsquery.WriteEC2Error(w, req.RequestID, awserr.As(err))
			return
		}
		awsquery.WriteEC2(w, req.Action, req.RequestID, resp)
	})
}

// newTestClientWith starts svc behind an httptest server and returns a real
// aws-sdk-go-v2 EC2 client pointed at it (no retries, so errors surface).
func newTestClientWith(t *testing.T, svc *Service) *ec2sdk.Client {
	t.Helper()
	srv := httptest.NewServer(serveEC2(svc))
	t.Cleanup(srv.Close)
	return ec2sdk.New(ec2sdk.Options{
		Region:       "us-west-2",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		// Retry only a connection closed under a finished response (a known
		// race of Go's HTTP client, aws/aws-sdk-go-v2#2737), so API errors
		// still surface on the first attempt.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if errors.Is(err, net.ErrClosed) {
					return aws.TrueTernary
				}
				return aws.FalseTernary
			})}
		}),
	})
}

// newTestClient returns a fresh Service (state in a temp dir) and a real SDK client for it.
func newTestClient(t *testing.T) (*ec2sdk.Client, *Service) {
	t.Helper()
	svc, err := New(testConfig(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go svc.Run(ctx)
	return newTestClientWith(t, svc), svc
}

// testVPC creates a VPC 10.0.0.0/16 and a /24 subnet in us-west-2a.
func testVPC(t *testing.T, c *ec2sdk.Client) (vpcID, subnetID string) {
	t.Helper()
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.0.1.0/24"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	return *v.Vpc.VpcId, *s.Subnet.SubnetId
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
