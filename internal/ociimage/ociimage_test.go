package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// entry is one member of a tar, in order.
type entry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar member %s: %v", h.Name, err)
		}
		out = append(out, entry{h, data})
	}
}

func byName(t *testing.T, entries []entry) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	for _, e := range entries {
		if _, dup := m[e.hdr.Name]; dup {
			t.Errorf("tar member %s appears twice", e.hdr.Name)
		}
		m[e.hdr.Name] = e
	}
	return m
}

// blob returns the layout's blob for d after checking that its content
// has d's digest and size.
func blob(t *testing.T, files map[string]entry, d v1.Descriptor) []byte {
	t.Helper()
	if d.Digest.Algorithm() != digest.SHA256 {
		t.Fatalf("descriptor %s: algorithm %s, want sha256", d.Digest, d.Digest.Algorithm())
	}
	name := "blobs/sha256/" + d.Digest.Encoded()
	e, ok := files[name]
	if !ok {
		t.Fatalf("no blob %s in the layout", name)
	}
	if e.hdr.Typeflag != tar.TypeReg {
		t.Errorf("blob %s: type %c, want a regular file", name, e.hdr.Typeflag)
	}
	sum := sha256.Sum256(e.data)
	if got := hex.EncodeToString(sum[:]); got != d.Digest.Encoded() {
		t.Errorf("blob %s: content sha256 %s, want the descriptor's %s", name, got, d.Digest.Encoded())
	}
	if int64(len(e.data)) != d.Size || e.hdr.Size != d.Size {
		t.Errorf("blob %s: %d bytes (header %d), descriptor size %d", name, len(e.data), e.hdr.Size, d.Size)
	}
	return e.data
}

func decode(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, data)
	}
}

func write(t *testing.T, im Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := im.WriteLayout(&b); err != nil {
		t.Fatalf("WriteLayout: %v", err)
	}
	return b.Bytes()
}

var pauseData = []byte("\x7fELF fake pause binary")

func testImage() Image {
	return Image{
		Name:       "localhost/berth/pause:3.10",
		Arch:       "arm64",
		Entrypoint: []string{"/pause", "-v"},
		Files: []File{
			{Path: "/pause", Mode: 0o755, Data: pauseData},
			{Path: "/usr/bin/x", Mode: 0o700, Data: []byte("x's bytes")},
			{Path: "/usr/bin/y", Mode: 0o644, Data: []byte("y")},
			{Path: "/usr/lib/z", Mode: 0o600, Data: nil},
		},
	}
}

func TestWriteLayout(t *testing.T) {
	im := testImage()
	files := byName(t, readTar(t, write(t, im)))

	// oci-layout.
	ol, ok := files[v1.ImageLayoutFile]
	if !ok {
		t.Fatalf("no %s in the layout", v1.ImageLayoutFile)
	}
	var layout v1.ImageLayout
	decode(t, v1.ImageLayoutFile, ol.data, &layout)
	if layout.Version != v1.ImageLayoutVersion {
		t.Errorf("oci-layout version %q, want %q", layout.Version, v1.ImageLayoutVersion)
	}

	// index.json: one manifest, named and for linux/<arch>.
	ix, ok := files[v1.ImageIndexFile]
	if !ok {
		t.Fatalf("no %s in the layout", v1.ImageIndexFile)
	}
	var index v1.Index
	decode(t, v1.ImageIndexFile, ix.data, &index)
	if index.SchemaVersion != 2 {
		t.Errorf("index schemaVersion %d, want 2", index.SchemaVersion)
	}
	if index.MediaType != v1.MediaTypeImageIndex {
		t.Errorf("index mediaType %q, want %q", index.MediaType, v1.MediaTypeImageIndex)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1: %s", len(index.Manifests), ix.data)
	}
	md := index.Manifests[0]
	if md.MediaType != v1.MediaTypeImageManifest {
		t.Errorf("manifest descriptor mediaType %q, want %q", md.MediaType, v1.MediaTypeImageManifest)
	}
	if got := md.Annotations["io.containerd.image.name"]; got != im.Name {
		t.Errorf("io.containerd.image.name = %q, want %q", got, im.Name)
	}
	if got := md.Annotations[v1.AnnotationRefName]; got != "3.10" {
		t.Errorf("%s = %q, want the tag 3.10", v1.AnnotationRefName, got)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != "arm64" {
		t.Errorf("manifest platform %+v, want linux/arm64", md.Platform)
	}

	// The manifest.
	var manifest v1.Manifest
	decode(t, "manifest", blob(t, files, md), &manifest)
	if manifest.SchemaVersion != 2 || manifest.MediaType != v1.MediaTypeImageManifest {
		t.Errorf("manifest schemaVersion %d mediaType %q", manifest.SchemaVersion, manifest.MediaType)
	}
	if manifest.Config.MediaType != v1.MediaTypeImageConfig {
		t.Errorf("config mediaType %q, want %q", manifest.Config.MediaType, v1.MediaTypeImageConfig)
	}
	if len(manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(manifest.Layers))
	}
	ld := manifest.Layers[0]
	if ld.MediaType != v1.MediaTypeImageLayer {
		t.Errorf("layer mediaType %q, want %q", ld.MediaType, v1.MediaTypeImageLayer)
	}

	// The config.
	var cfg v1.Image
	decode(t, "config", blob(t, files, manifest.Config), &cfg)
	if cfg.OS != "linux" || cfg.Architecture != "arm64" {
		t.Errorf("config platform %s/%s, want linux/arm64", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, im.Entrypoint) {
		t.Errorf("config entrypoint %q, want %q", cfg.Config.Entrypoint, im.Entrypoint)
	}
	if cfg.RootFS.Type != "layers" || !slices.Equal(cfg.RootFS.DiffIDs, []digest.Digest{ld.Digest}) {
		t.Errorf("config rootfs %+v, want layers [%s] (the uncompressed layer's digest)", cfg.RootFS, ld.Digest)
	}

	// The layer: parents first, outermost first, then each file.
	layer := readTar(t, blob(t, files, ld))
	type member struct {
		name string
		typ  byte
		mode int64
		data string
	}
	want := []member{
		{"pause", tar.TypeReg, 0o755, string(pauseData)},
		{"usr/", tar.TypeDir, 0o755, ""},
		{"usr/bin/", tar.TypeDir, 0o755, ""},
		{"usr/bin/x", tar.TypeReg, 0o700, "x's bytes"},
		{"usr/bin/y", tar.TypeReg, 0o644, "y"},
		{"usr/lib/", tar.TypeDir, 0o755, ""},
		{"usr/lib/z", tar.TypeReg, 0o600, ""},
	}
	var got []member
	for _, e := range layer {
		got = append(got, member{e.hdr.Name, e.hdr.Typeflag, e.hdr.Mode, string(e.data)})
		if e.hdr.Typeflag == tar.TypeReg && e.hdr.Size != int64(len(e.data)) {
			t.Errorf("layer %s: header size %d, %d bytes", e.hdr.Name, e.hdr.Size, len(e.data))
		}
		if !e.hdr.ModTime.Equal(epoch) {
			t.Errorf("layer %s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, epoch)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer members:\n got %+v\nwant %+v", got, want)
	}

	// Nothing else in the layout: the three blobs and the two files.
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	wantNames := []string{
		"blobs/sha256/" + ld.Digest.Encoded(),
		"blobs/sha256/" + manifest.Config.Digest.Encoded(),
		"blobs/sha256/" + md.Digest.Encoded(),
		v1.ImageIndexFile, v1.ImageLayoutFile,
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("layout members %q, want %q", names, wantNames)
	}
}

func TestWriteLayoutRefNameIsLastColon(t *testing.T) {
	// A registry port has a colon too: the tag is after the last one.
	im := testImage()
	im.Name = "localhost:5000/berth/pause:v1"
	files := byName(t, readTar(t, write(t, im)))
	var index v1.Index
	decode(t, v1.ImageIndexFile, files[v1.ImageIndexFile].data, &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	a := index.Manifests[0].Annotations
	if a["io.containerd.image.name"] != im.Name || a[v1.AnnotationRefName] != "v1" {
		t.Errorf("annotations %v, want image name %q and ref name v1", a, im.Name)
	}
}

func TestWriteLayoutDeterministic(t *testing.T) {
	a, b := write(t, testImage()), write(t, testImage())
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same image differ")
	}
	// ...and the bytes do depend on the content.
	im := testImage()
	im.Files[0].Data = []byte("another pause")
	if bytes.Equal(a, write(t, im)) {
		t.Fatal("a different file gives the same layout")
	}
}

func TestWriteLayoutErrors(t *testing.T) {
	for _, tc := range []struct {
		what string
		edit func(*Image)
	}{
		{"empty name", func(im *Image) { im.Name = "" }},
		{"name without tag", func(im *Image) { im.Name = "pause" }},
		{"relative path", func(im *Image) { im.Files = []File{{Path: "pause", Mode: 0o755}} }},
		{"path with ..", func(im *Image) { im.Files = []File{{Path: "/a/../b", Mode: 0o644}} }},
		{"path with //", func(im *Image) { im.Files = []File{{Path: "/a//b", Mode: 0o644}} }},
		{"trailing slash", func(im *Image) { im.Files = []File{{Path: "/a/", Mode: 0o644}} }},
		{"root", func(im *Image) { im.Files = []File{{Path: "/", Mode: 0o755}} }},
		{"empty path", func(im *Image) { im.Files = []File{{Path: "", Mode: 0o755}} }},
		{"bad path after good ones", func(im *Image) { im.Files = append(im.Files, File{Path: "./x"}) }},
		{"registry port but no tag", func(im *Image) { im.Name = "localhost:5000/berth/pause" }},
		{"empty tag", func(im *Image) { im.Name = "berth/pause:" }},
		{"file twice", func(im *Image) { im.Files = []File{{Path: "/a", Mode: 0o644}, {Path: "/a", Mode: 0o644}} }},
		{"file under a file", func(im *Image) { im.Files = []File{{Path: "/a", Mode: 0o644}, {Path: "/a/b", Mode: 0o644}} }},
		{"file over a directory", func(im *Image) { im.Files = []File{{Path: "/a/b", Mode: 0o644}, {Path: "/a", Mode: 0o644}} }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			im := testImage()
			tc.edit(&im)
			var b bytes.Buffer
			err := im.WriteLayout(&b)
			if err == nil {
				t.Fatalf("WriteLayout of %+v: no error", im)
			}
			if b.Len() != 0 {
				t.Errorf("WriteLayout failed (%v) but wrote %d bytes", err, b.Len())
			}
			if strings.Contains(tc.what, "path") && !strings.Contains(err.Error(), "clean absolute path") {
				t.Errorf("error %q does not name the bad path", err)
			}
		})
	}
}
