// Package csiefs_test runs berth-csi-efs inside localcloud instances in
// local mode (access point directories of localcloud's EFS bind-mounted,
// as there is no NFS here) and drives it with csi-sanity and a CSI gRPC
// client as kubelet and the external-provisioner do.
package csiefs_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	efssdk "github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-io/berth/test/e2e"
)

type cluster struct {
	lc   *e2e.Localcloud
	ec2  *ec2sdk.Client
	efs  *efssdk.Client
	sub  string
	dir  string
	fsID string
}

// newCluster starts localcloud with its datapath, a subnet and one EFS
// file system, and removes every mount left under the test's directories
// when the test ends.
func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	e2e.Require(tb, os.Geteuid() == 0, "needs root (mounts, namespaces)")
	_, err := exec.LookPath("nsenter")
	e2e.Require(tb, err == nil, "nsenter not installed (make deps)")
	dir := tb.TempDir()
	lc := e2e.StartLocalcloud(tb, filepath.Join(dir, "localcloud"), "--datapath=on", "--instance-start-delay=0s", "--imds-lag=0s")
	tb.Cleanup(func() { unmountUnder(tb, dir) })
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{filepath.Join(lc.StateDir, "credentials")}),
		config.WithSharedConfigFiles([]string{filepath.Join(lc.StateDir, "config")}),
		config.WithBaseEndpoint(lc.Endpoint))
	if err != nil {
		tb.Fatal(err)
	}
	cl := &cluster{lc: lc, ec2: lc.EC2(tb), efs: efssdk.NewFromConfig(cfg), dir: dir}
	ctx := context.Background()
	v, err := cl.ec2.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.41.0.0/16")})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := cl.ec2.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.41.0.0/20"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		tb.Fatal(err)
	}
	cl.sub = *s.Subnet.SubnetId
	cl.fsID = cl.newFileSystem(tb, "e2e")
	return cl
}

// newFileSystem creates an EFS file system and waits until it is available.
func (cl *cluster) newFileSystem(tb testing.TB, token string) string {
	tb.Helper()
	ctx := context.Background()
	fs, err := cl.efs.CreateFileSystem(ctx, &efssdk.CreateFileSystemInput{CreationToken: aws.String(token)})
	if err != nil {
		tb.Fatal(err)
	}
	e2e.WaitFor(tb, "file system available", 10*time.Second, func() bool {
		d, err := cl.efs.DescribeFileSystems(ctx, &efssdk.DescribeFileSystemsInput{FileSystemId: fs.FileSystemId})
		return err == nil && len(d.FileSystems) == 1 && d.FileSystems[0].LifeCycleState == efstypes.LifeCycleStateAvailable
	})
	return *fs.FileSystemId
}

// efsRoot is localcloud's EFS data directory (the --local-efs-root).
func (cl *cluster) efsRoot() string { return filepath.Join(cl.lc.StateDir, "efs") }

// unmountUnder lazily unmounts everything mounted below dir, deepest first.
func unmountUnder(tb testing.TB, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		tb.Errorf("mountinfo: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if out, err := exec.Command("umount", "-l", points[i]).CombinedOutput(); err != nil {
			tb.Errorf("umount %s: %v %s", points[i], err, out)
		}
	}
}

// mountsUnder counts the mount points below dir.
func mountsUnder(tb testing.TB, dir string) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			n++
		}
	}
	return n
}

// node is berth-csi-efs running inside one instance.
type node struct {
	inst   e2e.Instance
	socket string
	ctrl   csi.ControllerClient
	node   csi.NodeClient
	cmd    *exec.Cmd
}

// startNode runs an instance and the driver inside it.
func (cl *cluster) startNode(tb testing.TB, flags ...string) *node {
	tb.Helper()
	inst := e2e.RunInstance(tb, cl.ec2, cl.sub, "m5.large")
	return cl.startDriver(tb, inst, flags...)
}

// startDriver runs berth-csi-efs (mode all, local mode) in an instance's
// namespace, as its DaemonSet would.
func (cl *cluster) startDriver(tb testing.TB, inst e2e.Instance, flags ...string) *node {
	tb.Helper()
	sock := filepath.Join(cl.dir, fmt.Sprintf("csi-%s-%d.sock", inst.ID, time.Now().UnixNano()%1e6))
	env := []string{"PATH=" + os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://169.254.169.254:4566",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null"}
	args := append([]string{"--endpoint", "unix://" + sock, "--log-level", "info", "--local-efs-root", cl.efsRoot()}, flags...)
	cmd := e2e.StartIn(tb, inst.NetNS, env, e2e.Bin(tb, "berth-csi-efs"), args...)
	e2e.WaitFor(tb, "socket "+sock, 30*time.Second, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &node{inst: inst, socket: sock, ctrl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn), cmd: cmd}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
}

var rwx = mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)

// params are efs-ap StorageClass parameters on the cluster's file system.
func (cl *cluster) params(kv ...string) map[string]string {
	m := map[string]string{"provisioningMode": "efs-ap", "fileSystemId": cl.fsID, "directoryPerms": "700"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

// publish stages (idempotently) and publishes a volume at a fresh target,
// as kubelet does for one pod; it is unpublished when the test ends.
func (n *node) publish(tb testing.TB, volID, staging, target string, c *csi.VolumeCapability, ro bool) {
	tb.Helper()
	ctx := context.Background()
	if _, err := n.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: staging, VolumeCapability: c}); err != nil {
		tb.Fatalf("stage %s on %s: %v", volID, n.inst.ID, err)
	}
	if _, err := n.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: volID, StagingTargetPath: staging,
		TargetPath: target, VolumeCapability: c, Readonly: ro}); err != nil {
		tb.Fatalf("publish %s on %s: %v", volID, n.inst.ID, err)
	}
	tb.Cleanup(func() {
		_, _ = n.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
	})
}
