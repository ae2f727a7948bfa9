package containerd

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata")

func TestGenerateConfig(t *testing.T) {
	for _, tc := range []struct {
		name, user string
		opts       Options
	}{
		{"ami", "", Options{}},
		{"ami-user-override", "[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"localhost/pause:3.10\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndiscard_unpacked_layers = false\n", Options{}},
		{"local", "", Options{Root: "/srv/node1", Local: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GenerateConfig(tc.user, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".toml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./node-bootstrap/containerd -update)", err)
			}
			if string(got) != string(want) {
				t.Fatalf("%s differs\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
	if _, err := GenerateConfig("[plugins\nx = 1\n", Options{}); err == nil || !strings.Contains(err.Error(), "spec.containerd.config") {
		t.Fatalf("bad TOML: %v", err)
	}
	if s := Socket(Options{Root: "/srv/node1"}); s != "/srv/node1/run/containerd/containerd.sock" {
		t.Fatalf("socket %s", s)
	}
}
