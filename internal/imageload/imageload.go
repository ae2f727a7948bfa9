// Package imageload makes images known to a containerd through its gRPC
// API, as `ctr images import` does, without sending the bytes of blobs
// its content store already holds.
//
// An import streams every blob through gRPC and unpacks every layer: about
// a second for a 60 MB image on an idle machine, and several while nodes
// boot beside it. Local nodes share one host, so `berth up` keeps one copy
// of each blob and hardlinks it into each node's content store; committing
// a blob the store already has is then a metadata write (containerd's
// shared content policy, its default). Layers are not unpacked here: the
// CRI plugin unpacks an image when a container first needs its snapshot,
// so a node unpacks only the images it runs.
package imageload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"github.com/containerd/containerd/api/types"
	digest "github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/berth-io/berth/internal/atomicfile"
	"github.com/berth-io/berth/internal/ociimage"
	"github.com/berth-io/berth/internal/unixsock"
)

// Blob is one blob of an image, held in a file.
type Blob struct {
	Desc v1.Descriptor
	Path string
}

// Image is a single-platform image: its manifest and what it names.
type Image struct {
	Name     string
	Manifest Blob
	Config   Blob
	Layers   []Blob
	Labels   map[string]string // of the image record, e.g. CRI's pinned label
}

// Save writes an image's blobs under dir (blobs/<alg>/<hex>, as in an OCI
// layout), each once: a file there has its digest's bytes. Its labels are
// those of the image record.
func Save(dir string, b *ociimage.Built, labels map[string]string) (Image, error) {
	save := func(blob ociimage.Blob) (Blob, error) {
		d := blob.Desc.Digest
		path := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
		if ok, err := holds(path, d); err != nil {
			return Blob{}, fmt.Errorf("image %s: %w", b.Name, err)
		} else if ok {
			return Blob{Desc: blob.Desc, Path: path}, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return Blob{}, fmt.Errorf("image %s: %w", b.Name, err)
		}
		// Read-only, as containerd keeps its blobs: the file is shared by
		// hardlinks with every node's content store.
		if err := atomicfile.WriteFile(path, blob.Data, 0o444); err != nil {
			return Blob{}, fmt.Errorf("image %s: %w", b.Name, err)
		}
		return Blob{Desc: blob.Desc, Path: path}, nil
	}
	img := Image{Name: b.Name, Labels: labels}
	var err error
	if img.Manifest, err = save(b.Manifest); err != nil {
		return Image{}, err
	}
	if img.Config, err = save(b.Config); err != nil {
		return Image{}, err
	}
	for _, l := range b.Layers {
		blob, err := save(l)
		if err != nil {
			return Image{}, err
		}
		img.Layers = append(img.Layers, blob)
	}
	return img, nil
}

// Store is one containerd.
type Store struct {
	Socket    string
	Namespace string // k8s.io for the CRI plugin's images
	// ContentDir is the content store's directory
	// (<root>/io.containerd.content.v1.content). When set, blobs are
	// hardlinked into it before they are committed; a blob that cannot be
	// linked (another file system) is sent instead.
	ContentDir string
}

// chunk is the size of one write message when a blob must be sent.
const chunk = 1 << 20

// holds says whether the file at path has d's bytes; a node's content
// store would trust them.
func holds(path string, d digest.Digest) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer f.Close()
	v := d.Verifier()
	if _, err := io.Copy(v, f); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return v.Verified(), nil
}

// Stats says how blobs reached the content store.
type Stats struct {
	Blobs     int   // committed, by either way
	SentBytes int64 // sent through gRPC, for blobs the store did not hold
}

// Load creates or updates each image. It waits for containerd to serve
// until ctx ends, so it may be called as soon as containerd is launched.
func (s Store) Load(ctx context.Context, imgs ...Image) (st Stats, err error) {
	conn, err := unixsock.Dial(s.Socket)
	if err != nil {
		return st, fmt.Errorf("containerd: %w", err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", s.Namespace)
	base := ctx

	// A lease keeps what is committed from containerd's garbage collector
	// until an image names it; it expires by itself if this process dies.
	leases := leasesapi.NewLeasesClient(conn)
	id := "berth-imageload-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := leases.Create(ctx, &leasesapi.CreateRequest{ID: id,
		Labels: map[string]string{"containerd.io/gc.expire": time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339)}},
		grpc.WaitForReady(true)); err != nil {
		return st, fmt.Errorf("containerd %s: lease: %w", s.Socket, err)
	}
	defer func() {
		// Not with the lease's own header, and also when ctx has ended.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(base), 10*time.Second)
		defer cancel()
		if _, derr := leases.Delete(dctx, &leasesapi.DeleteRequest{ID: id}); derr != nil && err == nil {
			err = fmt.Errorf("containerd %s: delete lease: %w", s.Socket, derr)
		}
	}()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-lease", id)

	content := contentapi.NewContentClient(conn)
	images := imagesapi.NewImagesClient(conn)
	for _, img := range imgs {
		if err := s.load(ctx, content, images, img, &st); err != nil {
			return st, fmt.Errorf("image %s: %w", img.Name, err)
		}
	}
	return st, nil
}

func (s Store) load(ctx context.Context, content contentapi.ContentClient, images imagesapi.ImagesClient, img Image, st *Stats) error {
	// Children first, so that no committed manifest names a missing blob.
	for _, b := range append(append([]Blob{img.Config}, img.Layers...), img.Manifest) {
		s.place(b)
		sent, err := commit(ctx, content, b)
		st.SentBytes += sent
		if err != nil {
			return err
		}
		st.Blobs++
	}
	// What the garbage collector follows from the manifest to its blobs,
	// as a pull labels it.
	labels := map[string]string{"containerd.io/gc.ref.content.config": img.Config.Desc.Digest.String()}
	for i, l := range img.Layers {
		labels["containerd.io/gc.ref.content.l."+strconv.Itoa(i)] = l.Desc.Digest.String()
	}
	if _, err := content.Update(ctx, &contentapi.UpdateRequest{
		Info:       &contentapi.Info{Digest: img.Manifest.Desc.Digest.String(), Labels: labels},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: labelPaths(labels)},
	}); err != nil {
		return fmt.Errorf("label manifest %s: %w", img.Manifest.Desc.Digest, err)
	}
	rec := &imagesapi.Image{Name: img.Name, Labels: img.Labels, Target: &types.Descriptor{
		MediaType: img.Manifest.Desc.MediaType, Digest: img.Manifest.Desc.Digest.String(), Size: img.Manifest.Desc.Size}}
	_, err := images.Create(ctx, &imagesapi.CreateImageRequest{Image: rec})
	if status.Code(err) == codes.AlreadyExists {
		// Another binary under the same name: point the name at it, and
		// keep labels others set (CRI's own).
		_, err = images.Update(ctx, &imagesapi.UpdateImageRequest{Image: rec,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: append(labelPaths(img.Labels), "target")}})
	}
	if err != nil {
		return fmt.Errorf("image record: %w", err)
	}
	return nil
}

func labelPaths(labels map[string]string) []string {
	var paths []string
	for k := range labels {
		paths = append(paths, "labels."+k)
	}
	return paths
}

// place hardlinks a blob into the content store, where committing it
// finds it. Failing that, commit sends it.
func (s Store) place(b Blob) {
	if s.ContentDir == "" {
		return
	}
	dir := filepath.Join(s.ContentDir, "blobs", b.Desc.Digest.Algorithm().String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	if err := os.Link(b.Path, filepath.Join(dir, b.Desc.Digest.Encoded())); err != nil && !errors.Is(err, fs.ErrExist) {
		return
	}
}

// commit makes a blob part of the namespace: at once when the content
// store holds it, else by sending it.
func commit(ctx context.Context, content contentapi.ContentClient, b Blob) (sent int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := content.Write(ctx)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", b.Desc.Digest, err)
	}
	ref := "berth-imageload-" + b.Desc.Digest.Encoded()
	dgst := b.Desc.Digest.String()
	// The first message opens the writer: AlreadyExists when the namespace
	// has the blob; an offset at the end when the content store has it
	// (shared content), so that a commit without data registers it.
	if err := w.Send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_STAT, Ref: ref,
		Total: b.Desc.Size, Expected: dgst}); err != nil {
		return 0, recvErr(w, b, err)
	}
	resp, err := w.Recv()
	if err != nil {
		if status.Code(err) == codes.AlreadyExists {
			return 0, nil
		}
		return 0, fmt.Errorf("write %s: %w", b.Desc.Digest, err)
	}
	if resp.Offset == b.Desc.Size && b.Desc.Size > 0 {
		// The offset must be given: a commit at offset 0 truncates, which
		// makes containerd copy the shared blob into a new ingest.
		if err := w.Send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Ref: ref,
			Offset: b.Desc.Size, Total: b.Desc.Size, Expected: dgst}); err != nil {
			return 0, recvErr(w, b, err)
		}
		if _, err := w.Recv(); err != nil && status.Code(err) != codes.AlreadyExists {
			return 0, fmt.Errorf("commit %s: %w", b.Desc.Digest, err)
		}
		return 0, w.CloseSend()
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", b.Desc.Digest, err)
	}
	defer f.Close()
	buf := make([]byte, chunk)
	var off int64
	for {
		n, rerr := io.ReadFull(f, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return off, fmt.Errorf("write %s: read %s: %w", b.Desc.Digest, b.Path, rerr)
		}
		last := rerr != nil || off+int64(n) == b.Desc.Size
		req := &contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Ref: ref, Offset: off, Data: buf[:n]}
		if last {
			// containerd checks the size and digest before the rename.
			req.Action, req.Total, req.Expected = contentapi.WriteAction_COMMIT, b.Desc.Size, dgst
		}
		if err := w.Send(req); err != nil {
			return off, recvErr(w, b, err)
		}
		off += int64(n)
		if _, err := w.Recv(); err != nil {
			if status.Code(err) == codes.AlreadyExists {
				return off, nil // committed meanwhile by another loader
			}
			return off, fmt.Errorf("write %s: %w", b.Desc.Digest, err)
		}
		if last {
			return off, w.CloseSend()
		}
	}
}

// recvErr turns a failed Send into the server's reason, which gRPC gives
// only to Recv.
func recvErr(w contentapi.Content_WriteClient, b Blob, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := w.Recv(); rerr != nil {
			err = rerr
		}
	}
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return fmt.Errorf("write %s: %w", b.Desc.Digest, err)
}
