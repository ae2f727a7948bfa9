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
	// Two NodeConfig parts merged from IMDS user data; t3.small read from IMDS; explicit maxPods 17 wins.
	for _, want := range []string{"spec.cluster.name", "demo", "imds://user-data part 3", "effective maxPods                        17", "kubeReserved.memory                      442Mi"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
