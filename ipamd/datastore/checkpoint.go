package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CheckpointVersion is the Amazon VPC CNI's checkpoint format.
const CheckpointVersion = "vpc-cni-ipam/1"

type checkpointFile struct {
	Version     string            `json:"version"`
	Allocations []checkpointEntry `json:"allocations"`
}

type checkpointEntry struct {
	NetworkName         string             `json:"networkName"`
	ContainerID         string             `json:"containerID"`
	IfName              string             `json:"ifName"`
	IPv4                string             `json:"ipv4,omitempty"`
	IPv6                string             `json:"ipv6,omitempty"`
	AllocationTimestamp int64              `json:"allocationTimestamp"`
	Metadata            checkpointMetadata `json:"metadata"`
}

type checkpointMetadata struct {
	K8SPodNamespace string `json:"k8sPodNamespace,omitempty"`
	K8SPodName      string `json:"k8sPodName,omitempty"`
	InterfacesCount int    `json:"interfacesCount,omitempty"`
}

// ErrCorruptCheckpoint is returned for a checkpoint that cannot be decoded
// (empty, truncated, not JSON, another version): nothing in it can be
// trusted, so the caller rebuilds the allocations from elsewhere.
var ErrCorruptCheckpoint = errors.New("corrupt checkpoint")

// ReadCheckpoint loads allocations from path; a missing file is empty.
// Entries without a usable IPv4 address are skipped silently; see
// LoadCheckpoint.
func ReadCheckpoint(path string) ([]Allocation, error) {
	return LoadCheckpoint(path, slog.New(slog.DiscardHandler))
}

// LoadCheckpoint loads allocations from path; a missing file is empty. An
// entry without a usable IPv4 address (an IPv6-only one, written by a VPC
// CNI in IPv6 mode) is logged and skipped, as the VPC CNI skips it, so one
// odd entry does not cost the others. An undecodable file is
// ErrCorruptCheckpoint.
func LoadCheckpoint(path string, log *slog.Logger) ([]Allocation, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode checkpoint %s: %w: %w", path, ErrCorruptCheckpoint, err)
	}
	if f.Version != CheckpointVersion {
		return nil, fmt.Errorf("checkpoint %s: version %q, want %q: %w", path, f.Version, CheckpointVersion, ErrCorruptCheckpoint)
	}
	out := make([]Allocation, 0, len(f.Allocations))
	for _, e := range f.Allocations {
		ip, err := netip.ParseAddr(e.IPv4)
		if err != nil || !ip.Is4() {
			log.Warn("skipping a checkpoint entry without an IPv4 address", "path", path,
				"key", Key{e.NetworkName, e.ContainerID, e.IfName}, "ipv4", e.IPv4, "ipv6", e.IPv6)
			continue
		}
		out = append(out, Allocation{Key: Key{e.NetworkName, e.ContainerID, e.IfName}, IP: ip,
			Meta:       Meta{PodNamespace: e.Metadata.K8SPodNamespace, PodName: e.Metadata.K8SPodName, InterfacesCount: e.Metadata.InterfacesCount},
			AssignedAt: time.Unix(0, e.AllocationTimestamp)})
	}
	return out, nil
}

// MoveAside renames a corrupt checkpoint to <path>.corrupt-<unix time>,
// kept for a post-mortem, and returns the new name.
func MoveAside(path string, now time.Time) (string, error) {
	to := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move aside checkpoint %s: %w", path, err)
	}
	return to, nil
}

// tempPattern names write's temporary files, beside path.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".tmp-*" }

// RemoveTemps deletes the temporary files a crash between write's
// CreateTemp and Rename left beside path. Call it before any write.
func RemoveTemps(path string) error {
	names, err := filepath.Glob(filepath.Join(filepath.Dir(path), tempPattern(path)))
	if err != nil {
		return fmt.Errorf("list checkpoint temp files: %w", err)
	}
	var errs []error
	for _, n := range names {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove checkpoint temp file: %w", err))
		}
	}
	return errors.Join(errs...)
}

func encodeCheckpoint(allocs []Allocation) ([]byte, error) {
	f := checkpointFile{Version: CheckpointVersion, Allocations: make([]checkpointEntry, 0, len(allocs))}
	for _, a := range allocs {
		f.Allocations = append(f.Allocations, checkpointEntry{NetworkName: a.Key.NetworkName, ContainerID: a.Key.ContainerID,
			IfName: a.Key.IfName, IPv4: a.IP.String(), AllocationTimestamp: a.AssignedAt.UnixNano(),
			Metadata: checkpointMetadata{K8SPodNamespace: a.Meta.PodNamespace, K8SPodName: a.Meta.PodName, InterfacesCount: a.Meta.InterfacesCount}})
	}
	return json.Marshal(f)
}

// Checkpointer writes the store's allocations to disk atomically (temp
// file, fsync, rename). The directory is not fsynced: a rename lost to a
// power cut leaves the previous checkpoint, and after such a crash every
// pod's veth is gone, so restore releases all of it anyway; an ipamd crash
// keeps the page cache, rename included. Writes are group-committed:
// concurrent Sync calls share one write, so a burst of ADDs costs a few
// fsyncs, not one each, and no reply goes out before its allocation is on
// disk.
type Checkpointer struct {
	path  string
	store *Store

	mu       sync.Mutex
	finished chan struct{} // closed (and replaced) when a write ends
	want     uint64        // generations requested
	done     uint64        // generations written
	writing  bool
	lastErr  error
	errUpto  uint64 // the generations lastErr's write covered
	writes   int
	// writeFile writes the checkpoint (c.write; a test replaces it).
	writeFile func() error
}

// NewCheckpointer writes store to path.
func NewCheckpointer(path string, store *Store) *Checkpointer {
	c := &Checkpointer{path: path, store: store, finished: make(chan struct{})}
	c.writeFile = c.write
	return c
}

// Held is the store's held allocations, which are written with the
// store's.
func (c *Checkpointer) Held() *Held { return c.store.Held() }

// Writes reports how many files were written (for tests and metrics).
func (c *Checkpointer) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Sync returns once a checkpoint taken after the call began is on disk.
func (c *Checkpointer) Sync(ctx context.Context) error {
	c.mu.Lock()
	c.want++
	my := c.want
	for c.done < my {
		if !c.writing {
			// Lead a write covering every request made so far.
			c.writing = true
			upto := c.want
			c.mu.Unlock()
			err := c.writeFile()
			c.mu.Lock()
			c.writing = false
			c.lastErr, c.errUpto = err, upto
			if err == nil {
				c.done = upto
			}
			close(c.finished)
			c.finished = make(chan struct{})
			if err != nil {
				c.mu.Unlock()
				return err
			}
			continue
		}
		// Wait for the write in flight, or give up with ctx: a disk that
		// stalls must not hold every ADD and DEL (and their locks) with it.
		finished := c.finished
		c.mu.Unlock()
		select {
		case <-finished:
		case <-ctx.Done():
			return fmt.Errorf("wait for the checkpoint write: %w", ctx.Err())
		}
		c.mu.Lock()
		// A failed write that covered this request fails it too; one that
		// began before it did not carry its change: write again.
		if c.done < my && !c.writing && c.lastErr != nil && my <= c.errUpto {
			err := c.lastErr
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	return nil
}

func (c *Checkpointer) write() (err error) {
	b, err := encodeCheckpoint(c.store.allocationsAndHeld())
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint dir: %w", err)
	}
	f, err := os.CreateTemp(dir, tempPattern(c.path))
	if err != nil {
		return fmt.Errorf("checkpoint temp: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync checkpoint: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close checkpoint: %w", err)
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod checkpoint: %w", err)
	}
	if err = os.Rename(f.Name(), c.path); err != nil {
		return fmt.Errorf("rename checkpoint: %w", err)
	}
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return nil
}
