package cloudnode

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/berth-io/berth/test/e2e"
)

func TestInstanceID(t *testing.T) {
	for _, tc := range []struct {
		providerID, want string
		wantErr          bool
	}{
		{"aws:///us-west-2a/i-abc", "i-abc", false},
		{"aws:///us-west-2a/i-0123456789abcdef0", "i-0123456789abcdef0", false},
		{"aws://i-abc", "i-abc", false},
		{"gce://x/y", "", true},
		{"gce:///us-west-2a/i-abc", "", true},
		{"aws:///us-west-2a/", "", true},
		{"aws:///us-west-2a/i-", "", true},
		{"aws:///us-west-2a/vol-abc", "", true},
		{"aws://", "", true},
		{"i-abc", "", true},
		{"", "", true},
	} {
		got, err := InstanceID(tc.providerID)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("InstanceID(%q) = %q, %v; want %q, error %v", tc.providerID, got, err, tc.want, tc.wantErr)
		}
	}
}

func node(name, providerID string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{ProviderID: providerID}}
}

// TestProviderLocalcloud answers the node controllers' questions for an
// instance of a real localcloud EC2 through its life.
func TestProviderLocalcloud(t *testing.T) {
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=off", "--instance-start-delay=0s")
	c := lc.EC2(t)
	ctx := context.Background()

	// No subnet: the default VPC's default subnet of the zone.
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: ec2types.InstanceTypeM5Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), Placement: &ec2types.Placement{AvailabilityZone: aws.String("us-west-2a")}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	describe := func() ec2types.Instance {
		t.Helper()
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
			t.Fatalf("DescribeInstances %s: %+v", id, out.Reservations)
		}
		return out.Reservations[0].Instances[0]
	}
	e2e.WaitFor(t, id+" running", 10*time.Second, func() bool {
		return describe().State.Name == ec2types.InstanceStateNameRunning
	})
	inst := describe()
	zone := aws.ToString(inst.Placement.AvailabilityZone)
	ip, dns := aws.ToString(inst.PrivateIpAddress), aws.ToString(inst.PrivateDnsName)
	if zone != "us-west-2a" || ip == "" || dns == "" {
		t.Fatalf("instance %s: zone %q, private IP %q, private DNS name %q", id, zone, ip, dns)
	}

	p := &Provider{EC2: c, Region: "us-west-2"}
	if i2, ok := p.InstancesV2(); !ok || i2 == nil {
		t.Fatal("InstancesV2 not supported")
	}
	n := node(dns, "aws:///"+zone+"/"+id)

	md, err := p.InstanceMetadata(ctx, n)
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	if md.ProviderID != "aws:///us-west-2a/"+id || md.InstanceType != "m5.large" || md.Zone != "us-west-2a" || md.Region != "us-west-2" {
		t.Errorf("InstanceMetadata = provider ID %q, type %q, zone %q, region %q; want aws:///us-west-2a/%s, m5.large, us-west-2a, us-west-2",
			md.ProviderID, md.InstanceType, md.Zone, md.Region, id)
	}
	// localcloud gives no public address: exactly these three.
	wantAddrs := []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}, {Type: v1.NodeInternalDNS, Address: dns}, {Type: v1.NodeHostName, Address: dns}}
	if !slices.Equal(md.NodeAddresses, wantAddrs) {
		t.Errorf("NodeAddresses = %v, want %v", md.NodeAddresses, wantAddrs)
	}

	// The short provider ID form finds the same instance, and the region
	// comes from the zone when the provider has none.
	md2, err := (&Provider{EC2: c}).InstanceMetadata(ctx, node(dns, "aws://"+id))
	if err != nil {
		t.Fatalf("InstanceMetadata (aws://%s, no region): %v", id, err)
	}
	if md2.ProviderID != md.ProviderID || md2.Region != "us-west-2" || md2.Zone != "us-west-2a" {
		t.Errorf("InstanceMetadata (aws://%s, no region) = %+v", id, md2)
	}

	if ok, err := p.InstanceExists(ctx, n); err != nil || !ok {
		t.Errorf("InstanceExists of a running instance = %v, %v; want true", ok, err)
	}
	if down, err := p.InstanceShutdown(ctx, n); err != nil || down {
		t.Errorf("InstanceShutdown of a running instance = %v, %v; want false", down, err)
	}
	// localcloud has no StopInstances: TestInstanceShutdownStates covers
	// the stopped state.

	// An instance EC2 does not know.
	unknown := node("gone", "aws:///us-west-2a/i-0123456789abcdef0")
	if ok, err := p.InstanceExists(ctx, unknown); err != nil || ok {
		t.Errorf("InstanceExists of an unknown instance = %v, %v; want false, nil", ok, err)
	}
	if down, err := p.InstanceShutdown(ctx, unknown); err != nil || down {
		t.Errorf("InstanceShutdown of an unknown instance = %v, %v; want false, nil", down, err)
	}
	if md, err := p.InstanceMetadata(ctx, unknown); !errors.Is(err, cloudprovider.InstanceNotFound) {
		t.Errorf("InstanceMetadata of an unknown instance = %+v, %v; want %v", md, err, cloudprovider.InstanceNotFound)
	}

	// No or a foreign provider ID: errors, never "does not exist" (the
	// lifecycle controller would delete the Node).
	for _, bad := range []*v1.Node{node("new", ""), node("gce", "gce://project/zone/vm")} {
		if ok, err := p.InstanceExists(ctx, bad); err == nil {
			t.Errorf("InstanceExists of node %s (provider ID %q) = %v, nil; want an error", bad.Name, bad.Spec.ProviderID, ok)
		}
		if _, err := p.InstanceShutdown(ctx, bad); err == nil {
			t.Errorf("InstanceShutdown of node %s (provider ID %q): no error", bad.Name, bad.Spec.ProviderID)
		}
		md, err := p.InstanceMetadata(ctx, bad)
		if err == nil || errors.Is(err, cloudprovider.InstanceNotFound) {
			t.Errorf("InstanceMetadata of node %s (provider ID %q) = %+v, %v; want an error other than InstanceNotFound", bad.Name, bad.Spec.ProviderID, md, err)
		}
	}

	// Terminated: shutting-down still exists, terminated does not (EC2
	// keeps describing it for a while).
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	e2e.WaitFor(t, id+" terminated", 10*time.Second, func() bool {
		return describe().State.Name == ec2types.InstanceStateNameTerminated
	})
	if ok, err := p.InstanceExists(ctx, n); err != nil || ok {
		t.Errorf("InstanceExists of a terminated instance = %v, %v; want false, nil", ok, err)
	}
	if down, err := p.InstanceShutdown(ctx, n); err != nil || down {
		t.Errorf("InstanceShutdown of a terminated instance = %v, %v; want false, nil", down, err)
	}

	// EC2 refuses the call (credentials it does not know): its error, not
	// "does not exist".
	denied := &Provider{Region: "us-west-2", EC2: ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(lc.Endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIAUNKNOWNUNKNOWN00", SecretAccessKey: "wrong"}, nil
		})})}
	var apiErr smithy.APIError
	if ok, err := denied.InstanceExists(ctx, n); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AuthFailure" {
		t.Errorf("InstanceExists with unknown credentials = %v, %v; want the AuthFailure error", ok, err)
	}
	if md, err := denied.InstanceMetadata(ctx, unknown); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AuthFailure" {
		t.Errorf("InstanceMetadata with unknown credentials = %+v, %v; want the AuthFailure error", md, err)
	}

	// EC2 unreachable: an error, not "does not exist".
	lc.Stop()
	if ok, err := p.InstanceExists(ctx, n); err == nil {
		t.Errorf("InstanceExists with EC2 down = %v, nil; want an error", ok)
	}
	if md, err := p.InstanceMetadata(ctx, n); err == nil || errors.Is(err, cloudprovider.InstanceNotFound) {
		t.Errorf("InstanceMetadata with EC2 down = %+v, %v; want an error other than InstanceNotFound", md, err)
	}
}

// stateEC2 describes one instance in a fixed state, for the states
// localcloud cannot put an instance in (it has no StopInstances).
type stateEC2 struct {
	id    string
	state ec2types.InstanceStateName
}

func (s stateEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if !slices.Equal(in.InstanceIds, []string{s.id}) {
		return nil, errors.New("unexpected DescribeInstances of " + strings.Join(in.InstanceIds, ","))
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{
		{InstanceId: aws.String(s.id), State: &ec2types.InstanceState{Name: s.state}},
	}}}}, nil
}

func TestInstanceShutdownStates(t *testing.T) {
	const id = "i-0a1b2c3d4e5f60718"
	n := node("n", "aws:///us-west-2b/"+id)
	for _, tc := range []struct {
		state          ec2types.InstanceStateName
		exists, shutdn bool
	}{
		{ec2types.InstanceStateNamePending, true, false},
		{ec2types.InstanceStateNameRunning, true, false},
		{ec2types.InstanceStateNameStopping, true, false},
		{ec2types.InstanceStateNameStopped, true, true},
		{ec2types.InstanceStateNameShuttingDown, true, false},
		{ec2types.InstanceStateNameTerminated, false, false},
	} {
		p := &Provider{EC2: stateEC2{id, tc.state}, Region: "us-west-2"}
		down, err := p.InstanceShutdown(context.Background(), n)
		if err != nil || down != tc.shutdn {
			t.Errorf("InstanceShutdown of a %s instance = %v, %v; want %v", tc.state, down, err, tc.shutdn)
		}
		ok, err := p.InstanceExists(context.Background(), n)
		if err != nil || ok != tc.exists {
			t.Errorf("InstanceExists of a %s instance = %v, %v; want %v", tc.state, ok, err, tc.exists)
		}
	}
}
