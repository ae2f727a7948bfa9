package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/ipamd/datastore"
)

// vethFinder finds the host veths of restored allocations' pods. A pod
// keeps the veth it was made with when AWS_VPC_K8S_CNI_VETHPREFIX changes,
// so a pod whose veth is not under the current prefix is looked for by the
// name's hash under any prefix before it is taken for gone: a restart with
// a new prefix must not release running pods' addresses. The link dump
// that takes is made once per finder, on the first miss.
type vethFinder struct {
	prefix   string
	byHash   map[string]string // hash → veth name, once dumped
	dumpedAt time.Time
}

func newVethFinder(prefix string) *vethFinder { return &vethFinder{prefix: prefix} }

// find returns the name of the pod's veth; "" when it has none.
func (f *vethFinder) find(namespace, pod string) (string, error) {
	name := VethName(f.prefix, namespace, pod)
	_, err := netlink.LinkByName(name)
	if err == nil {
		return name, nil
	}
	if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return "", fmt.Errorf("look up veth %s: %w", name, err)
	}
	// One dump serves a pass over many allocations; a look a second later
	// (the sweep's second look, under the pod's lock) dumps again.
	if f.byHash == nil || time.Since(f.dumpedAt) > time.Second {
		f.dumpedAt = time.Now()
		links, err := dumpRetry(context.Background(), "links", netlink.LinkList)
		if err != nil {
			return "", err
		}
		f.byHash = map[string]string{}
		for _, l := range links {
			if _, hash, ok := vethname.Split(l.Attrs().Name); ok && l.Type() == "veth" {
				f.byHash[hash] = l.Attrs().Name
			}
		}
	}
	return f.byHash[vethname.Hash(namespace, pod)], nil
}

// present reports whether a's pod is still on the node: its veth is there
// and routes the address. A new sandbox of the same pod has a veth of the
// same name and its own address, so the name alone would keep an earlier
// sandbox's address (one whose DEL ipamd did not answer) for as long as
// the pod runs. Allocations that name no pod (a VPC CNI gRPC ADD without
// Kubernetes arguments) are present, and so is anything the kernel could
// not be asked about: keeping an address too long is safe, handing a live
// pod's address to another is not. An ADD in flight has no route yet; the
// sweep leaves allocations younger than 30 s alone and looks again
// under the attachment's lock, which the ADD holds.
func (f *vethFinder) present(a datastore.Allocation) bool { return f.presentOn(a, 0) }

// presentOn is present for a multi-NIC pod's interface index (0: eth0),
// whose host veth is named after "<pod>.<index>", as the VPC CNI names it.
func (f *vethFinder) presentOn(a datastore.Allocation, index int) bool {
	v, ok := a.HostVeth()
	if !ok {
		if a.Meta.PodName == "" {
			return true
		}
		var err error
		if v, err = f.find(a.Meta.PodNamespace, vethname.Interface(a.Meta.PodName, index)); err != nil {
			return true
		}
		if v == "" {
			return false
		}
	}
	l, route, err := podnet.HostRoute(v, net.IP(a.IP.AsSlice()))
	return err != nil || (l != nil && route != nil)
}

// hostAllocations rebuilds the allocations of the pods on this host from
// what berth-cni left in the main table: each pod's veth (named with the
// prefix) routes the pod's address as "<ip>/32 dev <veth> scope link".
// Used when the checkpoint is lost: those addresses are in use whatever the
// file said. Veths named as under another prefix count too (pods made
// before a change of the prefix).
func hostAllocations(ctx context.Context, vethPrefix string, now time.Time) ([]datastore.Allocation, error) {
	links, err := dumpRetry(ctx, "links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	veths := map[int]string{}
	for _, l := range links {
		name := l.Attrs().Name
		if _, _, hashed := vethname.Split(name); l.Type() == "veth" && (hashed || strings.HasPrefix(name, vethPrefix)) {
			veths[l.Attrs().Index] = name
		}
	}
	routes, err := dumpRetry(ctx, "routes", func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	var out []datastore.Allocation
	for _, r := range routes {
		veth, ok := veths[r.LinkIndex]
		if !ok || r.Dst == nil || r.Scope != netlink.SCOPE_LINK {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok {
			continue
		}
		out = append(out, datastore.Allocation{Key: datastore.HostKey(veth), IP: ip, AssignedAt: now})
	}
	return out, nil
}

// dumpRetry runs a netlink dump, retrying ones the kernel interrupted
// because the table changed underneath.
func dumpRetry[T any](ctx context.Context, what string, list func() ([]T, error)) ([]T, error) {
	for attempt := 1; ; attempt++ {
		v, err := list()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == 10 || ctx.Err() != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
	}
}

// liveAddrs are the addresses whose pod rules and routes must survive the
// start-up prune: the store's and the held ones (their pods are running).
func liveAddrs(cards []*card) map[netip.Addr]bool {
	live := map[netip.Addr]bool{}
	for _, c := range cards {
		for _, a := range c.ds.Allocations() {
			live[a.IP] = true
		}
		for _, a := range c.cp.Held().List() {
			live[a.IP] = true
		}
	}
	return live
}
