// Package version holds the build's version, stamped at link time:
//
//	go build -ldflags "-X github.com/berth-io/berth/internal/version.Version=$(git describe --tags --always --dirty)"
//
// It imports nothing, so that berth-cni can read it in its first package
// init (see cni-plugin/internal/early). The Go version, platform and commit
// that go with it are package buildinfo's.
package version

// Version is set by the linker; "dev" means an unstamped build (go run, go test).
var Version = "dev"
