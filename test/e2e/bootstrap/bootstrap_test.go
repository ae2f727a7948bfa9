// Package bootstrap_test drives berth-bootstrap against a localcloud
// instance's IMDS, as an AMI's boot would.
package bootstrap_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/test/e2e"
)

func TestConfigFromIMDSUserData(t *testing.T) {
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=off", "--instance-start-delay=0s", "--imds-lag=0s")
	c := lc.EC2(t)
	ud, err := os.ReadFile(filepath.Join("..", "..", "..", "node-bootstrap", "cases", "mime-merge", "user-data"))
	if err != nil {
		t.Fatal(err)
	}
	subs, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeT3Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: subs.Subnets[0].SubnetId, UserData: aws.String(base64.StdEncoding.EncodeToString(ud))})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(lc.Endpoint + "/_localcloud/imds/" + *run.Instances[0].InstanceId)
	if err != nil {
		t.Fatal(err)
	}
	var ep struct{ Endpoint string }
	_ = json.NewDecoder(resp.Body).Decode(&ep)
	resp.Body.Close()
	cmd := exec.Command(e2e.Bin(t, "berth-bootstrap"), "config", "explain", "--drop-in-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_SERVICE_ENDPOINT="+ep.Endpoint, "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "AWS_REGION=us-west-2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("berth-bootstrap config explain: %v\n%s", err, out)
	}
	// init --skip run writes every file under --root from the same sources;
	// the node name comes from EC2 DescribeInstances with the instance
	// role's credentials (the default chain through IMDS).
	inst := *run.Instances[0].InstanceId
	d, err := c.DescribeInstances(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{inst}})
	if err != nil {
		t.Fatal(err)
	}
	dnsName := *d.Reservations[0].Instances[0].PrivateDnsName
	root := t.TempDir()
	ini := exec.Command(e2e.Bin(t, "berth-bootstrap"), "init", "--skip", "run", "--root", root, "--drop-in-dir", t.TempDir())
	ini.Env = append(os.Environ(), "AWS_EC2_METADATA_SERVICE_ENDPOINT="+ep.Endpoint, "AWS_ENDPOINT_URL="+lc.Endpoint,
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
	if out, err := ini.CombinedOutput(); err != nil {
		t.Fatalf("berth-bootstrap init --skip run: %v\n%s", err, out)
	}
	flags, _ := os.ReadFile(filepath.Join(root, "etc/berth/kubelet.flags"))
	if !strings.Contains(string(flags), "--hostname-override="+dnsName+"\n") {
		t.Fatalf("kubelet flags do not name the node %s (EC2 private DNS name):\n%s", dnsName, flags)
	}
	// --node-name instance-id needs no EC2 call.
	root2 := t.TempDir()
	ini = exec.Command(e2e.Bin(t, "berth-bootstrap"), "init", "--skip", "run", "--root", root2, "--drop-in-dir", t.TempDir(), "--node-name", "instance-id")
	ini.Env = cmd.Env
	if out, err := ini.CombinedOutput(); err != nil {
		t.Fatalf("berth-bootstrap init --skip run --node-name instance-id: %v\n%s", err, out)
	}
	flags, _ = os.ReadFile(filepath.Join(root2, "etc/berth/kubelet.flags"))
	if !strings.Contains(string(flags), "--hostname-override="+inst+"\n") {
		t.Fatalf("kubelet flags do not name the node %s:\n%s", inst, flags)
	}
	// --run-mode systemd (an AMI) also writes the units, with the node's
	// own paths (--root is the image being built).
	root3 := t.TempDir()
	ini = exec.Command(e2e.Bin(t, "berth-bootstrap"), "init", "--skip", "run", "--root", root3, "--drop-in-dir", t.TempDir(), "--node-name", "instance-id", "--run-mode", "systemd")
	ini.Env = cmd.Env
	if out, err := ini.CombinedOutput(); err != nil {
		t.Fatalf("berth-bootstrap init --skip run --run-mode systemd: %v\n%s", err, out)
	}
	env, _ := os.ReadFile(filepath.Join(root3, "etc/berth/kubelet.env"))
	if !strings.Contains(string(env), "--config=/etc/kubernetes/kubelet/config.json --hostname-override="+inst) {
		t.Fatalf("kubelet.env:\n%s", env)
	}
	for _, unit := range []string{"etc/systemd/system/kubelet.service", "etc/systemd/system/containerd.service.d/10-berth.conf"} {
		if _, err := os.Stat(filepath.Join(root3, unit)); err != nil {
			t.Errorf("systemd mode: %v", err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(root, "etc/kubernetes/kubelet/config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		ProviderID   string            `json:"providerID"`
		MaxPods      int               `json:"maxPods"`
		KubeReserved map[string]string `json:"kubeReserved"`
	}
	if err := json.Unmarshal(cfg, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.ProviderID != "aws:///"+*run.Instances[0].Placement.AvailabilityZone+"/"+inst || kc.MaxPods != 17 || kc.KubeReserved["memory"] != "442Mi" {
		t.Fatalf("kubelet config %+v", kc)
	}
	ca, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"))
	if !strings.HasPrefix(string(ca), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("CA file %q", ca)
	}
	kubeconfig, _ := os.ReadFile(filepath.Join(root, "var/lib/kubelet/kubeconfig"))
	if !strings.Contains(string(kubeconfig), `args: ["token", "--cluster-name", "demo"`) {
		t.Fatalf("kubeconfig:\n%s", kubeconfig)
	}
	// Two NodeConfig parts merged from IMDS user data; t3.small read from IMDS; explicit maxPods 17 wins.
	for _, want := range []string{"spec.cluster.name", "demo", "imds://user-data part 3", "effective maxPods                        17", "kubeReserved.memory                      442Mi"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestFailedJoinTagsTheInstance: a bad NodeConfig makes init fail loudly
// and leaves the berth.io/bootstrap-error tag on the instance.
func TestFailedJoinTagsTheInstance(t *testing.T) {
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=off", "--instance-start-delay=0s", "--imds-lag=0s")
	c := lc.EC2(t)
	subs, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	bad := "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: demo\n"
	run, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeT3Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: subs.Subnets[0].SubnetId, UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(bad)))})
	if err != nil {
		t.Fatal(err)
	}
	id := *run.Instances[0].InstanceId
	resp, err := http.Get(lc.Endpoint + "/_localcloud/imds/" + id)
	if err != nil {
		t.Fatal(err)
	}
	var ep struct{ Endpoint string }
	_ = json.NewDecoder(resp.Body).Decode(&ep)
	resp.Body.Close()
	cmd := exec.Command(e2e.Bin(t, "berth-bootstrap"), "init", "--skip", "run", "--root", t.TempDir(), "--drop-in-dir", t.TempDir())
	// Default credential chain: the instance role through IMDS, the API at localcloud.
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_SERVICE_ENDPOINT="+ep.Endpoint, "AWS_ENDPOINT_URL="+lc.Endpoint,
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("init with an incomplete NodeConfig succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "spec.cluster.apiServerEndpoint: required") {
		t.Fatalf("init output does not say what is wrong:\n%s", out)
	}
	d, err := c.DescribeInstances(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	tagged := ""
	for _, tg := range d.Reservations[0].Instances[0].Tags {
		if *tg.Key == "berth.io/bootstrap-error" {
			tagged = *tg.Value
		}
	}
	if !strings.Contains(tagged, "apiServerEndpoint") {
		t.Fatalf("instance tag berth.io/bootstrap-error = %q", tagged)
	}
}
