package imageload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-io/berth/internal/ociimage"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/internal/unixsock"
)

// containerd is a real containerd with its own root, CRI plugin included.
type containerd struct {
	dir, sock string
	stop      func() // idempotent; also run at the test's end
}

func startContainerd(t testing.TB) *containerd {
	t.Helper()
	testenv.RequireRoot(t, "containerd's snapshotters mount")
	for _, tool := range []string{"containerd", "ctr"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (make deps)")
	}
	dir := t.TempDir()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "c.sock")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %q
  conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, filepath.Join(dir, "cni"), filepath.Join(dir, "cni"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(log.Name())
				t.Logf("containerd log:\n%s", b)
			}
		})
	}
	t.Cleanup(c.stop)
	return c
}

func (c *containerd) contentDir() string {
	return filepath.Join(c.dir, "root", "io.containerd.content.v1.content")
}

func (c *containerd) ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testImage is a one-file image of more than one write message.
func testImage(t *testing.T, dir, name string, fill byte) (Image, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte{fill}, chunk*2+12345)
	built, err := ociimage.Image{Name: name, Arch: runtime.GOARCH, Entrypoint: []string{"/data"},
		Files: []ociimage.File{{Path: "/data", Mode: 0o644, Data: data}}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	img, err := Save(dir, built, map[string]string{"io.cri-containerd.pinned": "pinned"})
	if err != nil {
		t.Fatal(err)
	}
	return img, data
}

func load(t testing.TB, s Store, imgs ...Image) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.Load(ctx, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLoadSharesBlobs loads an image into two containerds: with a content
// dir, no byte is sent and the store's file is the saved one; without,
// the blobs are sent. Either way ctr sees a complete image, unpacks and
// mounts it with the file's bytes, and the CRI plugin (kubelet's view)
// lists it under its name.
func TestLoadSharesBlobs(t *testing.T) {
	blobs := t.TempDir()
	img, data := testImage(t, blobs, "localhost/berth/imageload:test", 'a')
	var total int64
	for _, b := range append([]Blob{img.Config, img.Manifest}, img.Layers...) {
		total += b.Desc.Size
	}
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			c := startContainerd(t)
			s := Store{Socket: c.sock, Namespace: "k8s.io"}
			if shared {
				s.ContentDir = c.contentDir()
			}
			// Loaded while containerd may still be starting.
			st := load(t, s, img)
			if st.Blobs != 3 {
				t.Errorf("committed %d blobs, want 3", st.Blobs)
			}
			if want := map[bool]int64{true: 0, false: total}[shared]; st.SentBytes != want {
				t.Errorf("sent %d bytes, want %d", st.SentBytes, want)
			}
			layer := img.Layers[0]
			stored, err := os.Stat(filepath.Join(c.contentDir(), "blobs", "sha256", layer.Desc.Digest.Encoded()))
			if err != nil {
				t.Fatal(err)
			}
			saved, err := os.Stat(layer.Path)
			if err != nil {
				t.Fatal(err)
			}
			if os.SameFile(stored, saved) != shared {
				t.Errorf("store's layer is the saved file: %v, want %v", os.SameFile(stored, saved), shared)
			}

			// Loading again changes nothing and sends nothing.
			if st := load(t, s, img); st.SentBytes != 0 {
				t.Errorf("second load sent %d bytes", st.SentBytes)
			}
			if out := c.ctr(t, "images", "check"); !strings.Contains(out, img.Name) || !strings.Contains(out, "complete (2/2)") {
				t.Errorf("ctr images check:\n%s", out)
			}
			if out := c.ctr(t, "images", "ls"); !strings.Contains(out, "io.cri-containerd.pinned=pinned") {
				t.Errorf("image labels:\n%s", out)
			}
			criSees(t, c, img.Name, img.Config.Desc.Digest.String())

			mnt := t.TempDir()
			c.ctr(t, "images", "mount", img.Name, mnt)
			got, err := os.ReadFile(filepath.Join(mnt, "data"))
			c.ctr(t, "images", "unmount", "--rm", mnt)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("image's /data: %d bytes (%v), want %d", len(got), err, len(data))
			}
		})
	}
}

// TestLoadRetargets loads another image under the same name: the name
// follows it, and labels set by others (CRI's) stay.
func TestLoadRetargets(t *testing.T) {
	blobs := t.TempDir()
	c := startContainerd(t)
	s := Store{Socket: c.sock, Namespace: "k8s.io", ContentDir: c.contentDir()}
	first, _ := testImage(t, blobs, "localhost/berth/imageload:test", 'a')
	load(t, s, first)
	c.ctr(t, "images", "label", first.Name, "example.com/mine=kept")
	second, _ := testImage(t, blobs, "localhost/berth/imageload:test", 'b')
	load(t, s, second)
	out := c.ctr(t, "images", "ls", "name=="+first.Name)
	if !strings.Contains(out, second.Manifest.Desc.Digest.String()) || !strings.Contains(out, "example.com/mine=kept") {
		t.Errorf("after loading a second image under the name, want its manifest %s and the other label:\n%s", second.Manifest.Desc.Digest, out)
	}
	criSees(t, c, second.Name, second.Config.Desc.Digest.String())
}

// TestLoadBadBlob: a saved blob whose bytes are not its digest's is
// refused by containerd, with the digest in the error.
func TestLoadBadBlob(t *testing.T) {
	blobs := t.TempDir()
	img, _ := testImage(t, blobs, "localhost/berth/imageload:test", 'a')
	layer := img.Layers[0].Path
	if err := os.Chmod(layer, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(layer, bytes.Repeat([]byte{'z'}, int(img.Layers[0].Desc.Size)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Store{Socket: c.sock, Namespace: "k8s.io"}.Load(ctx, img)
	if err == nil || !strings.Contains(err.Error(), img.Layers[0].Desc.Digest.String()) {
		t.Fatalf("load of a corrupt layer: %v, want an error naming %s", err, img.Layers[0].Desc.Digest)
	}
	if out := c.ctr(t, "images", "ls", "-q"); strings.Contains(out, img.Name) {
		t.Errorf("image recorded despite its corrupt layer:\n%s", out)
	}
}

// criSees asks the CRI plugin, as kubelet does, for the image.
func criSees(t *testing.T, c *containerd, name, id string) {
	t.Helper()
	conn, err := unixsock.Dial(c.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	images := cri.NewImageServiceClient(conn)
	testenv.Eventually(t, 10*time.Second, "CRI lists "+name, func() bool {
		resp, err := images.ImageStatus(context.Background(), &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: name}})
		return err == nil && resp.Image != nil && resp.Image.Id == id
	})
}

// TestSaveOnce: saving an image again keeps its files (nodes' stores link
// them); a file whose bytes are not its digest's is written anew.
func TestSaveOnce(t *testing.T) {
	dir := t.TempDir()
	img, _ := testImage(t, dir, "localhost/berth/imageload:test", 'a')
	layer := img.Layers[0]
	before, err := os.Stat(layer.Path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Mode().Perm() != 0o444 {
		t.Errorf("blob mode %v, want read-only", before.Mode().Perm())
	}
	again, _ := testImage(t, dir, "localhost/berth/imageload:test", 'a')
	after, err := os.Stat(again.Layers[0].Path)
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("second save replaced the layer file (%v)", err)
	}
	if err := os.Chmod(layer.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(layer.Path, bytes.Repeat([]byte{'z'}, int(layer.Desc.Size)), 0o644); err != nil {
		t.Fatal(err)
	}
	testImage(t, dir, "localhost/berth/imageload:test", 'a')
	if ok, err := holds(layer.Path, layer.Desc.Digest); err != nil || !ok {
		t.Errorf("a corrupt layer file was kept (%v)", err)
	}
}

// BenchmarkLoad times making a 58 MB image (a CoreDNS-sized binary)
// runnable on a fresh containerd: Load with its blobs linked into the
// content store, against the peer, `ctr images import` of the same image
// as an OCI layout tar (what berth up did before), in the same run.
// Reported: each one's median and the ratio.
func BenchmarkLoad(b *testing.B) {
	data := make([]byte, 58<<20)
	for i := range data {
		data[i] = byte(i * 7919 >> 3) // not all zeros: no sparse shortcuts
	}
	built, err := ociimage.Image{Name: "localhost/berth/bench:1", Arch: runtime.GOARCH, Entrypoint: []string{"/bench"},
		Files: []ociimage.File{{Path: "/bench", Mode: 0o755, Data: data}}}.Build()
	if err != nil {
		b.Fatal(err)
	}
	img, err := Save(b.TempDir(), built, nil)
	if err != nil {
		b.Fatal(err)
	}
	var layout bytes.Buffer
	if err := built.WriteLayout(&layout); err != nil {
		b.Fatal(err)
	}
	// Load leaves the unpack to the CRI plugin's first container of the
	// image, so it is also timed with that unpack (ctr images mount
	// unpacks, then mounts) to count what a node pays before its pod runs.
	var loads, unpacked, imports []time.Duration
	for i := 0; i < b.N*3; i++ {
		for _, viaCtr := range []bool{i%2 == 0, i%2 != 0} {
			b.StopTimer()
			c := startContainerd(b)
			// Served before the clock starts, so both pay no start-up.
			load(b, Store{Socket: c.sock, Namespace: "warm"})
			b.StartTimer()
			start := time.Now()
			if viaCtr {
				cmd := exec.Command("ctr", "--address", c.sock, "--namespace", "k8s.io", "images", "import", "-")
				cmd.Stdin = bytes.NewReader(layout.Bytes())
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("ctr import: %v\n%s", err, out)
				}
				imports = append(imports, time.Since(start))
			} else {
				load(b, Store{Socket: c.sock, Namespace: "k8s.io", ContentDir: c.contentDir()}, img)
				loads = append(loads, time.Since(start))
				mnt := b.TempDir()
				c.ctr(b, "images", "mount", img.Name, mnt)
				unpacked = append(unpacked, time.Since(start))
				b.StopTimer()
				c.ctr(b, "images", "unmount", "--rm", mnt)
				b.StartTimer()
			}
			b.StopTimer()
			c.stop()
			b.StartTimer()
		}
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return d[len(d)/2].Seconds() * 1000
	}
	b.ReportMetric(med(loads), "load-ms")
	b.ReportMetric(med(imports), "ctr-import-ms")
	b.ReportMetric(med(unpacked), "load+unpack-ms")
	b.ReportMetric(med(loads)/med(imports), "load/import")
	b.ReportMetric(med(unpacked)/med(imports), "load+unpack/import")
	b.ReportMetric(0, "ns/op")
}
