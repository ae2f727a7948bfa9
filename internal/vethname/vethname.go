// Package vethname names a pod's host-side veth as the Amazon VPC CNI does,
// so berth-cni, ipamd and the policy agent (and AWS's own agent) agree on it.
package vethname

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
)

// For is <prefix><first 11 hex digits of sha1("<namespace>.<pod>")>: at most
// 15 bytes with the usual 3-4 byte prefixes, the kernel's limit for a name.
func For(prefix, namespace, pod string) string {
	h := sha1Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(h[:])[:11]
}

// sha1Sum is SHA-1 (FIPS 180-4) of data. berth-cni derives a name with it
// once per exec, and crypto/sha1 would link and initialise Go's whole FIPS
// 140 module (SHA-2 and SHA-3, AES-GCM, the DRBG and their self-test
// registrations): ~8 page faults of every plugin start. A veth name is no
// security boundary; TestSHA1 holds this to crypto/sha1.
func sha1Sum(data []byte) [20]byte {
	h := [5]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0}
	// data, 0x80, zeros, and the length in bits (64-bit big-endian), to a
	// whole number of 64-byte blocks.
	msg := make([]byte, (len(data)+8)/64*64+64)
	copy(msg, data)
	msg[len(data)] = 0x80
	binary.BigEndian.PutUint64(msg[len(msg)-8:], uint64(len(data))*8)
	var w [80]uint32
	for block := msg; len(block) > 0; block = block[64:] {
		for i := range 16 {
			w[i] = binary.BigEndian.Uint32(block[4*i:])
		}
		for i := 16; i < 80; i++ {
			w[i] = bits.RotateLeft32(w[i-3]^w[i-8]^w[i-14]^w[i-16], 1)
		}
		a, b, c, d, e := h[0], h[1], h[2], h[3], h[4]
		for i := range 80 {
			var f, k uint32
			switch {
			case i < 20:
				f, k = (b&c)|(^b&d), 0x5a827999
			case i < 40:
				f, k = b^c^d, 0x6ed9eba1
			case i < 60:
				f, k = (b&c)|(b&d)|(c&d), 0x8f1bbcdc
			default:
				f, k = b^c^d, 0xca62c1d6
			}
			a, b, c, d, e = bits.RotateLeft32(a, 5)+f+e+k+w[i], a, bits.RotateLeft32(b, 30), c, d
		}
		h[0], h[1], h[2], h[3], h[4] = h[0]+a, h[1]+b, h[2]+c, h[3]+d, h[4]+e
	}
	var sum [20]byte
	for i, v := range h {
		binary.BigEndian.PutUint32(sum[4*i:], v)
	}
	return sum
}
