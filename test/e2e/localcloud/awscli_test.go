package localcloud_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/berth-io/berth/test/e2e"
)

// TestAWSCLI drives localcloud with Debian's aws CLI v2.9 through the
// issue's script: VPC, subnet, two instances, an ENI with 5 IPs and a /28,
// the instance-type limits, EFS.
func TestAWSCLI(t *testing.T) {
	_, err := os.Stat("/usr/bin/aws")
	e2e.Require(t, err == nil, "Debian's aws CLI (/usr/bin/aws) is not installed: make deps")
	state := t.TempDir()
	lc := e2e.StartLocalcloud(t, state, "--instance-start-delay=0s", "--attach-delay-min=100ms", "--attach-delay-max=300ms")
	cmd := exec.Command("bash", filepath.Join("awscli.sh"), lc.Endpoint, state)
	cmd.Env = append(os.Environ(), "AWS_CLI=/usr/bin/aws")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("aws CLI script failed: %v", err)
	}
}
