// Package vethname names a pod's host-side veth as the Amazon VPC CNI does,
// so berth-cni, ipamd and the policy agent (and AWS's own agent) agree on it.
package vethname

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"

	"github.com/berth-io/berth/internal/vethprefix"
)

// hashLen is how many hex digits of the SHA-1 follow the prefix.
const hashLen = 11

// For is <prefix><first 11 hex digits of sha1("<namespace>.<pod>")>: at most
// 15 bytes with the usual 3-4 byte prefixes, the kernel's limit for a name.
func For(prefix, namespace, pod string) string {
	return prefix + Hash(namespace, pod)
}

// Interface is what the host veth of a pod's interface i is named after:
// the pod for eth0 (0), "<pod>.<i>" for a multi-NIC pod's interface on
// network card i, as the VPC CNI names them.
func Interface(pod string, i int) string {
	if i == 0 {
		return pod
	}
	return pod + "." + strconv.Itoa(i)
}

// Hash is the part of a pod's veth name that does not depend on the prefix.
func Hash(namespace, pod string) string {
	h := sha1.Sum([]byte(namespace + "." + pod))
	return hex.EncodeToString(h[:])[:hashLen]
}

// Split takes a name For could have made apart: a 1 to vethprefix.MaxLen byte
// prefix and the hash. A node's pods keep the veths they were made with
// when the prefix setting changes, so whoever looks for a pod's veth must
// also find it under an earlier prefix.
func Split(name string) (prefix, hash string, ok bool) {
	n := len(name) - hashLen
	if n < 1 || n > vethprefix.MaxLen {
		return "", "", false
	}
	for i := n; i < len(name); i++ {
		if c := name[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", "", false
		}
	}
	return name[:n], name[n:], true
}
