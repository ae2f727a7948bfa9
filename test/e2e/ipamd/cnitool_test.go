package ipamd_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-io/berth/test/e2e"
)

// cnitool returns the cnitool pinned in go.mod (built once into the Go cache).
func cnitool(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", "cnitool").Output()
	if err != nil {
		t.Fatalf("go tool -n cnitool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestPodsThroughCnitool creates pods with the reference cnitool, run
// inside the node as a runtime would run the plugin.
func TestPodsThroughCnitool(t *testing.T) {
	tool := cnitool(t)
	cl := newCluster(t, "10.69.0.0/16", "10.69.0.0/20")
	n := cl.startNode(t, "m5.large")
	run := func(cmd, pod string) []byte {
		nsName := "cnitool-" + pod
		args := []string{"--net=/var/run/netns/" + n.inst.NetNS, tool, cmd, "aws-cni", "/var/run/netns/" + nsName}
		c := exec.Command("nsenter", args...)
		c.Env = append(os.Environ(), "CNI_PATH="+n.binDir+string(filepath.ListSeparator)+"/usr/lib/cni", "NETCONFPATH="+n.confDir,
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=tools;K8S_POD_NAME="+pod)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("cnitool %s %s: %v\n%s", cmd, pod, err, stderr.String())
		}
		return out
	}
	ips := map[string]netip.Addr{}
	for _, pod := range []string{"a", "b"} {
		e2e.NewNetNS(t, "cnitool-"+pod)
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal(run("add", pod), &res); err != nil || len(res.IPs) != 1 {
			t.Fatalf("cnitool result: %v %+v", err, res)
		}
		ips[pod] = netip.MustParsePrefix(res.IPs[0].Address).Addr()
	}
	b := &pod{name: "b", netns: "/var/run/netns/cnitool-b", ip: ips["b"]}
	b.listen(t, 6060)
	if _, err := e2e.DialFrom("cnitool-a", net.JoinHostPort(ips["b"].String(), "6060"), 2*time.Second); err != nil {
		t.Fatalf("pod a (%s) to pod b (%s): %v", ips["a"], ips["b"], err)
	}
	for _, pod := range []string{"a", "b"} {
		run("del", pod)
	}
	held := introspectPods(t, n)
	if len(held) != 0 {
		t.Fatalf("after cnitool del ipamd still holds %v", held)
	}
}
