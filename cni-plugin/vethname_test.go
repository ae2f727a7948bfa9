package main

import (
	"crypto/sha1"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/berth-io/berth/internal/vethname"
)

func TestSHA1MatchesCryptoSHA1(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := sha1Sum(b), sha1.Sum(b); got != want {
			t.Fatalf("len %d: %x, want %x", n, got, want)
		}
	}
}

func TestHostVethNameMatchesIpamd(t *testing.T) {
	if got := hostVethName("eni", "default", "web-0"); got != "eni0d7763386da" {
		t.Fatalf("hostVethName = %q, want eni0d7763386da", got)
	}
	for _, ns := range []string{"default", "kube-system", "", strings.Repeat("n", 63)} {
		for _, pod := range []string{"web-0", "coredns-5d78c9869d-abcde", "", strings.Repeat("p", 253)} {
			for _, prefix := range []string{"eni", "vlan", "x"} {
				if got, want := hostVethName(prefix, ns, pod), vethname.For(prefix, ns, pod); got != want {
					t.Errorf("%s %s/%s: %q, ipamd names it %q", prefix, ns, pod, got, want)
				}
			}
		}
	}
}
