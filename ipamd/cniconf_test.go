package main

import (
	"encoding/json"
	"testing"

	"github.com/berth-io/berth/ipamd/config"
)

// TestConflistPodMTU: berth-cni sets the pod veth's MTU from the conflist's
// "mtu", which is POD_MTU (AWS_VPC_ENI_MTU when unset), as aws-node's
// entrypoint writes it; the ENIs' MTU does not leak into it.
func TestConflistPodMTU(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{nil, 9001},
		{map[string]string{"AWS_VPC_ENI_MTU": "1500"}, 1500},
		{map[string]string{"POD_MTU": "1400"}, 1400},
		{map[string]string{"AWS_VPC_ENI_MTU": "9001", "POD_MTU": "1280"}, 1280},
	} {
		cfg, err := config.FromEnv(func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := berthPlugin(t, cfg, DefaultStateDir); got.MTU != tc.want {
			t.Errorf("%v: conflist's mtu %d, want %d", tc.env, got.MTU, tc.want)
		}
	}
}

// TestConflistStateFile: berth-cni's GC and CHECK read ipamd's checkpoint,
// so a --state-dir other than the default goes into the conflist.
func TestConflistStateFile(t *testing.T) {
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{DefaultStateDir: "", "/run/node-2": "/run/node-2/ipam.json"} {
		if got := berthPlugin(t, cfg, dir); got.StateFile != want {
			t.Errorf("--state-dir %s: conflist's ipamStateFile %q, want %q", dir, got.StateFile, want)
		}
	}
}

// berthPlugin is the berth-cni entry of the conflist ipamd writes.
type berthPluginConf struct {
	MTU       int    `json:"mtu"`
	StateFile string `json:"ipamStateFile"`
}

func berthPlugin(t *testing.T, cfg config.Config, stateDir string) berthPluginConf {
	t.Helper()
	b, err := conflist(DefaultSocket, "", stateDir, "1.1.0", cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []berthPluginConf `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Plugins) != 1 {
		t.Fatalf("conflist %s: %v", b, err)
	}
	return got.Plugins[0]
}
