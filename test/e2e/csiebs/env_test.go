// Package csiebs_test runs berth-csi-ebs inside localcloud instances, with
// real loop-device EBS volumes, and drives it with csi-sanity and a CSI
// gRPC client as kubelet and the external sidecars do.
package csiebs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-io/berth/test/e2e"
)

const zone = "us-west-2a"

type cluster struct {
	lc  *e2e.Localcloud
	ec2 *ec2sdk.Client
	sub string
	dir string
}

// newCluster starts localcloud with its datapath and a subnet, and removes
// every mount left under the test's directories before localcloud (and its
// loop devices) go.
func newCluster(tb testing.TB, flags ...string) *cluster {
	tb.Helper()
	e2e.Require(tb, os.Geteuid() == 0, "needs root (loop devices, mounts, namespaces)")
	for _, tool := range []string{"mkfs.ext4", "mkfs.xfs", "blkid", "nsenter", "resize2fs"} {
		_, err := exec.LookPath(tool)
		e2e.Require(tb, err == nil, tool+" not installed (make deps)")
	}
	dir := tb.TempDir()
	args := append([]string{"--datapath=on", "--instance-start-delay=0s", "--attach-delay-min=50ms",
		"--attach-delay-max=150ms", "--imds-lag=0s"}, flags...)
	lc := e2e.StartLocalcloud(tb, filepath.Join(dir, "localcloud"), args...)
	tb.Cleanup(func() { unmountUnder(tb, dir) })
	c := lc.EC2(tb)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.40.0.0/16")})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.40.0.0/20"), AvailabilityZone: aws.String(zone)})
	if err != nil {
		tb.Fatal(err)
	}
	return &cluster{lc: lc, ec2: c, sub: *s.Subnet.SubnetId, dir: dir}
}

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

// node is berth-csi-ebs running inside one instance.
type node struct {
	inst   e2e.Instance
	socket string
	conn   *grpc.ClientConn
	ctrl   csi.ControllerClient
	node   csi.NodeClient
	cmd    *exec.Cmd
}

// startNode runs an instance and the driver inside it.
func (cl *cluster) startNode(tb testing.TB, typ string, flags ...string) *node {
	tb.Helper()
	inst := e2e.RunInstance(tb, cl.ec2, cl.sub, typ)
	return cl.startDriver(tb, inst, flags...)
}

// startDriver runs berth-csi-ebs (mode all unless flags say otherwise) in
// an instance's namespace, as its DaemonSet would on EC2.
func (cl *cluster) startDriver(tb testing.TB, inst e2e.Instance, flags ...string) *node {
	tb.Helper()
	sock := filepath.Join(cl.dir, fmt.Sprintf("csi-%s-%d.sock", inst.ID, time.Now().UnixNano()%1e6))
	env := []string{"PATH=" + os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://169.254.169.254:4566",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null"}
	args := append([]string{"--endpoint", "unix://" + sock, "--log-level", "info"}, flags...)
	cmd := e2e.StartIn(tb, inst.NetNS, env, e2e.Bin(tb, "berth-csi-ebs"), args...)
	e2e.WaitFor(tb, "socket "+sock, 30*time.Second, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	fi, err := os.Stat(sock)
	if err != nil {
		tb.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		tb.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &node{inst: inst, socket: sock, conn: conn, ctrl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn), cmd: cmd}
}

// calls returns localcloud's per-operation call counts.
func (cl *cluster) calls(tb testing.TB) (calls, throttled map[string]int) {
	tb.Helper()
	resp, err := http.Get(cl.lc.Endpoint + "/_localcloud/calls")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]map[string]int
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		tb.Fatal(err)
	}
	return body["calls"], body["throttled"]
}

func (cl *cluster) resetCalls(tb testing.TB) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodDelete, cl.lc.Endpoint+"/_localcloud/calls", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
}

func mountCap(fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}
