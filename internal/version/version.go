// Package version holds the build's version, stamped at link time:
//
//	go build -ldflags "-X github.com/berth-io/berth/internal/version.Version=$(git describe --tags --always --dirty)"
//
// It imports nothing: berth-cni needs only the string, to name itself to
// ipamd, and links nothing more for it. The Go version, platform and commit
// that go with it are package buildinfo's.
package version

// Version is set by the linker; "dev" means an unstamped build (go run, go test).
var Version = "dev"
