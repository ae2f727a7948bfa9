package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// The decoder against golang.org/x/net/http2/hpack, whose encoder is the
// one grpc-go's server uses.

func TestHuffmanMatchesXNet(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		s := make([]byte, r.IntN(40))
		for j := range s {
			if i < 256 {
				s[j] = byte(i) // every symbol, alone and repeated
			} else {
				s[j] = byte(r.UintN(256))
			}
		}
		enc := hpack.AppendHuffmanString(nil, string(s))
		got, err := huffmanDecode(nil, enc)
		if err != nil || !bytes.Equal(got, s) {
			t.Fatalf("%q: got %q, %v", s, got, err)
		}
	}
	// Arbitrary bytes: the same strings, and errors for the same inputs
	// (bad padding, EOS, codes past 30 bits).
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(8))
		for j := range b {
			b[j] = byte(r.UintN(256))
			if r.IntN(3) == 0 {
				b[j] = 0xff
			}
		}
		want, werr := hpack.HuffmanDecodeToString(b)
		got, gerr := huffmanDecode(nil, b)
		if (werr != nil) != (gerr != nil) || (werr == nil && string(got) != want) {
			t.Fatalf("% x: got %q, %v; x/net %q, %v", b, got, gerr, want, werr)
		}
	}
}

func TestHPACKMatchesXNet(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	names := []string{":status", "content-type", "grpc-status", "grpc-message", "x-custom", "date", ":path", "te", "Grpc-Status-Details-Bin"}
	values := []string{"200", "application/grpc", "0", "14", "a message with spaces: 100% ✓", "", "/rpc.CNIBackend/AddNetwork", "trailers",
		string(bytes.Repeat([]byte("v"), 300))}
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	ref := hpack.NewDecoder(4096, nil)
	dec := newHPACKDecoder()
	for block := 0; block < 500; block++ {
		buf.Reset()
		if r.IntN(20) == 0 {
			enc.SetMaxDynamicTableSize(uint32(r.IntN(4097)))
		}
		var sent []hpack.HeaderField
		for i := r.IntN(8); i >= 0; i-- {
			f := hpack.HeaderField{Name: names[r.IntN(len(names))], Value: values[r.IntN(len(values))], Sensitive: r.IntN(5) == 0}
			if r.IntN(4) == 0 {
				f.Value = fmt.Sprintf("v%d", r.IntN(1000))
			}
			if err := enc.WriteField(f); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, f)
		}
		want, err := ref.DecodeFull(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		got, err := dec.decode(buf.Bytes())
		if err != nil {
			t.Fatalf("block %d: %v", block, err)
		}
		if len(got) != len(want) {
			t.Fatalf("block %d: %d fields, x/net %d", block, len(got), len(want))
		}
		for i := range got {
			if got[i].name != want[i].Name || got[i].value != want[i].Value || got[i].name != sent[i].Name {
				t.Fatalf("block %d field %d: %q=%q, x/net %q=%q", block, i, got[i].name, got[i].value, want[i].Name, want[i].Value)
			}
		}
	}
	for _, bad := range [][]byte{{0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x40, 0x85, 'a'}, {0x3f, 0xe2, 0x1f}, {0xbf, 0x7f}} {
		if _, err := newHPACKDecoder().decode(bad); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}
