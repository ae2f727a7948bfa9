package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// ReadCheckpoint loads allocations from path; a missing file is empty.
func ReadCheckpoint(path string) ([]Allocation, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode checkpoint %s: %w", path, err)
	}
	if f.Version != CheckpointVersion {
		return nil, fmt.Errorf("checkpoint %s: version %q, want %q", path, f.Version, CheckpointVersion)
	}
	out := make([]Allocation, 0, len(f.Allocations))
	for _, e := range f.Allocations {
		ip, err := netip.ParseAddr(e.IPv4)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: allocation %s/%s: bad ipv4 %q", path, e.ContainerID, e.IfName, e.IPv4)
		}
		out = append(out, Allocation{Key: Key{e.NetworkName, e.ContainerID, e.IfName}, IP: ip,
			Meta:       Meta{PodNamespace: e.Metadata.K8SPodNamespace, PodName: e.Metadata.K8SPodName, InterfacesCount: e.Metadata.InterfacesCount},
			AssignedAt: time.Unix(0, e.AllocationTimestamp)})
	}
	return out, nil
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

	mu      sync.Mutex
	cond    *sync.Cond
	want    uint64 // generations requested
	done    uint64 // generations written
	writing bool
	lastErr error
	writes  int
}

// NewCheckpointer writes store to path.
func NewCheckpointer(path string, store *Store) *Checkpointer {
	c := &Checkpointer{path: path, store: store}
	c.cond = sync.NewCond(&c.mu)
	return c
}

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
			err := c.write()
			c.mu.Lock()
			c.writing = false
			c.lastErr = err
			if err == nil {
				c.done = upto
			}
			c.cond.Broadcast()
			if err != nil {
				c.mu.Unlock()
				return err
			}
			continue
		}
		if ctx.Err() != nil {
			c.mu.Unlock()
			return ctx.Err()
		}
		c.cond.Wait()
		if c.done < my && !c.writing && c.lastErr != nil {
			err := c.lastErr
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	return nil
}

func (c *Checkpointer) write() (err error) {
	b, err := encodeCheckpoint(c.store.Allocations())
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".ipam.json.tmp-*")
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
