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
	"github.com/berth-io/berth/ipamd/datastore"
)

// podVeth is the host veth whose presence says a restored allocation's pod
// is still there; false when the allocation names none (a VPC CNI gRPC ADD
// without Kubernetes arguments).
func podVeth(vethPrefix string, a datastore.Allocation) (string, bool) {
	if v, ok := a.HostVeth(); ok {
		return v, true
	}
	if a.Meta.PodName == "" {
		return "", false
	}
	return VethName(vethPrefix, a.Meta.PodNamespace, a.Meta.PodName), true
}

// podGone reports whether a's pod veth is gone (the orphan sweep's test).
// An allocation rebuilt from the host is also gone once its veth no longer
// routes the address: a new sandbox of the same pod has a veth of the same
// name, and its own address.
func podGone(vethPrefix string, a datastore.Allocation) bool {
	v, ok := podVeth(vethPrefix, a)
	if !ok {
		return false
	}
	if _, host := a.HostVeth(); !host {
		_, err := netlink.LinkByName(v)
		return err != nil
	}
	l, route, err := podnet.HostRoute(v, net.IP(a.IP.AsSlice()))
	if err != nil {
		return false // keep it; the next sweep looks again
	}
	return l == nil || route == nil
}

// hostAllocations rebuilds the allocations of the pods on this host from
// what berth-cni left in the main table: each pod's veth (named with the
// prefix) routes the pod's address as "<ip>/32 dev <veth> scope link".
// Used when the checkpoint is lost: those addresses are in use whatever the
// file said.
func hostAllocations(ctx context.Context, vethPrefix string, now time.Time) ([]datastore.Allocation, error) {
	links, err := dumpRetry(ctx, "links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	veths := map[int]string{}
	for _, l := range links {
		if name := l.Attrs().Name; l.Type() == "veth" && strings.HasPrefix(name, vethPrefix) {
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
func liveAddrs(ds *datastore.Store, held *datastore.Held) map[netip.Addr]bool {
	live := map[netip.Addr]bool{}
	for _, a := range ds.Allocations() {
		live[a.IP] = true
	}
	for _, a := range held.List() {
		live[a.IP] = true
	}
	return live
}
