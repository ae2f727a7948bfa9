package kubelet

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/internal/maxpods"
)

var update = flag.Bool("update", false, "rewrite testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./node-bootstrap/kubelet -update)", err)
	}
	if string(want) != string(got) {
		t.Fatalf("%s differs\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func nodeConfig(kubelet map[string]string, flags ...string) *v1alpha1.NodeConfig {
	nc := &v1alpha1.NodeConfig{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.Kind}
	nc.Spec.Cluster = v1alpha1.ClusterDetails{Name: "demo", APIServerEndpoint: "https://demo.example:6443", CIDR: "10.100.0.0/16"}
	if len(kubelet) > 0 {
		nc.Spec.Kubelet.Config = map[string]json.RawMessage{}
		for k, v := range kubelet {
			nc.Spec.Kubelet.Config[k] = json.RawMessage(v)
		}
	}
	nc.Spec.Kubelet.Flags = flags
	return nc
}

func resolve(t *testing.T, typ string, mode maxpods.Mode, explicit int) maxpods.Result {
	t.Helper()
	info, _ := instancetypes.Lookup(typ)
	r, err := maxpods.Resolve(maxpods.Input{Type: info, Mode: mode, Explicit: explicit})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var awsOpts = Options{Paths: DefaultPaths(), TokenCommand: TokenCommand, Region: "us-west-2"}

var node = Node{InstanceID: "i-0123456789abcdef0", AvailabilityZone: "us-west-2a", PrivateIP: "10.0.1.17", NodeName: "ip-10-0-1-17.us-west-2.compute.internal"}

func TestGenerateConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		typ      string
		mode     maxpods.Mode
		kubelet  map[string]string
		explicit int
	}{
		{"m5-large-default", "m5.large", maxpods.SecondaryIP, nil, 0},
		{"c5-18xlarge-prefix", "c5.18xlarge", maxpods.PrefixDelegation, nil, 0},
		{"dropin-override", "m5.large", maxpods.SecondaryIP, map[string]string{"maxPods": "58", "shutdownGracePeriod": `"45s"`, "registryPullQPS": "10"}, 58},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := GenerateConfig(nodeConfig(tc.kubelet), node, resolve(t, tc.typ, tc.mode, tc.explicit), awsOpts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".config.json", b)
		})
	}
}

// TestLocalMode: a node that is a namespace on a shared cgroup-v1 host
// (localcloud) gets its paths under its root, the cgroupfs driver, no
// QoS cgroups, oomScoreAdj 0 and failCgroupV1 false.
func TestLocalMode(t *testing.T) {
	local := Options{Paths: DefaultPaths().Under("/srv/node1"), Local: true, CgroupV1: true, TokenCommand: "/opt/berth/bin/berth", Region: "us-west-2"}
	nc := nodeConfig(nil)
	b, err := GenerateConfig(nc, node, resolve(t, "t3.small", maxpods.SecondaryIP, 0), local)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "local.config.json", b)
	kc, err := GenerateKubeconfig(nc, local)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "local.kubeconfig.yaml", kc)
	golden(t, "local.kubelet.flags", GenerateFlags(nc, node, local))
}

func TestReservationFollowsExplicitMaxPods(t *testing.T) {
	b, err := GenerateConfig(nodeConfig(map[string]string{"maxPods": "58"}), node, resolve(t, "m5.large", maxpods.SecondaryIP, 58), awsOpts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"memory": "893Mi"`) { // 11 × 58 + 255
		t.Fatalf("kube-reserved does not follow maxPods 58:\n%s", b)
	}
}

func TestBadKubeletKey(t *testing.T) {
	_, err := GenerateConfig(nodeConfig(map[string]string{"maxPod": "58"}), node, resolve(t, "m5.large", maxpods.SecondaryIP, 0), awsOpts)
	if err == nil || !strings.Contains(err.Error(), `unknown field "maxPod"`) {
		t.Fatalf("a misspelt kubelet key: %v", err)
	}
}

func TestKubeconfigAndFlags(t *testing.T) {
	nc := nodeConfig(nil, "--node-labels=team=a")
	kc, err := GenerateKubeconfig(nc, awsOpts)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kubeconfig.yaml", kc)
	golden(t, "kubelet.flags", GenerateFlags(nc, node, awsOpts))
	if d, _ := ClusterDNS("10.100.0.0/16"); d != "10.100.0.10" {
		t.Fatalf("cluster DNS %s", d)
	}
}
