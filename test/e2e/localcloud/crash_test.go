package localcloud_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/berth-io/berth/test/e2e"
)

func client(t *testing.T, lc *e2e.Localcloud) *ec2sdk.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{filepath.Join(lc.StateDir, "credentials")}),
		config.WithSharedConfigFiles([]string{filepath.Join(lc.StateDir, "config")}),
		config.WithBaseEndpoint(lc.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	return ec2sdk.NewFromConfig(cfg)
}

func nsExists(name string) bool {
	_, err := os.Stat("/var/run/netns/" + name)
	return err == nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// launch creates a VPC, a subnet and one running instance; it returns the
// names of the instance's and the router's namespaces.
func launch(t *testing.T, c *ec2sdk.Client, cidr, subnet string) (inst, router string) {
	t.Helper()
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(subnet), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: s.Subnet.SubnetId})
	if err != nil {
		t.Fatal(err)
	}
	inst, router = "berth-"+*r.Instances[0].InstanceId, "berth-"+*v.Vpc.VpcId
	waitUntil(t, "instance namespace", func() bool { return nsExists(inst) })
	return inst, router
}

// TestCrashRecovery kills localcloud with SIGKILL: a restart on the same
// state rebuilds the instance's datapath, any other localcloud sweeps the
// leftovers of a run whose state is gone, and a clean shutdown leaves
// nothing behind.
func TestCrashRecovery(t *testing.T) {
	e2e.Require(t, os.Geteuid() == 0, "the datapath needs root")
	flags := []string{"--datapath=on", "--instance-start-delay=0s", "--attach-delay-min=50ms", "--attach-delay-max=100ms"}

	// 1. Crash and restart on the same state: recovered.
	state := t.TempDir()
	lc := e2e.StartLocalcloud(t, state, flags...)
	inst, router := launch(t, client(t, lc), "10.91.0.0/16", "10.91.1.0/24")
	lc.Kill()
	if !nsExists(inst) || !nsExists(router) {
		t.Fatal("a SIGKILL cannot clean up; the namespaces should still be there")
	}
	lc = e2e.StartLocalcloud(t, state, flags...)
	waitUntil(t, "instance namespace rebuilt", func() bool { return nsExists(inst) && nsExists(router) })

	// 2. Crash a run whose state then disappears: another localcloud sweeps it.
	orphanState := t.TempDir()
	orphan := e2e.StartLocalcloud(t, orphanState, flags...)
	oc := client(t, orphan)
	oInst, oRouter := launch(t, oc, "10.92.0.0/16", "10.92.1.0/24")
	ctx := context.Background()
	vol, err := oc.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "volume", func() bool {
		_, err := oc.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: vol.VolumeId, InstanceId: aws.String(oInst[len("berth-"):]), Device: aws.String("/dev/xvdba")})
		return err == nil
	})
	link := "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(*vol.VolumeId, "-", "")
	waitUntil(t, "device link", func() bool { _, err := os.Stat(link); return err == nil })
	loopDev, _ := filepath.EvalSymlinks(link)
	orphan.Kill()
	if err := os.RemoveAll(orphanState); err != nil {
		t.Fatal(err)
	}
	other := e2e.StartLocalcloud(t, t.TempDir(), flags...)
	if nsExists(oInst) || nsExists(oRouter) {
		t.Fatalf("leftovers of the crashed run survive the next start: %s %s", oInst, oRouter)
	}
	if !nsExists(inst) {
		t.Fatal("the sweep removed a live run's namespace")
	}
	if _, err := os.Lstat(link); err == nil {
		t.Fatalf("device link %s of the crashed run survives", link)
	}
	if b, err := os.ReadFile("/sys/block/" + filepath.Base(loopDev) + "/loop/backing_file"); err == nil && strings.Contains(string(b), orphanState) {
		t.Fatalf("loop device %s of the crashed run still bound to %s", loopDev, b)
	}
	other.Stop()

	// 3. A clean shutdown leaves nothing.
	lc.Stop()
	if nsExists(inst) || nsExists(router) {
		t.Fatal("namespaces left after shutdown")
	}
}
