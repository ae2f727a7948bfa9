// Package vethprefix checks the prefix of pods' host veth names
// (AWS_VPC_K8S_CNI_VETHPREFIX). It is apart from package vethname, which
// hashes pod names with SHA-1, so that berth-cni can check its
// configuration without linking crypto/sha1: its package inits (the FIPS
// 140 module's) are a measurable part of every exec of the plugin.
package vethprefix

import "fmt"

// MaxLen is the longest prefix the VPC CNI accepts: the kernel's names end
// at 15 bytes, and the hash takes 11.
const MaxLen = 4

// Check says what is wrong with a veth prefix, as aws-node checks
// AWS_VPC_K8S_CNI_VETHPREFIX: 1 to MaxLen characters, and not a name the
// node's own interfaces start with (eth, lo, vlan).
func Check(p string) error {
	switch {
	case p == "" || len(p) > MaxLen:
		return fmt.Errorf("%q: at most %d characters, at least one", p, MaxLen)
	case p == "eth" || p == "lo" || p == "vlan":
		return fmt.Errorf("%q is reserved (eth, lo, vlan)", p)
	}
	return nil
}
