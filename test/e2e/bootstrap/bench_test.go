package bootstrap_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/test/e2e"
)

// BenchmarkInit measures berth-bootstrap init inside a localcloud instance,
// from the process start to containerd and kubelet launched (local mode:
// re-exec into the node's mount namespace, IMDS identity, user data and
// EC2 DescribeInstances for the node name, generating and writing every
// file, the node's mounts, starting both children). ns/op is measured from
// outside (exec to the "launched" log line); each phase is reported as its
// mean in ms.
func BenchmarkInit(b *testing.B) {
	for _, tool := range []string{"containerd", "runc", "nsenter"} {
		_, err := exec.LookPath(tool)
		e2e.Require(b, err == nil, tool+" not installed (make deps)")
	}
	kubeletBin, berthBin, bootstrapBin := e2e.Bin(b, "kubelet"), e2e.Bin(b, "berth"), e2e.Bin(b, "berth-bootstrap")
	lc := e2e.StartLocalcloud(b, b.TempDir(), "--datapath=on", "--instance-start-delay=0s", "--imds-lag=0s")
	c := lc.EC2(b)
	subnet, _ := e2e.OwnSubnet(b, c, 1, 24)
	// kubelet only has to be launched: the endpoint need not answer.
	userData := fmt.Sprintf("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: demo\n    apiServerEndpoint: https://192.0.2.1:6443\n    certificateAuthority: %s\n    cidr: 10.100.0.0/16\n",
		base64.StdEncoding.EncodeToString(selfSignedCA(b)))
	out, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeM5Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(subnet),
		UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(userData)))})
	if err != nil {
		b.Fatal(err)
	}
	ns := "berth-" + *out.Instances[0].InstanceId
	e2e.WaitFor(b, "namespace "+ns, 20*time.Second, func() bool {
		_, err := os.Stat("/var/run/netns/" + ns)
		return err == nil
	})
	phaseRe := regexp.MustCompile(`(\w[\w-]*)=([0-9.]+(?:ns|µs|ms|s))`)
	sums := map[string]time.Duration{}
	var order []string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := b.TempDir()
		logPath := filepath.Join(root, "berth-bootstrap.log")
		logf, err := os.Create(logPath)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command("nsenter", "--net=/var/run/netns/"+ns, bootstrapBin, "init", "--root", root, "--run-mode", "supervise",
			"--drop-in-dir", filepath.Join(root, "nodeconfig.d"), "--kubelet-bin", kubeletBin, "--berth-bin", berthBin)
		cmd.Env = append(nodeEnv(), "AWS_ENDPOINT_URL=http://169.254.169.254:4566")
		cmd.Stdout, cmd.Stderr = logf, logf
		b.StartTimer()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var line string
		deadline := time.Now().Add(20 * time.Second)
		for line == "" {
			data, _ := os.ReadFile(logPath)
			for _, l := range strings.Split(string(data), "\n") {
				if strings.Contains(l, "containerd and kubelet launched") {
					line = l
				}
			}
			if line == "" {
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					b.Fatalf("kubelet not launched after 20s:\n%s", data)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		b.StopTimer()
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			data, _ := os.ReadFile(logPath)
			b.Fatalf("berth-bootstrap init: %v\n%s", err, data)
		}
		logf.Close()
		if _, rest, ok := strings.Cut(line, `phases="`); ok {
			for _, m := range phaseRe.FindAllStringSubmatch(rest, -1) {
				d, err := time.ParseDuration(m[2])
				if err != nil {
					continue
				}
				if _, seen := sums[m[1]]; !seen {
					order = append(order, m[1])
				}
				sums[m[1]] += d
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	for _, p := range order {
		b.ReportMetric(float64(sums[p].Microseconds())/1000/float64(b.N), p+"-ms")
	}
}

func selfSignedCA(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
