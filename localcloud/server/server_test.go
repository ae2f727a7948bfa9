package server

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

type testCloud struct {
	srv      *Server
	endpoint string
	stop     func()
}

func startCloud(t *testing.T, dir string) *testCloud {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.EC2.AttachDelayMin, cfg.EC2.AttachDelayMax, cfg.EC2.InstanceStartDelay, cfg.EC2.VolumeCreateDelay = 0, 0, 0, 0
	cfg.IMDSLag = 0
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &testCloud{srv: srv, endpoint: "http://" + ln.Addr().String(), stop: stop}
}

// sdkConfig loads the SDK the way node components do: default chain,
// shared credentials/config written by localcloud, endpoint override.
func (c *testCloud) sdkConfig(t *testing.T) aws.Config {
	t.Helper()
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", c.srv.cfg.StateDir+"/credentials")
	t.Setenv("AWS_CONFIG_FILE", c.srv.cfg.StateDir+"/config")
	t.Setenv("AWS_ENDPOINT_URL", c.endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_PROFILE", "")
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestDefaultChainAndIdentity(t *testing.T) {
	c := startCloud(t, t.TempDir())
	cfg := c.sdkConfig(t)
	if cfg.Region != "us-west-2" {
		t.Fatalf("region from localcloud's config file = %q", cfg.Region)
	}
	who, err := sts.NewFromConfig(cfg).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *who.Account != "000000000000" || *who.Arn != "arn:aws:iam::000000000000:root" {
		t.Fatalf("identity %s %s", *who.Account, *who.Arn)
	}
	vpcs, err := ec2sdk.NewFromConfig(cfg).DescribeVpcs(context.Background(), &ec2sdk.DescribeVpcsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vpcs.Vpcs) != 1 || !*vpcs.Vpcs[0].IsDefault {
		t.Fatalf("a fresh account has one default VPC, got %+v", vpcs.Vpcs)
	}
}

func TestBadCredentialsRejected(t *testing.T) {
	c := startCloud(t, t.TempDir())
	root := c.srv.IAM.Root()
	for _, tc := range []struct {
		name, id, secret, ec2Code, stsCode string
	}{
		{"unknown key", "AKIAUNKNOWNUNKNOWN00", "whatever", "AuthFailure", "InvalidClientTokenId"},
		{"wrong secret", root.AccessKeyID, "not-the-secret", "SignatureDoesNotMatch", "SignatureDoesNotMatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := aws.Config{Region: "us-west-2", BaseEndpoint: aws.String(c.endpoint),
				Credentials: credentials.NewStaticCredentialsProvider(tc.id, tc.secret, ""), Retryer: func() aws.Retryer { return aws.NopRetryer{} }}
			_, err := ec2sdk.NewFromConfig(cfg).DescribeVpcs(context.Background(), &ec2sdk.DescribeVpcsInput{})
			if got := apiCode(err); got != tc.ec2Code {
				t.Errorf("ec2: %v, want %s", err, tc.ec2Code)
			}
			_, err = sts.NewFromConfig(cfg).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
			if got := apiCode(err); got != tc.stsCode {
				t.Errorf("sts: %v, want %s", err, tc.stsCode)
			}
		})
	}
}

func TestAssumeRoleCredentialsWork(t *testing.T) {
	c := startCloud(t, t.TempDir())
	cfg := c.sdkConfig(t)
	out, err := sts.NewFromConfig(cfg).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::000000000000:role/ci-role"), RoleSessionName: aws.String("ci-session")})
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	role := cfg.Copy()
	role.Credentials = credentials.NewStaticCredentialsProvider(*cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken)
	who, err := sts.NewFromConfig(role).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *who.Arn != "arn:aws:sts::000000000000:assumed-role/ci-role/ci-session" {
		t.Fatalf("assumed identity %s", *who.Arn)
	}
	// The session token is part of the credential: without it the key is refused.
	bad := cfg.Copy()
	bad.Credentials = credentials.NewStaticCredentialsProvider(*cr.AccessKeyId, *cr.SecretAccessKey, "")
	if _, err := sts.NewFromConfig(bad).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}); err == nil {
		t.Fatal("temporary key accepted without its session token")
	}
	_, err = sts.NewFromConfig(cfg).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::111111111111:role/other"), RoleSessionName: aws.String("x1")})
	if apiCode(err) != "AccessDenied" {
		t.Fatalf("cross-account AssumeRole: %v", err)
	}
}

// TestPresignedGetCallerIdentity is what a k8s-aws-v1 token carries: a
// presigned STS URL with the x-k8s-aws-id header signed.
func TestPresignedGetCallerIdentity(t *testing.T) {
	c := startCloud(t, t.TempDir())
	cfg := c.sdkConfig(t)
	ps := sts.NewPresignClient(sts.NewFromConfig(cfg))
	req, err := ps.PresignGetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}, func(o *sts.PresignOptions) {
		o.ClientOptions = append(o.ClientOptions, sts.WithAPIOptions(smithyhttp.AddHeaderValue("x-k8s-aws-id", "demo")))
	})
	if err != nil {
		t.Fatal(err)
	}
	token := "k8s-aws-v1." + base64.RawURLEncoding.EncodeToString([]byte(req.URL))
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, "k8s-aws-v1."))
	get := func(header string) (int, string) {
		hreq, _ := http.NewRequest(http.MethodGet, string(raw), nil)
		if header != "" {
			hreq.Header.Set("x-k8s-aws-id", header)
		}
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("demo"); code != 200 || !strings.Contains(body, "<Arn>arn:aws:iam::000000000000:root</Arn>") {
		t.Fatalf("presigned call: %d %s", code, body)
	}
	if code, body := get("other-cluster"); code != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Fatalf("presigned call for another cluster: %d %s", code, body)
	}
}

func TestThrottlingAndFaultsThroughAdminAPI(t *testing.T) {
	c := startCloud(t, t.TempDir())
	cfg := c.sdkConfig(t)
	client := ec2sdk.NewFromConfig(cfg)
	ctx := context.Background()
	admin := func(method, path, body string) int {
		req, _ := http.NewRequest(method, c.endpoint+"/_localcloud/"+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := admin(http.MethodPut, "throttling", `{"buckets":{"non-mutating":{"capacity":3,"refill":0.001}}}`); code != 204 {
		t.Fatalf("set buckets: %d", code)
	}
	var throttled int
	for i := 0; i < 5; i++ {
		if _, err := client.DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{}); apiCode(err) == "RequestLimitExceeded" {
			throttled++
		}
	}
	if throttled != 2 {
		t.Fatalf("%d of 5 calls throttled with a bucket of 3, want 2", throttled)
	}
	admin(http.MethodPut, "throttling", `{"enabled":false}`)
	if code := admin(http.MethodPut, "faults", `{"ec2:DescribeSubnets":{"errorRate":1,"errorCode":"Unavailable","count":1}}`); code != 204 {
		t.Fatalf("set faults: %d", code)
	}
	if _, err := client.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{}); apiCode(err) != "Unavailable" {
		t.Fatalf("injected fault: %v", err)
	}
	if _, err := client.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{}); err != nil {
		t.Fatalf("fault outlived count 1: %v", err)
	}
	calls, _ := c.srv.Faults.Calls()
	if calls["ec2:DescribeSubnets"] != 2 || calls["ec2:DescribeVpcs"] != 5 {
		t.Fatalf("call counts %v", calls)
	}
	if code := admin(http.MethodPut, "faults", `{"nocolon":{"errorRate":2}}`); code != 400 {
		t.Fatalf("bad fault accepted: %d", code)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := startCloud(t, dir)
	cfg := c.sdkConfig(t)
	ctx := context.Background()
	v, err := ec2sdk.NewFromConfig(cfg).CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	key := c.srv.IAM.Root().AccessKeyID
	c.stop()

	c2 := startCloud(t, dir)
	if c2.srv.IAM.Root().AccessKeyID != key {
		t.Fatal("root keys changed across restart")
	}
	cfg2 := c2.sdkConfig(t)
	out, err := ec2sdk.NewFromConfig(cfg2).DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{VpcIds: []string{*v.Vpc.VpcId}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Vpcs) != 1 || *out.Vpcs[0].CidrBlock != "10.9.0.0/16" {
		t.Fatalf("vpc after restart: %+v", out.Vpcs)
	}
}

func TestMalformedRequestsGetAWSErrors(t *testing.T) {
	c := startCloud(t, t.TempDir())
	for _, tc := range []struct {
		name, auth, body string
		status           int
		code             string
	}{
		{"no signature", "", "Action=DescribeVpcs&Version=2016-11-15", 403, "MissingAuthenticationToken"},
		{"garbage authorization", "AWS4-HMAC-SHA256 garbage", "Action=DescribeVpcs&Version=2016-11-15", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, c.endpoint+"/", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 || (tc.status != 0 && resp.StatusCode/100 != tc.status/100) {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if tc.code != "" && !strings.Contains(string(b), "<Code>"+tc.code+"</Code>") {
				t.Fatalf("want %s: %s", tc.code, b)
			}
		})
	}
	_ = time.Second
}

func TestAdminSubnetExhaustionAndIMDSEndpoint(t *testing.T) {
	c := startCloud(t, t.TempDir())
	cfg := c.sdkConfig(t)
	ctx := context.Background()
	client := ec2sdk.NewFromConfig(cfg)
	subs, err := client.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	sub := *subs.Subnets[0].SubnetId
	put := func(path, body string) int {
		req, _ := http.NewRequest(http.MethodPut, c.endpoint+"/_localcloud/"+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("subnets/"+sub+"/exhaustion", `{"exhausted":true}`); code != 204 {
		t.Fatalf("exhaust: %d", code)
	}
	_, err = client.CreateNetworkInterface(ctx, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &sub})
	if apiCode(err) != "InsufficientFreeAddressesInSubnet" {
		t.Fatalf("exhausted subnet: %v", err)
	}
	put("subnets/"+sub+"/exhaustion", `{"exhausted":false}`)
	run, err := client.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &sub})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(c.endpoint + "/_localcloud/imds/" + *run.Instances[0].InstanceId)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"endpoint":"http://127.0.0.1:`) {
		t.Fatalf("imds endpoint: %d %s", resp.StatusCode, b)
	}
	if code := put("subnets/subnet-nope/exhaustion", `{"exhausted":true}`); code != 404 {
		t.Fatalf("unknown subnet: %d", code)
	}
	if code := put("imds", `{"lagMs":-1}`); code != 400 {
		t.Fatalf("negative lag: %d", code)
	}
}
