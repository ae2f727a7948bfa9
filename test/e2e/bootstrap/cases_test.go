package bootstrap_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/test/e2e"
)

// TestCasesFromLocalcloudIMDS runs every golden case of node-bootstrap/cases
// the way a node does: the case's user data is the user data of a localcloud
// instance of the case's type, and berth-bootstrap config explain reads both
// from that instance's IMDS (no --config-source, no --instance-type). The
// output must be the case's expected.txt, with the source named
// imds://user-data instead of the file.
func TestCasesFromLocalcloudIMDS(t *testing.T) {
	bin := e2e.Bin(t, "berth-bootstrap")
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=off", "--instance-start-delay=0s", "--imds-lag=0s")
	c := lc.EC2(t)
	subs, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join("..", "..", "..", "node-bootstrap", "cases", "*"))
	if err != nil || len(dirs) < 15 {
		t.Fatalf("cases: %v (%d)", err, len(dirs))
	}
	timestamp := regexp.MustCompile(`(?m)^time=\S+ `)
	for _, dir := range dirs {
		userData, err := os.ReadFile(filepath.Join(dir, "user-data"))
		if err != nil {
			continue // a case without user data (imds-unreachable) is not about IMDS serving it
		}
		t.Run(filepath.Base(dir), func(t *testing.T) {
			abs, _ := filepath.Abs(dir)
			raw, _ := os.ReadFile(filepath.Join(dir, "args"))
			typ := "m5.large"
			args := []string{"config", "explain", "--drop-in-dir", filepath.Join(abs, "dropin")}
			var keepType string
			for _, a := range strings.Fields(string(raw)) {
				switch {
				case strings.HasPrefix(a, "--config-source="):
				case strings.HasPrefix(a, "--instance-type="):
					keepType = a
					typ = strings.TrimPrefix(a, "--instance-type=")
				default:
					args = append(args, strings.ReplaceAll(a, "$CASE", abs))
				}
			}
			run, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceType(typ),
				MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: subs.Subnets[0].SubnetId,
				UserData: aws.String(base64.StdEncoding.EncodeToString(userData))})
			if err != nil {
				// A type EC2 does not know (unknown-instance-type) runs on
				// an m5.large with the flag kept.
				run, err = c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeM5Large,
					MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: subs.Subnets[0].SubnetId,
					UserData: aws.String(base64.StdEncoding.EncodeToString(userData))})
				if err != nil {
					t.Fatal(err)
				}
				args = append(args, keepType)
			}
			resp, err := http.Get(lc.Endpoint + "/_localcloud/imds/" + *run.Instances[0].InstanceId)
			if err != nil {
				t.Fatal(err)
			}
			var ep struct{ Endpoint string }
			_ = json.NewDecoder(resp.Body).Decode(&ep)
			resp.Body.Close()
			cmd := exec.Command(bin, args...)
			cmd.Env = append(nodeEnv(), "AWS_EC2_METADATA_SERVICE_ENDPOINT="+ep.Endpoint, "AWS_REGION=us-west-2")
			out, err := cmd.CombinedOutput()
			got := timestamp.ReplaceAllString(strings.ReplaceAll(string(out), abs, "$CASE"), "")
			if err != nil {
				got = strings.Replace(got, "berth-bootstrap: ", "error: ", 1)
			}
			want, err := os.ReadFile(filepath.Join(dir, "expected.txt"))
			if err != nil {
				t.Fatal(err)
			}
			expected := strings.ReplaceAll(string(want), "file://$CASE/user-data", "imds://user-data")
			if got != expected {
				t.Fatalf("from localcloud IMDS (%s)\n--- got\n%s--- want\n%s", typ, got, expected)
			}
		})
	}
}
