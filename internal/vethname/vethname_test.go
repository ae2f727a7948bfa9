package vethname

import "testing"

func TestFor(t *testing.T) {
	// sha1("default.web-0") = 0d7763386da2...; the VPC CNI names this pod's veth eni0d7763386da.
	if got := For("eni", "default", "web-0"); got != "eni0d7763386da" {
		t.Fatalf("For = %q, want eni0d7763386da", got)
	}
	// A multi-NIC pod's second interface: the VPC CNI v1.23.2 plugin named
	// it eni5fc27af3aad for pod default/multi-nic-aws-cni (hash of
	// "default.multi-nic-aws-cni.1"); restore and the orphan sweep look
	// for it under that name.
	if got := For("eni", "default", Interface("multi-nic-aws-cni", 1)); got != "eni5fc27af3aad" {
		t.Fatalf("For(interface 1) = %q, want eni5fc27af3aad", got)
	}
	if For("eni", "default", "web-0") == For("eni", "default", "web-1") {
		t.Fatal("two pods share a veth name")
	}
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		name, prefix, hash string
		ok                 bool
	}{
		{"eni0d7763386da", "eni", "0d7763386da", true},
		{"abcd0d7763386da", "abcd", "0d7763386da", true},
		{"x0d7763386da", "x", "0d7763386da", true},
		{"0d7763386da", "", "", false},      // no prefix
		{"abcde0d7763386da", "", "", false}, // prefix too long
		{"eni0d7763386dA", "", "", false},   // not what For makes
		{"eth0", "", "", false},
		{"vlan0d7763386dg", "", "", false},
	} {
		p, h, ok := Split(c.name)
		if p != c.prefix || h != c.hash || ok != c.ok {
			t.Errorf("Split(%q) = %q %q %v, want %q %q %v", c.name, p, h, ok, c.prefix, c.hash, c.ok)
		}
	}
	p, h, ok := Split(For("eni", "default", "web-0"))
	if !ok || p != "eni" || h != Hash("default", "web-0") {
		t.Fatalf("Split does not undo For: %q %q %v", p, h, ok)
	}
}

func TestInterface(t *testing.T) {
	if Interface("web", 0) != "web" || Interface("web", 2) != "web.2" {
		t.Fatalf("Interface: %q, %q", Interface("web", 0), Interface("web", 2))
	}
}
