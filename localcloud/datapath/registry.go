package datapath

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
)

// The registry records every kernel object a localcloud made, with the pid
// of its owner, in RegistryDir (tmpfs, so a reboot empties it). A run that
// dies without cleaning up leaves entries whose pid is gone; the next
// localcloud to start removes those objects, whatever state dir they
// belonged to, and never touches objects of a live run.

// DefaultRegistryDir is where entries live.
const DefaultRegistryDir = "/run/berth-localcloud"

type entry struct {
	Kind string `json:"kind"` // netns | link | loop | symlink | file
	Name string `json:"name"` // netns name, host link name, /dev/loopN, link path
	// Backing is the file behind a loop device, to check it is still ours.
	Backing string `json:"backing,omitempty"`
	PID     int    `json:"pid"`
	// StartTime guards against pid reuse (field 22 of /proc/pid/stat).
	StartTime string `json:"startTime"`
}

type registry struct {
	dir   string
	pid   int
	start string
	log   *slog.Logger
}

func newRegistry(dir string, log *slog.Logger) (*registry, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("registry %s: %w", dir, err)
	}
	pid := os.Getpid()
	return &registry{dir: dir, pid: pid, start: procStart(pid), log: log}, nil
}

func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command may contain spaces: fields count from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func (r *registry) path(kind, name string) string {
	return filepath.Join(r.dir, kind+"_"+strings.NewReplacer("/", "_").Replace(name))
}

func (r *registry) add(kind, name, backing string) error {
	b, _ := json.Marshal(entry{Kind: kind, Name: name, Backing: backing, PID: r.pid, StartTime: r.start})
	if err := os.WriteFile(r.path(kind, name), b, 0o600); err != nil {
		return fmt.Errorf("registry add %s %s: %w", kind, name, err)
	}
	return nil
}

func (r *registry) remove(kind, name string) {
	if err := os.Remove(r.path(kind, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("registry remove", "kind", kind, "name", name, "err", err)
	}
}

func alive(pid int, start string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	return start == "" || procStart(pid) == start
}

// sweep removes the objects of dead owners. It returns how many it removed.
func (r *registry) sweep() int {
	files, err := os.ReadDir(r.dir)
	if err != nil {
		return 0
	}
	var entries []entry
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(r.dir, f.Name()))
		if err != nil {
			continue
		}
		var e entry
		if json.Unmarshal(b, &e) != nil {
			_ = os.Remove(filepath.Join(r.dir, f.Name()))
			continue
		}
		if e.PID == r.pid || alive(e.PID, e.StartTime) {
			continue
		}
		entries = append(entries, e)
	}
	// Order matters: mounts and symlinks before loop devices, namespaces
	// (which take their links with them) before host links.
	order := map[string]int{"symlink": 0, "loop": 1, "netns": 2, "link": 3, "file": 4}
	removed := 0
	for pass := 0; pass <= 4; pass++ {
		for _, e := range entries {
			if order[e.Kind] != pass {
				continue
			}
			if err := removeObject(e); err != nil {
				r.log.Warn("sweep leftover", "kind", e.Kind, "name", e.Name, "err", err)
				continue
			}
			_ = os.Remove(r.path(e.Kind, e.Name))
			removed++
		}
	}
	return removed
}

func removeObject(e entry) error {
	switch e.Kind {
	case "netns":
		return deleteNetns(e.Name)
	case "link":
		l, err := netlink.LinkByName(e.Name)
		if err != nil {
			return nil // gone already
		}
		return netlink.LinkDel(l)
	case "loop":
		if b, err := loopBacking(e.Name); err == nil && strings.TrimSuffix(b, " (deleted)") != e.Backing {
			return nil // the device has been reused by someone else
		}
		return loopDetach(e.Name)
	case "symlink":
		if err := os.Remove(e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	case "file":
		if err := os.Remove(e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	case "nft":
		// Declaring the table first makes its deletion succeed when it is
		// already gone.
		return nft(fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", e.Name))
	}
	return fmt.Errorf("unknown kind %q", e.Kind)
}
