package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoCrypto: every exec of berth-cni runs the inits of all it links, and
// crypto/sha1 brings the FIPS 140 module's (sha256, sha512, sha3, hmac,
// aes, gcm, drbg): ~3% of an ADD here (docs/benchmarks.md). The plugin
// needs no hash: ipamd names veths, DEL finds them by prevResult or route.
func TestNoCrypto(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "crypto") {
			t.Errorf("berth-cni links %s", p)
		}
	}
}
