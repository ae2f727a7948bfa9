package buildinfo

import (
	"runtime"
	"strings"
	"testing"

	"github.com/berth-io/berth/internal/version"
)

func TestStringCarriesVersionAndPlatform(t *testing.T) {
	old := version.Version
	t.Cleanup(func() { version.Version = old })
	version.Version = "v1.2.3-4-gabcdef"
	s := Get().String()
	for _, want := range []string{"v1.2.3-4-gabcdef", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(s, want) {
			t.Errorf("version string %q lacks %q", s, want)
		}
	}
}

func TestCommitShortened(t *testing.T) {
	s := Info{Version: "x", GoVersion: "go", Platform: "p", Commit: "0123456789abcdef0123"}.String()
	if !strings.HasSuffix(s, "commit 0123456789ab") {
		t.Errorf("got %q, want a 12-character commit", s)
	}
}
