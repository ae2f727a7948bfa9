package ipamd_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/test/e2e"
)

// TestLeakedENIs: the leaked-ENI cleanup finds what the VPC CNI's finds,
// through aws-sdk-go-v2 against localcloud: available ENIs of the node's
// VPC left by any node (one that was terminated cannot clean up after
// itself), over 5 minutes old; an ENI without a readable createdAt tag is
// tagged now and kept; with CLUSTER_NAME, only that cluster's ENIs, which
// is what ipamd tags its ENIs with.
func TestLeakedENIs(t *testing.T) {
	ctx := context.Background()
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=off", "--instance-start-delay=0s", "--imds-lag=0s",
		"--attach-delay-min=0s", "--attach-delay-max=0s")
	c := lc.EC2(t)
	subnet := func(vpcCIDR, cidr string) (vpc, sub string) {
		v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(vpcCIDR)})
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(cidr), AvailabilityZone: aws.String("us-west-2a")})
		if err != nil {
			t.Fatal(err)
		}
		return *v.Vpc.VpcId, *s.Subnet.SubnetId
	}
	_, sub := subnet("10.81.0.0/16", "10.81.0.0/20")
	_, otherVPCSub := subnet("10.82.0.0/16", "10.82.0.0/20")
	run, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: ec2types.InstanceTypeT3Medium,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(sub)})
	if err != nil {
		t.Fatal(err)
	}
	self := *run.Instances[0].InstanceId

	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	recent := time.Now().UTC().Format(time.RFC3339)
	created := map[string]string{} // name → ENI ID
	mk := func(name, sub, desc string, tags map[string]string) {
		var ts []ec2types.Tag
		for k, v := range tags {
			ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in := &ec2sdk.CreateNetworkInterfaceInput{SubnetId: aws.String(sub), Description: aws.String(desc)}
		if len(ts) > 0 {
			in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: ts}}
		}
		out, err := c.CreateNetworkInterface(ctx, in)
		if err != nil {
			t.Fatalf("create ENI %s: %v", name, err)
		}
		created[name] = *out.NetworkInterface.NetworkInterfaceId
	}
	node := func(id, at string) map[string]string {
		return map[string]string{cloud.InstanceIDTag: id, cloud.CreatedAtTag: at}
	}
	mk("own, old", sub, "aws-K8S-"+self, node(self, old))
	mk("another node's, old", sub, "aws-K8S-i-0dead", node("i-0dead", old))
	mk("another node's, recent", sub, "aws-K8S-i-0dead", node("i-0dead", recent))
	mk("no createdAt", sub, "aws-K8S-i-0dead", map[string]string{cloud.InstanceIDTag: "i-0dead"})
	mk("unreadable createdAt", sub, "aws-K8S-i-0dead", node("i-0dead", "yesterday"))
	mk("no instance tag", sub, "aws-K8S-i-0dead", map[string]string{cloud.CreatedAtTag: old})
	mk("other VPC", otherVPCSub, "aws-K8S-i-0dead", node("i-0dead", old))
	mk("not described by a CNI", sub, "mine", node("i-0dead", old))
	mk("attached", sub, "aws-K8S-"+self, node(self, old))
	mk("cluster prod", sub, "aws-K8S-i-0dead", map[string]string{cloud.InstanceIDTag: "i-0dead", cloud.CreatedAtTag: old, cloud.ClusterNameTag: "prod"})
	mk("cluster dev", sub, "aws-K8S-i-0dead", map[string]string{cloud.InstanceIDTag: "i-0dead", cloud.CreatedAtTag: old, cloud.ClusterNameTag: "dev"})
	if _, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(created["attached"]),
		InstanceId: aws.String(self), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	e2e.WaitFor(t, "attachment", 20*time.Second, func() bool {
		d, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{created["attached"]}})
		return err == nil && d.NetworkInterfaces[0].Status == ec2types.NetworkInterfaceStatusInUse
	})

	resp, err := http.Get(lc.Endpoint + "/_localcloud/imds/" + self)
	if err != nil {
		t.Fatal(err)
	}
	var ep struct{ Endpoint string }
	err = json.NewDecoder(resp.Body).Decode(&ep)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cloud.New(ctx, c, imds.New(imds.Options{Endpoint: ep.Endpoint}), "us-west-2", slog.New(slog.DiscardHandler), cloud.Metrics{})
	if err != nil {
		t.Fatal(err)
	}
	names := func(ids []string) []string {
		var out []string
		for name, id := range created {
			if slices.Contains(ids, id) {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	createdAt := func(name string) string {
		d, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{created[name]}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range d.NetworkInterfaces[0].TagSet {
			if *tg.Key == cloud.CreatedAtTag {
				return *tg.Value
			}
		}
		return ""
	}

	leaked, err := cl.LeakedENIs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"another node's, old", "cluster dev", "cluster prod", "own, old"}
	if got := names(leaked); !slices.Equal(got, want) {
		t.Errorf("leaked ENIs %q, want %q", got, want)
	}
	for _, name := range []string{"no createdAt", "unreadable createdAt"} {
		v := createdAt(name)
		at, err := time.Parse(time.RFC3339, v)
		if err != nil || time.Since(at) > 5*time.Minute {
			t.Errorf("ENI %q: createdAt %q after the cleanup, want the time of the cleanup", name, v)
		}
	}
	if v := createdAt("no instance tag"); v != old {
		t.Errorf("an ENI the cleanup does not own was retagged: %q", v)
	}

	cl.SetClusterName("prod")
	leaked, err = cl.LeakedENIs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(leaked); !slices.Equal(got, []string{"cluster prod"}) {
		t.Errorf("with CLUSTER_NAME=prod: leaked ENIs %q, want only \"cluster prod\"", got)
	}

	// ENIs made with CLUSTER_NAME carry the tags this cleanup looks for.
	eni, err := cl.CreateENI(ctx, cloud.CreateENIRequest{SubnetID: sub, Device: 2, IPs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if eni.Tags[cloud.ClusterNameTag] != "prod" || eni.Tags[cloud.OwnerTag] != cloud.OwnerTagValue || eni.Tags[cloud.InstanceIDTag] != self {
		t.Errorf("ENI made with CLUSTER_NAME=prod has tags %v", eni.Tags)
	}
}
