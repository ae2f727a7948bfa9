// Package buildinfo describes the running build: the stamped version (see
// package version), the Go version, the platform and the commit. Every berth
// binary prints it for --version and exports it as the berth_build_info
// metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/berth-io/berth/internal/version"
)

// Info describes the running build.
type Info struct {
	Version   string
	GoVersion string
	Commit    string
	Platform  string
}

// Get returns the build information. The commit comes from the Go build info
// when the binary was built inside a VCS checkout.
func Get() Info {
	info := Info{
		Version:   version.Version,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Commit = s.Value
			}
		}
	}
	return info
}

// String formats the version line printed by `<binary> --version`.
func (i Info) String() string {
	s := fmt.Sprintf("%s (%s, %s)", i.Version, i.GoVersion, i.Platform)
	if i.Commit != "" {
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " commit " + c
	}
	return s
}
