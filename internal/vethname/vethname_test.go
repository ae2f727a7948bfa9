package vethname

import (
	"crypto/sha1"
	"math/rand/v2"
	"testing"
)

func TestFor(t *testing.T) {
	// sha1("default.web-0") = 0d7763386da2...; the VPC CNI names this pod's veth eni0d7763386da.
	if got := For("eni", "default", "web-0"); got != "eni0d7763386da" {
		t.Fatalf("For = %q, want eni0d7763386da", got)
	}
	if For("eni", "default", "web-0") == For("eni", "default", "web-1") {
		t.Fatal("two pods share a veth name")
	}
}

func TestSHA1(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if got, want := sha1Sum(data), sha1.Sum(data); got != want {
			t.Fatalf("%d bytes: sha1Sum %x, crypto/sha1 %x", n, got, want)
		}
	}
}
