package main

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
)

// hostVethName is the VPC CNI's name for a pod's host veth: the prefix and
// 11 hex digits of sha1("namespace.pod"), as internal/vethname computes it
// for ipamd (vethname_test.go checks they agree). SHA-1 is computed here
// because crypto/sha1 links the FIPS 140 module, whose package
// initialisation (AES-GCM, SHA-2/3, DRBG self-setup) cost every exec of
// the plugin ~20 page faults for one 20-byte hash of a name.
func hostVethName(prefix, namespace, pod string) string {
	h := sha1Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(h[:])[:11]
}

// sha1Sum is SHA-1 (RFC 3174); names, not secrets.
func sha1Sum(msg []byte) [20]byte {
	h := [5]uint32{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}
	n := len(msg)
	msg = append(msg[:n:n], 0x80)
	for len(msg)%64 != 56 {
		msg = append(msg, 0)
	}
	msg = binary.BigEndian.AppendUint64(msg, uint64(n)*8)
	var w [80]uint32
	for off := 0; off < len(msg); off += 64 {
		for i := 0; i < 16; i++ {
			w[i] = binary.BigEndian.Uint32(msg[off+4*i:])
		}
		for i := 16; i < 80; i++ {
			w[i] = bits.RotateLeft32(w[i-3]^w[i-8]^w[i-14]^w[i-16], 1)
		}
		a, b, c, d, e := h[0], h[1], h[2], h[3], h[4]
		for i := 0; i < 80; i++ {
			var f, k uint32
			switch {
			case i < 20:
				f, k = b&c|^b&d, 0x5A827999
			case i < 40:
				f, k = b^c^d, 0x6ED9EBA1
			case i < 60:
				f, k = b&c|b&d|c&d, 0x8F1BBCDC
			default:
				f, k = b^c^d, 0xCA62C1D6
			}
			t := bits.RotateLeft32(a, 5) + f + e + k + w[i]
			a, b, c, d, e = t, a, bits.RotateLeft32(b, 30), c, d
		}
		h[0] += a
		h[1] += b
		h[2] += c
		h[3] += d
		h[4] += e
	}
	var out [20]byte
	for i, v := range h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
	return out
}
