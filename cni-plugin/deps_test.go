package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStartUpDeps: every exec of berth-cni runs the inits, and touches the
// pages, of all it links (docs/benchmarks.md).
//   - crypto/sha1 brings the FIPS 140 module's inits (sha256, sha512, sha3,
//     hmac, aes, gcm, drbg): ~3% of an ADD here. The plugin needs no hash:
//     ipamd names veths.
//   - A netlink library (and the CNI plugins' ns package, which brings
//     one) costs ~0.4 ms of each exec. ipamd does ADD's, CHECK's, GC's and
//     DEL's kernel work; the DEL without ipamd uses internal/rtnl.
//   - grpc-go and the protobuf runtime: the plugin speaks gRPC by hand.
func TestStartUpDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, heavy := range []string{"crypto", "github.com/vishvananda/netlink", "github.com/containernetworking/plugins/",
			"github.com/berth-io/berth/internal/podnet", "google.golang.org/grpc", "google.golang.org/protobuf"} {
			if strings.HasPrefix(p, heavy) {
				t.Errorf("berth-cni links %s", p)
			}
		}
	}
}
