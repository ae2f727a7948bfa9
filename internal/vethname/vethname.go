// Package vethname names a pod's host-side veth as the Amazon VPC CNI does,
// so berth-cni, ipamd and the policy agent (and AWS's own agent) agree on it.
package vethname

import (
	"crypto/sha1"
	"encoding/hex"
)

// For is <prefix><first 11 hex digits of sha1("<namespace>.<pod>")>: at most
// 15 bytes with the usual 3-4 byte prefixes, the kernel's limit for a name.
func For(prefix, namespace, pod string) string {
	h := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(h[:])[:11]
}
