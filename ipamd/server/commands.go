package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/hostnet"
	"github.com/berth-io/berth/proto/datapath"
)

// berth-cni's DEL, CHECK and GC on the datapath socket. ipamd does their
// kernel work under the attachment's lock, so that berth-cni links no
// netlink library and a DEL cannot interleave with the same pod's ADD.

func errorReply(code uint32, msg string, err error) *datapath.Reply {
	return &datapath.Reply{Error: &datapath.Error{Code: code, Msg: msg, Details: err.Error()}}
}

// compatiblePlugin is the error reply for a berth-cni of another release.
func (s *Server) compatiblePlugin(version string) *datapath.Reply {
	if version == s.version {
		return nil
	}
	return errorReply(cniErrInternal, "incompatible berth-cni",
		fmt.Errorf("berth-ipamd %s does not accept berth-cni %q: install the berth-cni of the same release", s.version, version))
}

// delPod releases the attachment's address, as DelNetwork does, and when
// the pod's namespace is gone also deletes the host veth that routed it.
// An attachment without an address is success: DEL is idempotent. waiting
// bounds the wait for the attachment's lock (it ends when the plugin hangs
// up), ctx the rest.
func (s *Server) delPod(ctx, waiting context.Context, r *datapath.DelRequest) *datapath.Reply {
	s.m.DelReq.WithLabelValues(delReason(r.Reason)).Inc()
	if e := s.compatiblePlugin(r.ClientVersion); e != nil {
		return e
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerId, IfName: r.IfName}
	unlock, err := s.keys.lock(waiting, key)
	if err != nil {
		return errorReply(cniErrTryAgainLater, "failed to release the pod's address", fmt.Errorf("waiting for the pod's ADD or DEL in flight: %w", err))
	}
	defer unlock()
	as, err := s.releasePersisted(ctx, key, r.NetnsGone)
	if err != nil {
		return errorReply(cniErrInternal, "failed to release the pod's address", err)
	}
	if len(as) == 0 {
		return &datapath.Reply{Phase: podwire.PhaseDone}
	}
	a := as[0]
	s.log.Debug("DEL", "pod", r.PodNamespace+"/"+r.PodName, "ip", a.IP, "interfaces", len(as), "veth deleted", r.NetnsGone)
	reply := &datapath.Reply{Phase: podwire.PhaseDone, Ipv4Addr: a.IP.String(), DeviceNumber: int32(a.Device),
		RouteTableId: int32(hostnet.RouteTable(a.Device, a.Card))}
	for _, a := range as[1:] {
		reply.MoreInterfaces = append(reply.MoreInterfaces, &datapath.Interface{Ipv4Addr: a.IP.String(), DeviceNumber: int32(a.Device),
			RouteTableId: int32(hostnet.RouteTable(a.Device, a.Card))})
	}
	return reply
}

// checkPod verifies the pod's wiring against prevResult's: ipamd holds
// that address for the attachment, and the host and the pod have what ADD
// made (podnet.Check). ctx ends when the plugin hangs up.
func (s *Server) checkPod(ctx context.Context, r *datapath.CheckRequest, podNS netns.NsHandle, handles *handlePool) *datapath.Reply {
	if e := s.compatiblePlugin(r.ClientVersion); e != nil {
		return e
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerId, IfName: r.IfName}
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return errorReply(cniErrTryAgainLater, "CHECK failed", fmt.Errorf("waiting for the pod's ADD or DEL in flight: %w", err))
	}
	defer unlock()
	ip, _ := netip.ParseAddr(r.Ipv4Addr) // checked on reading
	if a, ok := s.lookup(key); !ok || a.IP != ip {
		return errorReply(cniErrInternal, "CHECK failed", fmt.Errorf("ipamd holds no %s for container %s, interface %s", r.Ipv4Addr, r.ContainerId, r.IfName))
	}
	host, err := handles.get()
	if err != nil {
		return errorReply(cniErrInternal, "CHECK failed", err)
	}
	defer handles.put(host)
	if err := podnet.Check(host, handles.home, podNS, r.IfName, r.HostVeth, net.IP(ip.AsSlice()), int(r.RouteTableId)); err != nil {
		return errorReply(cniErrInternal, "CHECK failed", err)
	}
	// A multi-NIC pod's other interfaces, card by card.
	if len(r.MoreInterfaces) >= len(s.cards) {
		return errorReply(cniErrInternal, "CHECK failed", fmt.Errorf("prevResult has %d interfaces, this node gives pods at most %d", 1+len(r.MoreInterfaces), len(s.cards)))
	}
	for i, f := range r.MoreInterfaces {
		ip, err := netip.ParseAddr(f.Ipv4Addr)
		if err != nil || !ip.Is4() {
			return errorReply(cniErrInvalidConfig, "CHECK failed", fmt.Errorf("prevResult's interface %s has no IPv4 address (%q)", f.PodIfName, f.Ipv4Addr))
		}
		c := s.cards[i+1]
		if a, ok := c.Store.Lookup(key); !ok || a.IP != ip {
			return errorReply(cniErrInternal, "CHECK failed", fmt.Errorf("ipamd holds no %s on network card %d for container %s", ip, c.Index, r.ContainerId))
		}
		if err := podnet.CheckIndexed(host, handles.home, podNS, f.PodIfName, f.HostVeth, net.IP(ip.AsSlice()), int(f.RouteTableId), i+1); err != nil {
			return errorReply(cniErrInternal, "CHECK failed", err)
		}
	}
	return &datapath.Reply{Phase: podwire.PhaseDone}
}

// gcPods releases the addresses of the network that ipamd holds for
// attachments the runtime no longer knows, with their rules, host routes
// and veths. Each is looked at again under its lock: an ADD or DEL in
// flight ends first. waiting bounds the waits for the locks (it ends when
// the plugin hangs up), ctx the rest; what was released before a wait
// ended is still written down.
func (s *Server) gcPods(ctx, waiting context.Context, r *datapath.GCRequest) *datapath.Reply {
	if e := s.compatiblePlugin(r.ClientVersion); e != nil {
		return e
	}
	valid := map[datastore.Key]bool{}
	for _, a := range r.ValidAttachments {
		valid[datastore.Key{NetworkName: r.NetworkName, ContainerID: a.ContainerId, IfName: a.IfName}] = true
	}
	released := 0
	var waitErr error
	for _, a := range s.allocations() {
		// An attachment whose ADD (or DEL) is in flight is left alone: the
		// runtime's list may predate that ADD, which would be undone as it
		// succeeds. A later GC sees it settled.
		if a.Key.NetworkName != r.NetworkName || valid[a.Key] || s.keys.busy(a.Key) {
			continue
		}
		unlock, err := s.keys.lock(waiting, a.Key)
		if err != nil {
			waitErr = fmt.Errorf("waiting for an ADD or DEL in flight: %w", err)
			break
		}
		if len(s.release(a.Key, true)) > 0 {
			released++
			s.m.DelReq.WithLabelValues("GC").Inc()
			s.log.Info("GC released the address of an attachment the runtime does not know", "pod", a.Meta.PodNamespace+"/"+a.Meta.PodName,
				"container", a.Key.ContainerID, "ip", a.IP)
		}
		unlock()
	}
	if released > 0 {
		if err := s.sync(ctx); err != nil {
			return errorReply(cniErrInternal, "GC incomplete", fmt.Errorf("persist %d releases: %w", released, err))
		}
		s.kick()
	}
	if waitErr != nil {
		return errorReply(cniErrTryAgainLater, "GC incomplete", waitErr)
	}
	return &datapath.Reply{Phase: podwire.PhaseDone}
}
