package command

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// versionValue stands in for Kubernetes' verflag, which registers a
// non-bool --version on pflag.CommandLine when imported.
type versionValue string

func (v *versionValue) String() string     { return string(*v) }
func (v *versionValue) Set(s string) error { *v = versionValue(s); return nil }
func (v *versionValue) Type() string       { return "version" }

func TestVersionFlagSurvivesKubernetesVerflag(t *testing.T) {
	var v versionValue
	pflag.CommandLine.Var(&v, "version", "Kubernetes' version flag")
	root, _ := Root("berth-test", "test")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--version"})
	if err := root.Execute(); err != nil {
		t.Fatalf("--version: %v", err)
	}
	if !strings.HasPrefix(out.String(), "berth-test ") {
		t.Fatalf("--version printed %q", out.String())
	}
}
