package bootstrap_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/berth-io/berth/test/e2e"
)

// TestJoin is the proof of the bootstrap: a localcloud instance whose user
// data is a NodeConfig runs berth-bootstrap init in its namespace; the real
// kubelet (bin/kubelet, k8s.io/kubernetes v1.37.2) and containerd it starts
// register the Node with berth-controlplane through the instance's IAM
// role (an EC2_LINUX access entry), named after the instance's private DNS
// name, with providerID aws:///<az>/<instance-id>. A second instance then
// joins through an aws-auth mapping of the same role instead.
func TestJoin(t *testing.T) {
	for _, tool := range []string{"containerd", "runc", "nsenter"} {
		_, err := exec.LookPath(tool)
		e2e.Require(t, err == nil, tool+" not installed (make deps)")
	}
	kubeletBin, berthBin, bootstrapBin := e2e.Bin(t, "kubelet"), e2e.Bin(t, "berth"), e2e.Bin(t, "berth-bootstrap")
	hostIP := e2e.HostAddress(t)
	ctx := context.Background()

	cache := t.TempDir() // kubectl's discovery cache, not ~/.kube/cache
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=on", "--instance-start-delay=0s", "--imds-lag=0s")
	// Instances reach the host (not its loopback) through the VPC router;
	// localcloud's API listens on loopback, so a forwarder on the host
	// address carries STS calls: the node presigns its token for it and the
	// control plane verifies the token through it.
	sts := e2e.Forward(t, hostIP, strings.TrimPrefix(lc.Endpoint, "http://"))
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), "demo",
		"--listen", e2e.FreePortOn(t, hostIP), "--sts-endpoint", "http://"+sts, "--log-types", "audit")

	c := lc.EC2(t)
	subnet, cidr := e2e.OwnSubnet(t, c, 1, 24)
	eksc, role := createNodeAccessEntry(t, lc, cp)
	account := strings.Split(role, ":")[4]

	ca, err := os.ReadFile(filepath.Join(cp.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	userData := fmt.Sprintf(`MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUNDARY"

--BOUNDARY
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: demo
    apiServerEndpoint: https://%s
    certificateAuthority: %s
    cidr: 10.100.0.0/16

--BOUNDARY--
`, strings.TrimPrefix(cp.APIServer, "https://"), base64.StdEncoding.EncodeToString(ca))
	inst, ns := launch(t, c, subnet, userData)
	id, az, dnsName := *inst.InstanceId, *inst.Placement.AvailabilityZone, *inst.PrivateDnsName
	t.Logf("instance %s (%s, %s) in %s, account %s", id, dnsName, *inst.PrivateIpAddress, cidr, account)

	root := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "berth-bootstrap.log")
	start := time.Now()
	startBootstrap(t, ns, root, logPath, bootstrapBin, kubeletBin, berthBin, sts)
	defer func() {
		if t.Failed() {
			dumpLogs(t, logPath, filepath.Join(root, "var/log/berth/kubelet.log"), filepath.Join(root, "var/log/berth/containerd.log"))
		}
	}()

	var providerID string
	e2e.WaitFor(t, "Node "+dnsName+" registered", 3*time.Minute, func() bool {
		out, err := cp.Kubectl(t, "--cache-dir", cache, "get", "node", dnsName, "-o", "jsonpath={.spec.providerID}")
		providerID = out
		return err == nil && out != ""
	})
	t.Logf("node %s registered %s after berth-bootstrap started", dnsName, time.Since(start).Round(time.Millisecond))
	if want := "aws:///" + az + "/" + id; providerID != want {
		t.Fatalf("Node %s spec.providerID %q, want %q", dnsName, providerID, want)
	}
	// The kubelet registered as the authenticator maps the instance role:
	// the audit log shows the Node created by system:node:<private DNS
	// name> (NodeRestriction refuses any other name), and its addresses
	// are the instance's.
	auditedNodeCreate(t, cp, dnsName)
	addr, err := cp.Kubectl(t, "--cache-dir", cache, "get", "node", dnsName, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil || addr != *inst.PrivateIpAddress {
		t.Fatalf("Node InternalIP %q (%v), want %s", addr, err, *inst.PrivateIpAddress)
	}
	logs, _ := os.ReadFile(logPath)
	for _, want := range []string{"init done: containerd and kubelet launched", `phase=node-name`} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("berth-bootstrap log lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`init done: containerd and kubelet launched.*elapsed=(\S+).*phases="([^"]*)"`).FindSubmatch(logs); m != nil {
		t.Logf("init to kubelet launched: %s (%s)", m[1], m[2])
	}

	// kubelet started once containerd served, so it never had to be
	// restarted; the supervisor restarts a kubelet that dies.
	if strings.Contains(string(logs), "exited, restarting") {
		t.Errorf("a child had to be restarted:\n%s", logs)
	}
	m := regexp.MustCompile(`msg=started .*process=kubelet pid=(\d+) restarts=0`).FindSubmatch(logs)
	if m == nil {
		t.Fatal("berth-bootstrap log lacks kubelet's pid")
	}
	pid, _ := strconv.Atoi(string(m[1]))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill kubelet %d: %v", pid, err)
	}
	e2e.WaitFor(t, "kubelet restarted", 30*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return regexp.MustCompile(`msg=started .*process=kubelet pid=\d+ restarts=1`).Match(b)
	})

	// The same join through aws-auth: without the access entry, the
	// ConfigMap maps the role to system:node:{{EC2PrivateDNSName}}, which
	// the authenticator renders with EC2 DescribeInstances.
	if _, err := eksc.DeleteAccessEntry(ctx, &eks.DeleteAccessEntryInput{ClusterName: aws.String("demo"), PrincipalArn: aws.String(role)}); err != nil {
		t.Fatal(err)
	}
	awsAuth := filepath.Join(t.TempDir(), "aws-auth.yaml")
	if err := os.WriteFile(awsAuth, []byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: aws-auth, namespace: kube-system}
data:
  mapRoles: |
    - rolearn: `+role+`
      username: system:node:{{EC2PrivateDNSName}}
      groups: [system:bootstrappers, system:nodes]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(t, "--cache-dir", cache, "apply", "-f", awsAuth); err != nil {
		t.Fatalf("kubectl apply aws-auth: %v\n%s", err, out)
	}
	inst2, ns2 := launch(t, c, subnet, userData)
	dns2 := *inst2.PrivateDnsName
	root2 := t.TempDir()
	logPath2 := filepath.Join(t.TempDir(), "berth-bootstrap.log")
	startBootstrap(t, ns2, root2, logPath2, bootstrapBin, kubeletBin, berthBin, sts)
	defer func() {
		if t.Failed() {
			dumpLogs(t, logPath2, filepath.Join(root2, "var/log/berth/kubelet.log"))
		}
	}()
	e2e.WaitFor(t, "Node "+dns2+" registered through aws-auth", 3*time.Minute, func() bool {
		out, err := cp.Kubectl(t, "--cache-dir", cache, "get", "node", dns2, "-o", "jsonpath={.spec.providerID}")
		providerID = out
		return err == nil && out != ""
	})
	if want := "aws:///" + *inst2.Placement.AvailabilityZone + "/" + *inst2.InstanceId; providerID != want {
		t.Fatalf("Node %s spec.providerID %q, want %q", dns2, providerID, want)
	}
	auditedNodeCreate(t, cp, dns2)
}

// auditedNodeCreate checks the audit log for the Node's creation by
// system:node:<name>.
func auditedNodeCreate(t *testing.T, cp *e2e.Controlplane, name string) {
	t.Helper()
	audit, err := os.ReadFile(filepath.Join(cp.DataDir, "logs", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(audit), "\n") {
		if strings.Contains(l, `"verb":"create"`) && strings.Contains(l, `"resource":"nodes"`) &&
			strings.Contains(l, `"username":"system:node:`+name+`"`) && strings.Contains(l, `"code":201`) {
			return
		}
	}
	t.Errorf("audit log has no Node create by system:node:%s", name)
}

// launch runs one m5.large with the user data and waits for its namespace.
func launch(t *testing.T, c *ec2sdk.Client, subnet, userData string) (types.Instance, string) {
	t.Helper()
	out, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeM5Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(subnet),
		UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(userData)))})
	if err != nil {
		t.Fatal(err)
	}
	ns := "berth-" + *out.Instances[0].InstanceId
	e2e.WaitFor(t, "namespace "+ns, 20*time.Second, func() bool {
		_, err := os.Stat("/var/run/netns/" + ns)
		return err == nil
	})
	return out.Instances[0], ns
}

// startBootstrap runs berth-bootstrap init inside the instance's network
// namespace (nsenter, which leaves /sys alone, unlike ip netns exec); it is
// interrupted, and its children stopped, when the test ends.
func startBootstrap(t *testing.T, ns, root, logPath, bootstrapBin, kubeletBin, berthBin, sts string) {
	t.Helper()
	// Registered first, so it runs after the stop below: nothing the node
	// started may outlive berth-bootstrap.
	t.Cleanup(func() {
		if left := e2e.ProcessesUnder(root); len(left) > 0 {
			t.Errorf("processes left behind after berth-bootstrap stopped: %v", left)
		}
	})
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+ns, bootstrapBin, "init", "--root", root, "--run-mode", "supervise",
		"--drop-in-dir", filepath.Join(root, "etc/berth/nodeconfig.d"), "--kubelet-bin", kubeletBin, "--berth-bin", berthBin)
	cmd.Env = append(nodeEnv(),
		// EC2 through localcloud's API inside the instance; STS through the
		// host forwarder, which the control plane trusts for tokens.
		"AWS_ENDPOINT_URL=http://169.254.169.254:4566", "AWS_ENDPOINT_URL_STS=http://"+sts)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
}

// nodeEnv is the host environment without AWS settings: the node uses
// its instance role through IMDS, as on EC2.
func nodeEnv() []string {
	return append(e2e.WithoutAWS(os.Environ()), "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null")
}

// createNodeAccessEntry gives localcloud's default instance role an
// EC2_LINUX access entry, as EKS does for a node group's role.
func createNodeAccessEntry(t *testing.T, lc *e2e.Localcloud, cp *e2e.Controlplane) (*eks.Client, string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithSharedCredentialsFiles([]string{filepath.Join(lc.StateDir, "credentials")}),
		config.WithSharedConfigFiles([]string{filepath.Join(lc.StateDir, "config")}),
		config.WithRegion("us-west-2"), config.WithBaseEndpoint(cp.EKS))
	if err != nil {
		t.Fatal(err)
	}
	c := eks.NewFromConfig(cfg)
	cl, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String("demo")})
	if err != nil {
		t.Fatal(err)
	}
	account := strings.Split(*cl.Cluster.Arn, ":")[4]
	role := "arn:aws:iam::" + account + ":role/berth-node-role"
	if _, err := c.CreateAccessEntry(ctx, &eks.CreateAccessEntryInput{ClusterName: aws.String("demo"), PrincipalArn: aws.String(role),
		Type: aws.String("EC2_LINUX")}); err != nil {
		t.Fatalf("access entry for %s: %v", role, err)
	}
	return c, role
}

func dumpLogs(t *testing.T, paths ...string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("%s: %v", p, err)
			continue
		}
		if len(b) > 16000 {
			b = append(append(b[:6000:6000], "\n...\n"...), b[len(b)-10000:]...)
		}
		t.Logf("--- %s\n%s", p, bytes.TrimSpace(b))
	}
}
