package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// hook is one of the two TCX attach points on a host veth.
type hook struct {
	name   string // pin file suffix
	attach ebpf.AttachType
}

var hooks = [2]hook{
	{"tcx_ingress", ebpf.AttachTCXIngress}, // from the pod: its egress policy
	{"tcx_egress", ebpf.AttachTCXEgress},   // to the pod: its ingress policy
}

func (d *Datapath) program(h hook) *ebpf.Program {
	if h.attach == ebpf.AttachTCXIngress {
		return d.objs.NetpolEgress
	}
	return d.objs.NetpolIngress
}

func (d *Datapath) linkPath(ifindex int, h hook) string {
	return filepath.Join(d.linksDir, strconv.Itoa(ifindex)+"_"+h.name)
}

// Attach attaches the programs to both TCX hooks of the host veth ifindex
// (an index in the caller's network namespace) and pins the links. On an
// already attached ifindex the links are kept and, when they run another
// program (an upgrade), updated to this one in place, with no window in
// which the pod is unenforced. Call Apply first: a pod attached without
// state is denied.
func (d *Datapath) Attach(ifindex int) (err error) {
	if ifindex <= 0 {
		return fmt.Errorf("attach: invalid ifindex %d", ifindex)
	}
	var created []link.Link
	defer func() {
		// Half attached would enforce one direction only: undo.
		for _, l := range created {
			if err != nil {
				_ = l.Unpin()
			}
			_ = l.Close()
		}
	}()
	for _, h := range hooks {
		prog := d.program(h)
		path := d.linkPath(ifindex, h)
		kept, err := d.reuseLink(path, ifindex, prog)
		if err != nil {
			return err
		}
		if kept {
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: h.attach})
		if err != nil {
			return fmt.Errorf("attach %s to ifindex %d: %w", h.name, ifindex, err)
		}
		created = append(created, l)
		if err := l.Pin(path); err != nil {
			return fmt.Errorf("pin %s link of ifindex %d: %w", h.name, ifindex, err)
		}
	}
	return nil
}

// reuseLink keeps a pinned link that is still attached to ifindex,
// updating its program to prog, and drops one whose device is gone.
func (d *Datapath) reuseLink(path string, ifindex int, prog *ebpf.Program) (bool, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load pinned link %s: %w", path, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("link info %s: %w", path, err)
	}
	if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != ifindex {
		// The veth went away (and its index may be reused): the link is
		// defunct.
		d.log.Info("dropping defunct link", "path", path)
		if err := l.Unpin(); err != nil {
			return false, fmt.Errorf("unpin %s: %w", path, err)
		}
		return false, nil
	}
	pinfo, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("program info: %w", err)
	}
	if id, ok := pinfo.ID(); ok && id == info.Program {
		return true, nil
	}
	if err := l.Update(prog); err != nil {
		return false, fmt.Errorf("update program of %s: %w", path, err)
	}
	d.log.Info("link updated to the loaded program", "path", path)
	return true, nil
}

// detach unpins and closes both links of ifindex, which detaches the
// programs; missing links are fine.
func (d *Datapath) detach(ifindex int) error {
	for _, h := range hooks {
		path := d.linkPath(ifindex, h)
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned link %s: %w", path, err)
		}
		uerr := l.Unpin()
		cerr := l.Close()
		if err := errors.Join(uerr, cerr); err != nil {
			return fmt.Errorf("detach %s: %w", path, err)
		}
	}
	return nil
}

// Attached lists the ifindexes that have pinned links, for an agent that
// restarts and reconciles.
func (d *Datapath) Attached() ([]int, error) {
	entries, err := os.ReadDir(d.linksDir)
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", d.linksDir, err)
	}
	var out []int
	for _, e := range entries {
		idx, _, ok := strings.Cut(e.Name(), "_")
		if n, err := strconv.Atoi(idx); ok && err == nil && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}
