package main

// An HPACK (RFC 7541) decoder for the header blocks of ipamd's and the
// policy agent's replies. golang.org/x/net/http2/hpack builds its static
// table's maps in package init and, on the first Huffman-coded string
// (grpc-go's server codes most values), a lookup tree of a few hundred
// 2 KiB nodes: 0.3–0.9 ms and ~20 page faults in every exec of the plugin
// here. This decoder keeps both tables as constant data and decodes the
// canonical Huffman code by counting codes per length, allocating nothing
// but the strings. hpack_test.go checks it against x/net's encoder and
// decoder.

import (
	"errors"
	"fmt"
)

type hpackField struct{ name, value string }

// hpackStatic is RFC 7541 Appendix A.
var hpackStatic = [61]hpackField{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"}, {":path", "/index.html"},
	{":scheme", "http"}, {":scheme", "https"}, {":status", "200"}, {":status", "204"}, {":status", "206"},
	{":status", "304"}, {":status", "400"}, {":status", "404"}, {":status", "500"}, {"accept-charset", ""},
	{"accept-encoding", "gzip, deflate"}, {"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""},
	{"access-control-allow-origin", ""}, {"age", ""}, {"allow", ""}, {"authorization", ""},
	{"cache-control", ""}, {"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""},
	{"content-length", ""}, {"content-location", ""}, {"content-range", ""}, {"content-type", ""},
	{"cookie", ""}, {"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""}, {"from", ""}, {"host", ""},
	{"if-match", ""}, {"if-modified-since", ""}, {"if-none-match", ""}, {"if-range", ""},
	{"if-unmodified-since", ""}, {"last-modified", ""}, {"link", ""}, {"location", ""}, {"max-forwards", ""},
	{"proxy-authenticate", ""}, {"proxy-authorization", ""}, {"range", ""}, {"referer", ""}, {"refresh", ""},
	{"retry-after", ""}, {"server", ""}, {"set-cookie", ""}, {"strict-transport-security", ""},
	{"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""}, {"www-authenticate", ""},
}

// huffmanSyms are the symbols of the Huffman code of RFC 7541 Appendix B
// in code order. The code is canonical (codes of one length are
// consecutive and ordered by symbol), so these and huffmanCounts, the
// number of codes of each length, define it. EOS is the 30-bit code after
// the last symbol.
var huffmanSyms = [256]byte{
	48, 49, 50, 97, 99, 101, 105, 111, 115, 116, 32, 37, 45, 46, 47, 51, 52, 53, 54, 55, 56, 57, 61,
	65, 95, 98, 100, 102, 103, 104, 108, 109, 110, 112, 114, 117, 58, 66, 67, 68, 69, 70, 71, 72, 73,
	74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 89, 106, 107, 113, 118, 119, 120, 121,
	122, 38, 42, 44, 59, 88, 90, 33, 34, 40, 41, 63, 39, 43, 124, 35, 62, 0, 36, 64, 91, 93, 126, 94,
	125, 60, 96, 123, 92, 195, 208, 128, 130, 131, 162, 184, 194, 224, 226, 153, 161, 167, 172, 176,
	177, 179, 209, 216, 217, 227, 229, 230, 129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164,
	169, 170, 173, 178, 181, 185, 186, 187, 189, 190, 196, 198, 228, 232, 233, 1, 135, 137, 138, 139,
	140, 141, 143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166, 168, 174, 175, 180, 182, 183,
	188, 191, 197, 231, 239, 9, 142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237, 199, 207, 234,
	235, 192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255, 203, 204, 211,
	212, 214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252, 253, 254, 2, 3, 4, 5, 6, 7,
	8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 127, 220, 249, 10,
	13, 22,
}

var huffmanCounts = [31]uint32{0, 0, 0, 0, 0, 10, 26, 32, 6, 0, 5, 3, 2, 6, 2, 3, 0, 0, 0, 3, 8, 13, 26, 29, 12, 4, 15, 19, 29, 0, 3}

var errHPACK = errors.New("hpack: malformed header block")

// huffmanDecode appends the decoding of src to dst.
func huffmanDecode(dst, src []byte) ([]byte, error) {
	var code, first uint32 // the bits read so far; the first code of their length
	n, idx := 0, 0         // their length; the index in huffmanSyms of that first code
	for _, b := range src {
		for bit := 7; bit >= 0; bit-- {
			code = code<<1 | uint32(b>>uint(bit))&1
			n++
			if n > 30 {
				return nil, errHPACK
			}
			count := huffmanCounts[n]
			if code-first < count {
				dst = append(dst, huffmanSyms[idx+int(code-first)])
				code, first, n, idx = 0, 0, 0, 0
				continue
			}
			idx += int(count)
			first = (first + count) << 1
		}
	}
	// Padding: fewer than 8 bits, all ones (the start of EOS).
	if n > 7 || code != 1<<uint(n)-1 {
		return nil, errHPACK
	}
	return dst, nil
}

// hpackDecoder keeps the dynamic table of one connection (the default
// 4096 bytes: the plugin never sends SETTINGS_HEADER_TABLE_SIZE).
type hpackDecoder struct {
	dyn     []hpackField // newest last
	size    int
	maxSize int
}

func newHPACKDecoder() *hpackDecoder { return &hpackDecoder{maxSize: 4096} }

func (d *hpackDecoder) field(i uint64) (hpackField, error) {
	switch {
	case i == 0:
		return hpackField{}, errHPACK
	case i <= uint64(len(hpackStatic)):
		return hpackStatic[i-1], nil
	case i-uint64(len(hpackStatic)) <= uint64(len(d.dyn)):
		return d.dyn[len(d.dyn)-int(i-uint64(len(hpackStatic)))], nil
	}
	return hpackField{}, fmt.Errorf("hpack: index %d beyond the tables: %w", i, errHPACK)
}

func (d *hpackDecoder) evict() {
	drop := 0
	for d.size > d.maxSize && drop < len(d.dyn) {
		d.size -= len(d.dyn[drop].name) + len(d.dyn[drop].value) + 32
		drop++
	}
	d.dyn = d.dyn[drop:]
}

func (d *hpackDecoder) add(f hpackField) {
	d.dyn = append(d.dyn, f)
	d.size += len(f.name) + len(f.value) + 32
	d.evict()
}

// decode returns the fields of a complete header block.
func (d *hpackDecoder) decode(p []byte) ([]hpackField, error) {
	var out []hpackField
	for len(p) > 0 {
		b := p[0]
		switch {
		case b&0x80 != 0: // indexed field
			i, rest, err := hpackReadInt(p, 7)
			if err != nil {
				return nil, err
			}
			f, err := d.field(i)
			if err != nil {
				return nil, err
			}
			out, p = append(out, f), rest
		case b&0xe0 == 0x20: // dynamic table size update
			n, rest, err := hpackReadInt(p, 5)
			if err != nil {
				return nil, err
			}
			if n > 4096 {
				return nil, fmt.Errorf("hpack: table size %d over 4096: %w", n, errHPACK)
			}
			d.maxSize, p = int(n), rest
			d.evict()
		default: // literal: with incremental indexing (01), without (0000), never indexed (0001)
			prefix := 4
			if b&0xc0 == 0x40 {
				prefix = 6
			}
			i, rest, err := hpackReadInt(p, prefix)
			if err != nil {
				return nil, err
			}
			var f hpackField
			if i == 0 {
				if f.name, rest, err = hpackReadString(rest); err != nil {
					return nil, err
				}
			} else {
				nf, err := d.field(i)
				if err != nil {
					return nil, err
				}
				f.name = nf.name
			}
			if f.value, rest, err = hpackReadString(rest); err != nil {
				return nil, err
			}
			if prefix == 6 {
				d.add(f)
			}
			out, p = append(out, f), rest
		}
	}
	return out, nil
}

// hpackReadInt reads an integer with an n-bit prefix (RFC 7541 5.1).
func hpackReadInt(p []byte, n int) (uint64, []byte, error) {
	limit := uint64(1)<<uint(n) - 1
	i := uint64(p[0]) & limit
	p = p[1:]
	if i < limit {
		return i, p, nil
	}
	for shift := uint(0); len(p) > 0 && shift < 56; shift += 7 {
		b := p[0]
		p = p[1:]
		i += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return i, p, nil
		}
	}
	return 0, nil, errHPACK
}

// hpackReadString reads a string literal (RFC 7541 5.2).
func hpackReadString(p []byte) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, errHPACK
	}
	huffman := p[0]&0x80 != 0
	n, rest, err := hpackReadInt(p, 7)
	if err != nil {
		return "", nil, err
	}
	if n > uint64(len(rest)) {
		return "", nil, errHPACK
	}
	s := rest[:n]
	if !huffman {
		return string(s), rest[n:], nil
	}
	b, err := huffmanDecode(make([]byte, 0, len(s)*8/5), s)
	if err != nil {
		return "", nil, err
	}
	return string(b), rest[n:], nil
}
