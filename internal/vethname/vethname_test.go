package vethname

import "testing"

func TestFor(t *testing.T) {
	// sha1("default.web-0") = 0d7763386da2...; the VPC CNI names this pod's veth eni0d7763386da.
	if got := For("eni", "default", "web-0"); got != "eni0d7763386da" {
		t.Fatalf("For = %q, want eni0d7763386da", got)
	}
	if For("eni", "default", "web-0") == For("eni", "default", "web-1") {
		t.Fatal("two pods share a veth name")
	}
}
