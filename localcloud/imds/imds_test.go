package imds

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/berth-io/berth/localcloud/awsquery"
	"github.com/berth-io/berth/localcloud/ec2"
	"github.com/berth-io/berth/localcloud/iam"
)

type env struct {
	vpc string
	ec2 *ec2.Service
	iam *iam.Store
	srv *Server
	eps *Endpoints
	sub string
	t   *testing.T
}

func newEnv(t *testing.T, lag time.Duration) *env {
	t.Helper()
	dir := t.TempDir()
	cfg := ec2.DefaultConfig()
	cfg.AttachDelayMin, cfg.AttachDelayMax, cfg.InstanceStartDelay, cfg.VolumeCreateDelay = 0, 0, 0, 0
	log := slog.New(slog.DiscardHandler)
	e2, err := ec2.New(cfg, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	store, err := iam.Open(dir, "000000000000", "us-west-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Lag: lag, Region: "us-west-2"}, e2, store, log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Run(ctx)
	eps := NewEndpoints(srv, log)
	t.Cleanup(eps.Close)
	en := &env{ec2: e2, iam: store, srv: srv, eps: eps, t: t}
	vpc := en.call("CreateVpc", "CidrBlock", "10.0.0.0/16")
	vpcID := between(vpc, "<vpcId>", "</vpcId>")
	sub := en.call("CreateSubnet", "VpcId", vpcID, "CidrBlock", "10.0.1.0/24", "AvailabilityZone", "us-west-2b")
	en.sub, en.vpc = between(sub, "<subnetId>", "</subnetId>"), vpcID
	return en
}

// call runs an EC2 action and returns its XML response.
func (e *env) call(action string, kv ...string) string {
	e.t.Helper()
	v := url.Values{"Action": {action}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	resp, err := e.ec2.Handle(context.Background(), &ec2.Request{Action: action, Params: awsquery.New(v), Account: "000000000000"})
	if err != nil {
		e.t.Fatalf("%s: %v", action, err)
	}
	rec := &recorder{h: http.Header{}}
	awsquery.WriteEC2(rec, action, "r", resp)
	return rec.b.String()
}

type recorder struct {
	h http.Header
	b strings.Builder
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.b.Write(b) }
func (r *recorder) WriteHeader(int)             {}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func (e *env) run(kv ...string) string {
	e.t.Helper()
	args := append([]string{"ImageId", "ami-0abc", "MinCount", "1", "MaxCount", "1", "InstanceType", "m5.large", "SubnetId", e.sub}, kv...)
	out := e.call("RunInstances", args...)
	return between(out, "<instanceId>", "</instanceId>")
}

func (e *env) client(id string) *sdkimds.Client {
	e.t.Helper()
	ep, err := e.eps.Endpoint(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sdkimds.New(sdkimds.Options{Endpoint: ep})
}

func get(t *testing.T, c *sdkimds.Client, path string) string {
	t.Helper()
	out, err := c.GetMetadata(context.Background(), &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		t.Fatalf("GetMetadata %s: %v", path, err)
	}
	defer out.Content.Close()
	b, _ := io.ReadAll(out.Content)
	return string(b)
}

func TestMetadataThroughSDK(t *testing.T) {
	e := newEnv(t, 0)
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho node\n"))
	id := e.run("UserData", ud, "IamInstanceProfile.Arn", "arn:aws:iam::000000000000:instance-profile/eks-node")
	c := e.client(id)
	if got := get(t, c, "instance-id"); got != id {
		t.Fatalf("instance-id %q", got)
	}
	if got := get(t, c, "instance-type"); got != "m5.large" {
		t.Fatalf("instance-type %q", got)
	}
	if got := get(t, c, "placement/availability-zone"); got != "us-west-2b" {
		t.Fatalf("az %q", got)
	}
	mac := get(t, c, "mac")
	macs := get(t, c, "network/interfaces/macs/")
	if macs != mac+"/" {
		t.Fatalf("macs listing %q, mac %q", macs, mac)
	}
	ip := get(t, c, "local-ipv4")
	if got := get(t, c, "network/interfaces/macs/"+mac+"/local-ipv4s"); got != ip {
		t.Fatalf("local-ipv4s %q, local-ipv4 %q", got, ip)
	}
	for _, leaf := range []string{"device-number", "interface-id", "subnet-id", "vpc-id", "subnet-ipv4-cidr-block", "vpc-ipv4-cidr-blocks", "security-group-ids", "network-card"} {
		if get(t, c, "network/interfaces/macs/"+mac+"/"+leaf) == "" {
			t.Errorf("%s empty", leaf)
		}
	}
	// A block associated later is listed too (ipamd re-reads it to keep
	// traffic to it off SNAT); vpc-ipv4-cidr-block stays the primary.
	if got := get(t, c, "network/interfaces/macs/"+mac+"/vpc-ipv4-cidr-blocks"); got != "10.0.0.0/16" {
		t.Fatalf("vpc-ipv4-cidr-blocks %q", got)
	}
	e.call("AssociateVpcCidrBlock", "VpcId", e.vpc, "CidrBlock", "100.64.0.0/16")
	deadline := time.Now().Add(5 * time.Second)
	for get(t, c, "network/interfaces/macs/"+mac+"/vpc-ipv4-cidr-blocks") != "10.0.0.0/16\n100.64.0.0/16" {
		if time.Now().After(deadline) {
			t.Fatalf("vpc-ipv4-cidr-blocks after AssociateVpcCidrBlock: %q", get(t, c, "network/interfaces/macs/"+mac+"/vpc-ipv4-cidr-blocks"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := get(t, c, "network/interfaces/macs/"+mac+"/vpc-ipv4-cidr-block"); got != "10.0.0.0/16" {
		t.Fatalf("vpc-ipv4-cidr-block %q, want the primary", got)
	}
	if _, err := c.GetMetadata(context.Background(), &sdkimds.GetMetadataInput{Path: "network/interfaces/macs/" + mac + "/ipv4-prefix"}); err == nil {
		t.Error("ipv4-prefix answered without prefixes (AWS answers 404)")
	}
	udOut, err := c.GetUserData(context.Background(), &sdkimds.GetUserDataInput{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(udOut.Content)
	if string(b) != "#!/bin/sh\necho node\n" {
		t.Fatalf("user data %q", b)
	}
	doc, err := c.GetInstanceIdentityDocument(context.Background(), &sdkimds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		t.Fatal(err)
	}
	if doc.InstanceID != id || doc.Region != "us-west-2" || doc.AccountID != "000000000000" || doc.PrivateIP != ip {
		t.Fatalf("identity document %+v", doc.InstanceIdentityDocument)
	}
	info, err := c.GetIAMInfo(context.Background(), &sdkimds.GetIAMInfoInput{})
	if err != nil || info.InstanceProfileArn != "arn:aws:iam::000000000000:instance-profile/eks-node" {
		t.Fatalf("iam info %+v %v", info, err)
	}
	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = c })
	creds, err := prov.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k, ok := e.iam.Lookup(creds.AccessKeyID)
	if !ok || k.SessionToken != creds.SessionToken || !strings.HasSuffix(k.ARN, ":assumed-role/eks-node/"+id) {
		t.Fatalf("role credentials %+v not known to IAM: %+v", creds, k)
	}
}

func TestDefaultNodeRole(t *testing.T) {
	e := newEnv(t, 0)
	id := e.run()
	c := e.client(id)
	if got := get(t, c, "iam/security-credentials/"); got != iam.DefaultNodeRole {
		t.Fatalf("role listing %q", got)
	}
}

func TestTokenRules(t *testing.T) {
	e := newEnv(t, 0)
	id := e.run()
	opt := e.run("MetadataOptions.HttpTokens", "optional")
	ep, _ := e.eps.Endpoint(context.Background(), id)
	epOpt, _ := e.eps.Endpoint(context.Background(), opt)
	do := func(method, base, path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", ep, "/latest/meta-data/instance-id", nil); code != 401 {
		t.Fatalf("IMDSv1 on a tokens-required instance: %d", code)
	}
	if code, body := do("GET", epOpt, "/latest/meta-data/instance-id", nil); code != 200 || body != opt {
		t.Fatalf("IMDSv1 on a tokens-optional instance: %d %s", code, body)
	}
	for _, ttl := range []string{"0", "21601", "x", ""} {
		if code, _ := do("PUT", ep, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": ttl}); code != 400 {
			t.Errorf("ttl %q: %d", ttl, code)
		}
	}
	if code, _ := do("PUT", ep, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"}); code != 403 {
		t.Fatalf("token through a proxy: %d", code)
	}
	code, tok := do("PUT", ep, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "1"})
	if code != 200 {
		t.Fatal(code)
	}
	if code, _ := do("GET", epOpt, "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 401 {
		t.Fatalf("another instance's token accepted: %d", code)
	}
	if code, _ := do("GET", ep, "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 200 {
		t.Fatalf("fresh token: %d", code)
	}
	time.Sleep(1100 * time.Millisecond)
	if code, _ := do("GET", ep, "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 401 {
		t.Fatalf("expired token: %d", code)
	}
	if code, _ := do("POST", ep, "/latest/meta-data/", nil); code != 405 {
		t.Fatalf("POST: %d", code)
	}
}

func TestMetadataLags(t *testing.T) {
	e := newEnv(t, 400*time.Millisecond)
	id := e.run()
	c := e.client(id)
	mac := get(t, c, "mac")
	eni := get(t, c, "network/interfaces/macs/"+mac+"/interface-id")
	out := e.call("AssignPrivateIpAddresses", "NetworkInterfaceId", eni, "SecondaryPrivateIpAddressCount", "1")
	added := between(out, "<privateIpAddress>", "</privateIpAddress>")
	// Addresses are random in the subnet, so compare whole lines: 10.0.1.12
	// is a substring of 10.0.1.123.
	listed := func() bool {
		return slices.Contains(strings.Split(get(t, c, "network/interfaces/macs/"+mac+"/local-ipv4s"), "\n"), added)
	}
	if listed() {
		t.Fatal("new address visible before the lag")
	}
	deadline := time.Now().Add(3 * time.Second)
	for !listed() {
		if time.Now().After(deadline) {
			t.Fatal("new address never appeared")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.call("TerminateInstances", "InstanceId.1", id)
	if _, err := c.GetMetadata(context.Background(), &sdkimds.GetMetadataInput{Path: "instance-id"}); err == nil {
		t.Fatal("terminated instance still answers")
	}
}
