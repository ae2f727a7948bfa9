package ipamd_test

import (
	"debug/buildinfo"
	"strings"
	"testing"

	"github.com/berth-io/berth/test/e2e"
)

// berth-cni's start-up is pod latency (#6): it is static, links no
// Kubernetes, AWS SDK, gRPC or logging libraries, and is built with the
// collector that costs a short-lived process the fewest page faults (see
// CNI_GOEXPERIMENT in the Makefile).
func TestPluginBuild(t *testing.T) {
	bi, settings := buildSettings(t, e2e.Bin(t, "berth-cni"))
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("CGO_ENABLED=%q, want a static binary", settings["CGO_ENABLED"])
	}
	if exp := settings["GOEXPERIMENT"]; !strings.Contains(exp, "nogreenteagc") {
		t.Errorf("GOEXPERIMENT=%q, want nogreenteagc (make build sets it for berth-cni)", exp)
	}
	for _, d := range bi.Deps {
		for _, heavy := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/aws/", "google.golang.org/grpc", "google.golang.org/protobuf",
			"github.com/sirupsen/logrus", "go.uber.org/zap", "github.com/prometheus/"} {
			if strings.HasPrefix(d.Path, heavy) {
				t.Errorf("berth-cni links %s %s", d.Path, d.Version)
			}
		}
	}
}

// buildSettings reads a binary's build information and its settings
// (CGO_ENABLED, GOEXPERIMENT, ...) by key.
func buildSettings(t testing.TB, bin string) (*buildinfo.BuildInfo, map[string]string) {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	return bi, settings
}
