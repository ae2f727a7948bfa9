// Package ociimage writes a one-layer container image as an OCI image
// layout tar, the format `ctr images import` and `docker load` read. Local
// nodes have no registry: the images they need (the pod sandbox's pause)
// are built from berth's own static binaries and imported.
package ociimage

import (
	"archive/tar"
	"bytes"
	_ "crypto/sha256" // go-digest's sha256, which it finds registered or panics
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one regular file of the image's layer.
type File struct {
	Path string // absolute, e.g. /pause
	Mode int64
	Data []byte
}

// Image is a single-layer image for linux/<Arch>.
type Image struct {
	// Name is the full reference containerd lists it under, e.g.
	// localhost/berth/pause:3.10.
	Name       string
	Arch       string // GOARCH spelling, e.g. amd64
	Entrypoint []string
	Files      []File
}

// epoch is every timestamp in the image: the same binary gives the same
// image digest, so a repeated import is a no-op.
var epoch = time.Unix(0, 0).UTC()

// Blob is one content-addressed blob of an image.
type Blob struct {
	Desc v1.Descriptor
	Data []byte
}

// Built is an image as its blobs: what a registry or a content store holds.
type Built struct {
	Name     string
	Manifest Blob // its descriptor carries the platform and the name annotations
	Config   Blob
	Layers   []Blob
}

// Build makes the image's layer, config and manifest.
func (im Image) Build() (*Built, error) {
	// The tag follows the last ':' after the last '/' (a registry's port
	// is not a tag).
	last := im.Name[strings.LastIndex(im.Name, "/")+1:]
	if i := strings.LastIndex(last, ":"); i <= 0 || i == len(last)-1 {
		return nil, fmt.Errorf("image name %q: want repository:tag", im.Name)
	}
	layer, err := im.layer()
	if err != nil {
		return nil, err
	}
	layerDesc := descriptor(v1.MediaTypeImageLayer, layer)
	created := epoch
	cfg, err := json.Marshal(v1.Image{
		Created:  &created,
		Platform: v1.Platform{OS: "linux", Architecture: im.Arch},
		Config:   v1.ImageConfig{Entrypoint: im.Entrypoint},
		// The layer is an uncompressed tar, so its diff ID is its digest.
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cfgDesc := descriptor(v1.MediaTypeImageConfig, cfg)
	manifest, err := json.Marshal(v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest,
		Config: cfgDesc, Layers: []v1.Descriptor{layerDesc}})
	if err != nil {
		return nil, fmt.Errorf("image manifest: %w", err)
	}
	mDesc := descriptor(v1.MediaTypeImageManifest, manifest)
	mDesc.Platform = &v1.Platform{OS: "linux", Architecture: im.Arch}
	mDesc.Annotations = map[string]string{
		// containerd names an imported image after this annotation...
		"io.containerd.image.name": im.Name,
		// ...and other tools after the tag in this one.
		v1.AnnotationRefName: im.Name[strings.LastIndex(im.Name, ":")+1:],
	}
	return &Built{Name: im.Name, Manifest: Blob{mDesc, manifest}, Config: Blob{cfgDesc, cfg},
		Layers: []Blob{{layerDesc, layer}}}, nil
}

// WriteLayout writes the image as an OCI image layout tar to w.
func (im Image) WriteLayout(w io.Writer) error {
	b, err := im.Build()
	if err != nil {
		return err
	}
	return b.WriteLayout(w)
}

// WriteLayout writes the built image as an OCI image layout tar to w.
func (b *Built) WriteLayout(w io.Writer) error {
	index, err := json.Marshal(v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{b.Manifest.Desc}})
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	layout, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	type entry struct {
		name string
		data []byte
	}
	files := []entry{{v1.ImageLayoutFile, layout}}
	for _, blob := range append(slices.Clone(b.Layers), b.Config, b.Manifest) {
		files = append(files, entry{"blobs/sha256/" + blob.Desc.Digest.Encoded(), blob.Data})
	}
	files = append(files, entry{v1.ImageIndexFile, index})
	tw := tar.NewWriter(w)
	for _, f := range files {
		if err := writeFile(tw, f.name, 0o644, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layer is the tar of im.Files, with their parent directories.
func (im Image) layer() ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs, files := map[string]bool{}, map[string]bool{}
	for _, f := range im.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("image file %q: want a clean absolute path", f.Path)
		}
		rel := strings.TrimPrefix(f.Path, "/")
		if files[rel] || dirs[rel] {
			return nil, fmt.Errorf("image file %q: given twice, or also a directory", f.Path)
		}
		files[rel] = true
		// Parents first, outermost first.
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if files[d] {
				return nil, fmt.Errorf("image file %q: /%s is a file", f.Path, d)
			}
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		if err := writeFile(tw, rel, f.Mode, f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	return nil
}

func descriptor(mediaType string, data []byte) v1.Descriptor {
	return v1.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}
