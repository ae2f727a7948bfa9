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
		b, err := conflist(DefaultSocket, "", DefaultStateDir, "1.1.0", cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Plugins []struct {
				MTU int `json:"mtu"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if len(got.Plugins) != 1 || got.Plugins[0].MTU != tc.want {
			t.Errorf("%v: conflist %s, want mtu %d", tc.env, b, tc.want)
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
		b, err := conflist(DefaultSocket, "", dir, "1.1.0", cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Plugins []struct {
				StateFile string `json:"ipamStateFile"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(b, &got); err != nil || got.Plugins[0].StateFile != want {
			t.Errorf("--state-dir %s: conflist %s, want ipamStateFile %q", dir, b, want)
		}
	}
}
