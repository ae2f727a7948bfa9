// Package server is ipamd's gRPC face: rpc.CNIBackend for the CNI plugin
// (wire-compatible with the Amazon VPC CNI v1.23) and rpc.ConfigServerBackend
// for the policy agent. AddNetwork waits for an address instead of failing
// when the pool is momentarily dry, and fails only with the reason the pool
// cannot grow.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/hostnet"
	"github.com/berth-io/berth/proto/rpc"
)

// Pool is what the server needs of the pool manager.
type Pool interface {
	Wait() (done func())
	Blocked() (error, <-chan struct{})
	Kick()
}

// Node describes the node for replies.
type Node struct {
	PrimaryENI        string
	PrimaryIP         netip.Addr
	VPCCIDRs          []netip.Prefix
	ExternalSNAT      bool
	NetworkPolicyMode string
	InstanceID        string
	Region            string
}

// Metrics are the per-request metrics.
type Metrics struct {
	AddSeconds     prometheus.Histogram
	AddWaitSeconds prometheus.Histogram
	AddReq         prometheus.Counter
	DelReq         *prometheus.CounterVec // {reason}: the plugin's DelNetworkRequest.Reason, as in the VPC CNI
	NoIP           prometheus.Counter
}

// NewMetrics registers them.
func NewMetrics(reg prometheus.Registerer) Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := Metrics{
		AddSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_cni_add_seconds", Help: "Time ipamd took to answer an ADD (AddNetwork, or berth-cni's ADD with the pod's wiring)", Buckets: buckets}),
		AddWaitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_cni_add_wait_seconds", Help: "Time AddNetwork waited for the pool to have an address", Buckets: buckets}),
		AddReq:         prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_add_ip_req_count", Help: "The number of add IP address requests"}),
		DelReq:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_del_ip_req_count", Help: "The number of delete IP address requests"}, []string{"reason"}),
		NoIP:           prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_no_available_ip_addresses", Help: "The number of AddNetwork calls that found no address and failed"}),
	}
	reg.MustRegister(m.AddSeconds, m.AddWaitSeconds, m.AddReq, m.DelReq, m.NoIP)
	return m
}

// Checkpoint persists allocations before a reply goes out.
type Checkpoint interface {
	Sync(ctx context.Context) error
}

// Server implements the gRPC services.
type Server struct {
	rpc.UnimplementedCNIBackendServer
	rpc.UnimplementedConfigServerBackendServer
	keys    keyLocks // one ADD or DEL of an attachment at a time
	node    Node
	version string
	wait    time.Duration
	log     *slog.Logger
	m       Metrics

	// cards are the pools of the network cards, in card order: card 0's,
	// then with ENABLE_MULTI_NIC the others; a multi-NIC pod gets an
	// address on each.
	cards []Card

	onRelease func(ip net.IP, table int, deleteVeth bool)
	vpcCIDRs  atomic.Pointer[[]netip.Prefix] // the VPC's, as of the last refresh
	podIPs    PodIPAnnotator                 // ANNOTATE_POD_IP; nil when off
}

// PodIPAnnotator writes a pod's address into its annotation and clears it
// (ipamd/kube, ANNOTATE_POD_IP).
type PodIPAnnotator interface {
	Set(ctx context.Context, namespace, name, ip string) error
	Clear(ctx context.Context, namespace, name, ip string) error
}

// AnnotatePodIPs turns ANNOTATE_POD_IP on: an ADD succeeds only once the
// pod is annotated with its address, as in the VPC CNI; releasing the
// address clears the annotation (best effort: a DEL does not fail on it).
func (s *Server) AnnotatePodIPs(a PodIPAnnotator) { s.podIPs = a }

// annotate sets the pod's address annotation; nothing without a pod name
// or with the feature off.
func (s *Server) annotate(ctx context.Context, meta datastore.Meta, ip netip.Addr) error {
	if s.podIPs == nil || meta.PodName == "" {
		return nil
	}
	return s.podIPs.Set(ctx, meta.PodNamespace, meta.PodName, ip.String())
}

// unannotate clears the address annotation of a released allocation.
func (s *Server) unannotate(a datastore.Allocation) {
	if s.podIPs == nil || a.Meta.PodName == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.podIPs.Clear(ctx, a.Meta.PodNamespace, a.Meta.PodName, a.IP.String()); err != nil {
		s.log.Warn("pod address annotation left", "pod", a.Meta.PodNamespace+"/"+a.Meta.PodName, "ip", a.IP, "err", err)
	}
}

// SetVPCCIDRs replaces the VPC CIDRs AddNetwork reports (to the VPC CNI
// plugin, which keeps its traffic to them off SNAT).
func (s *Server) SetVPCCIDRs(c []netip.Prefix) { s.vpcCIDRs.Store(&c) }

// OnRelease sets what runs, under the attachment's lock, just before an
// address is released (by a DEL, GC or ReleaseOrphans): in ipamd,
// removing the pod's rules and host route for it, and with deleteVeth
// (berth-cni's DEL of a pod whose namespace is gone, GC) the host veth
// that routes it. Rules are not tied to a
// device, so once the address is released they may be its next pod's;
// and a plugin killed before its own teardown would leave them, its
// retried DEL finding nothing released. A "from" rule left behind would
// send the next pod given the address out of the wrong ENI.
func (s *Server) OnRelease(f func(ip net.IP, table int, deleteVeth bool)) { s.onRelease = f }

// Card is a network card's pool: its datastore, pool manager and
// checkpoint (ipam.json for card 0, ipam-nic-<n>.json for card n).
type Card struct {
	Index int
	Store *datastore.Store
	Pool  Pool
	CP    Checkpoint
}

// UseCards gives multi-NIC pods an address on each of cards too (network
// cards 1 and up, in order). Call before serving.
func (s *Server) UseCards(cards []Card) { s.cards = append(s.cards[:1:1], cards...) }

// multiNIC reports whether pods may have an interface on every card.
func (s *Server) multiNIC() bool { return len(s.cards) > 1 }

// lookup is key's first allocation (eth0's), in the store or held
// (restored, its address not in the pool yet): card 0's, or another
// card's for a pod that got its one address there.
func (s *Server) lookup(key datastore.Key) (datastore.Allocation, bool) {
	a, _, ok := s.holder(key)
	return a, ok
}

// holder is key's first allocation and the card that holds it.
func (s *Server) holder(key datastore.Key) (datastore.Allocation, Card, bool) {
	for _, c := range s.cards {
		if a, ok := lookupIn(c.Store, key); ok {
			return a, c, true
		}
	}
	return datastore.Allocation{}, Card{}, false
}

// allocations lists every card's allocations, held ones included.
func (s *Server) allocations() []datastore.Allocation {
	var out []datastore.Allocation
	for _, c := range s.cards {
		out = append(out, c.Store.Allocations()...)
		out = append(out, c.Store.Held().List()...)
	}
	return out
}

// lookupIn is key's allocation in ds, in the store or held.
func lookupIn(ds *datastore.Store, key datastore.Key) (datastore.Allocation, bool) {
	if a, ok := ds.Lookup(key); ok {
		return a, ok
	}
	return ds.Held().Lookup(key)
}

// release runs the release hook for key's allocations and releases them:
// card 0's and, for a multi-NIC pod, those on the other cards, which it
// returns in card order. The caller holds key's lock. A held allocation
// has no ENI yet, so its route table is unknown: the hook gets -1, which
// removes its "from" rule whatever the table.
//
// The pod's address annotation is cleared first too: once released, the
// address may go to a new sandbox of the same pod, whose annotation the
// clear would then wipe.
func (s *Server) release(key datastore.Key, deleteVeth bool) []datastore.Allocation {
	var out []datastore.Allocation
	for _, c := range s.cards {
		if a, ok := s.releaseOn(c.Store, key, deleteVeth); ok {
			if len(out) == 0 {
				s.unannotate(a) // eth0's
			}
			out = append(out, a)
		}
	}
	return out
}

// releaseOn releases key's allocation in one card's store.
func (s *Server) releaseOn(ds *datastore.Store, key datastore.Key, deleteVeth bool) (datastore.Allocation, bool) {
	if a, ok := ds.Lookup(key); ok {
		if s.onRelease != nil {
			s.onRelease(net.IP(a.IP.AsSlice()), hostnet.RouteTable(a.Device, a.Card), deleteVeth)
		}
		return ds.Release(key)
	}
	a, ok := ds.Held().Lookup(key)
	if !ok {
		return a, false
	}
	if s.onRelease != nil {
		s.onRelease(net.IP(a.IP.AsSlice()), -1, deleteVeth)
	}
	return ds.Held().Remove(key)
}

// sync writes every card's checkpoint.
func (s *Server) sync(ctx context.Context) error {
	for _, c := range s.cards {
		if err := c.CP.Sync(ctx); err != nil {
			if c.Index == 0 {
				return err
			}
			return fmt.Errorf("network card %d: %w", c.Index, err)
		}
	}
	return nil
}

// kick lets every card's pool see what changed.
func (s *Server) kick() {
	for _, c := range s.cards {
		c.Pool.Kick()
	}
}

// releasePersisted releases key's addresses (the caller holds key's lock),
// writes the release down and lets the pools see the free addresses. It
// returns what was released, none when the attachment held nothing.
func (s *Server) releasePersisted(ctx context.Context, key datastore.Key, deleteVeth bool) ([]datastore.Allocation, error) {
	as := s.release(key, deleteVeth)
	if len(as) == 0 {
		return nil, nil
	}
	if err := s.sync(ctx); err != nil {
		return as, fmt.Errorf("persist the release of %s: %w", as[0].IP, err)
	}
	s.kick()
	return as, nil
}

// metadata is the VPC CNI's IPAllocationMetadata of allocations.
func metadata(as []datastore.Allocation) []*rpc.IPAllocationMetadata {
	out := make([]*rpc.IPAllocationMetadata, 0, len(as))
	for _, a := range as {
		out = append(out, &rpc.IPAllocationMetadata{IPv4Addr: a.IP.String(), DeviceNumber: int32(a.Device), RouteTableId: int32(hostnet.RouteTable(a.Device, a.Card))})
	}
	return out
}

// ReleaseOrphans releases the addresses of pods that are gone (gone says
// so of the pod's interface index, see datastore.Allocation.Interface)
// and were assigned over minAge ago: a DEL that could not reach ipamd,
// then the runtime deleted the pod's namespace. Each under its
// attachment's lock, so an ADD or DEL of it in flight finishes first and
// the allocation is looked at again after it. A pod whose eth0 is gone
// loses its addresses on every card. It returns how many it released.
func (s *Server) ReleaseOrphans(ctx context.Context, minAge time.Duration, gone func(a datastore.Allocation, index int) bool) (int, error) {
	released := 0
	for _, c := range s.cards {
		ds := c.Store
		for _, a := range append(ds.Allocations(), ds.Held().List()...) {
			i := a.Interface(c.Index)
			if time.Since(a.AssignedAt) < minAge || !gone(a, i) {
				continue
			}
			unlock, err := s.keys.lock(ctx, a.Key)
			if err != nil {
				return released, err
			}
			// Still the same allocation, still orphaned?
			if cur, ok := lookupIn(ds, a.Key); ok && cur.IP == a.IP && cur.AssignedAt.Equal(a.AssignedAt) && gone(cur, i) {
				var n int
				if i == 0 {
					n = len(s.release(a.Key, false)) // its veths are gone
				} else if _, ok := s.releaseOn(ds, a.Key, false); ok {
					n = 1
				}
				if n > 0 {
					released += n
					s.log.Info("released the address of a pod whose veth is gone", "pod", a.Meta.PodNamespace+"/"+a.Meta.PodName, "ip", a.IP, "card", c.Index, "interface", i, "addresses", n)
				}
			}
			unlock()
		}
	}
	if released > 0 {
		if err := s.sync(ctx); err != nil {
			return released, fmt.Errorf("checkpoint after releasing orphans: %w", err)
		}
		s.kick()
	}
	return released, nil
}

// New returns the server. version is ipamd's own; wait bounds how long
// AddNetwork waits for an address.
func New(ds *datastore.Store, pool Pool, cp Checkpoint, node Node, version string, wait time.Duration, m Metrics, log *slog.Logger) *Server {
	s := &Server{cards: []Card{{Index: 0, Store: ds, Pool: pool, CP: cp}}, node: node, version: version, wait: wait, m: m, log: log.With("component", "rpc")}
	s.SetVPCCIDRs(node.VPCCIDRs)
	return s
}

// compatibleClient accepts berth-cni of the same version and the Amazon
// VPC CNI v1.23 plugin, whose wire format berth keeps.
func (s *Server) compatibleClient(v string) error {
	if v == s.version || strings.HasPrefix(v, "v1.23.") || v == "v1.23" {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition,
		"berth-ipamd %s does not accept CNI plugin version %q: install the berth-cni of the same release (or an Amazon VPC CNI v1.23 plugin)", s.version, v)
}

// AddNetwork assigns an address to a pod, waiting for the pool if needed;
// a multi-NIC pod gets one on every network card.
func (s *Server) AddNetwork(ctx context.Context, r *rpc.AddNetworkRequest) (*rpc.AddNetworkReply, error) {
	start := time.Now()
	s.m.AddReq.Inc()
	defer func() { s.m.AddSeconds.Observe(time.Since(start).Seconds()) }()
	if err := s.compatibleClient(r.ClientVersion); err != nil {
		return nil, err
	}
	if r.ContainerID == "" || r.IfName == "" || r.NetworkName == "" {
		return nil, status.Error(codes.InvalidArgument, "AddNetwork needs ContainerID, IfName and NetworkName")
	}
	pod := r.K8S_POD_NAMESPACE + "/" + r.K8S_POD_NAME
	if r.RequiresMultiNICAttachment && !s.multiNIC() {
		s.log.Warn("AddNetwork refused", "pod", pod, "err", ErrMultiNIC)
		return nil, status.Error(codes.FailedPrecondition, ErrMultiNIC.Error())
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerID, IfName: r.IfName}
	meta := s.meta(r.K8S_POD_NAMESPACE, r.K8S_POD_NAME, r.RequiresMultiNICAttachment)
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer unlock()
	as, undo, err := s.assignAll(ctx, key, meta)
	if err != nil {
		s.countNoIP(err)
		s.log.Warn("AddNetwork failed", "pod", pod, "err", err)
		return nil, err
	}
	if err := s.sync(ctx); err != nil {
		// Not on disk: not handed out (unless the pod held it already).
		undo.run()
		return nil, status.Errorf(codes.Internal, "persist the allocation of %s: %v", as[0].IP, err)
	}
	if err := s.annotate(ctx, meta, as[0].IP); err != nil {
		if undo.first {
			// A patch that timed out may have been applied all the same.
			s.unannotate(as[0])
		}
		if undo.run() {
			if err := s.sync(context.Background()); err != nil {
				s.log.Error("checkpoint after a failed ADD", "pod", pod, "err", err)
			}
		}
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	reply := &rpc.AddNetworkReply{Success: true, UseExternalSNAT: s.node.ExternalSNAT, NetworkPolicyMode: s.node.NetworkPolicyMode,
		IPAllocationMetadata: metadata(as)}
	for _, c := range *s.vpcCIDRs.Load() {
		reply.VPCv4CIDRs = append(reply.VPCv4CIDRs, c.String())
	}
	s.log.Debug("AddNetwork", "pod", pod, "ip", as[0].IP, "eni", as[0].ENI, "interfaces", len(as), "took", time.Since(start))
	return reply, nil
}

// countNoIP counts an ADD that failed for want of an address (the pool
// could not give one in time, or cannot grow), as aws-node counts
// awscni_no_available_ip_addresses; not one refused for another reason.
func (s *Server) countNoIP(err error) {
	if c := status.Code(err); c == codes.ResourceExhausted || c == codes.DeadlineExceeded {
		s.m.NoIP.Inc()
	}
}

// ErrMultiNIC refuses an ADD of a pod that asks for an interface on every
// network card on a node without ENABLE_MULTI_NIC (or with one card). The
// VPC CNI fails such an ADD too rather than give the pod one interface
// where its workload expects several.
var ErrMultiNIC = errors.New("the pod asks for an interface on every network card (annotation k8s.amazonaws.com/nicConfig: multi-nic-attachment); " +
	"this node gives pods one: ENABLE_MULTI_NIC is not true, or the instance has one network card")

// meta is an allocation's metadata: interfacesCount is how many addresses
// the pod has, one per card for a multi-NIC pod, as the VPC CNI records it.
func (s *Server) meta(namespace, name string, multiNIC bool) datastore.Meta {
	m := datastore.Meta{PodNamespace: namespace, PodName: name, InterfacesCount: 1}
	if multiNIC {
		m.InterfacesCount = len(s.cards)
	}
	return m
}

// undo gives back the addresses an ADD assigned, not those the attachment
// held already (an ADD repeated without a DEL).
type undo struct {
	key   datastore.Key
	fresh []*datastore.Store
	first bool // the pod's first address (eth0's, the annotated one) is this ADD's
}

// run releases them; it reports whether there was any.
func (u *undo) run() bool {
	for _, ds := range u.fresh {
		ds.Release(u.key)
	}
	return len(u.fresh) > 0
}

// assignAll assigns the attachment an address on card 0 and, when meta
// counts more interfaces (a multi-NIC pod), one on each other card, in
// card order, waiting for each card's pool as needed: all or none. berth
// gives back what it got when a later card fails; the VPC CNI keeps it
// until the DEL.
func (s *Server) assignAll(ctx context.Context, key datastore.Key, meta datastore.Meta) ([]datastore.Allocation, *undo, error) {
	// An ADD repeated with another interface count (the annotation
	// changed, the sandbox did not) would reuse an address as the wrong
	// interface, which restore and the sweep then judge by the wrong veth.
	if a, ok := s.lookup(key); ok && max(a.Meta.InterfacesCount, 1) != meta.InterfacesCount {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "the attachment holds %s for a pod with %d interface(s), not %d: DEL it first",
			a.IP, max(a.Meta.InterfacesCount, 1), meta.InterfacesCount)
	}
	if meta.InterfacesCount <= 1 {
		return s.assignOne(ctx, key, meta)
	}
	u := &undo{key: key}
	as := make([]datastore.Allocation, 0, meta.InterfacesCount)
	for _, c := range s.cards[:meta.InterfacesCount] {
		_, held := c.Store.Lookup(key)
		a, err := s.assign(ctx, c.Store, c.Pool, key, meta, nil)
		if err != nil {
			u.run()
			if c.Index > 0 {
				st := status.Convert(err)
				err = status.Errorf(st.Code(), "network card %d: %s", c.Index, st.Message())
			}
			return nil, nil, err
		}
		if !held {
			u.fresh = append(u.fresh, c.Store)
			u.first = u.first || c.Index == 0
		}
		as = append(as, a)
	}
	return as, u, nil
}

// assignOne assigns a pod with one interface its address. It is card 0's,
// but as in the VPC CNI another card's (ENABLE_MULTI_NIC) when card 0 has
// none free: that card's pool is there, its address routes as well, and
// the pod need not wait for card 0's pool to grow. When no card has one,
// it waits for card 0's pool, looking at the others again whenever it
// wakes. An ADD repeated without a DEL gets the address the attachment
// holds, on whichever card.
func (s *Server) assignOne(ctx context.Context, key datastore.Key, meta datastore.Meta) ([]datastore.Allocation, *undo, error) {
	_, home, ok := s.holder(key)
	if !ok {
		home = s.cards[0]
	}
	_, held := home.Store.Lookup(key)
	var others []Card
	if !held && home.Index == 0 {
		others = s.cards[1:]
	}
	ds := home.Store
	a, err := s.assign(ctx, home.Store, home.Pool, key, meta, func() (datastore.Allocation, bool) {
		for _, c := range others {
			if a, err := c.Store.Assign(key, meta); err == nil {
				ds = c.Store
				c.Pool.Kick() // refill the card's warm address
				return a, true
			}
		}
		return datastore.Allocation{}, false
	})
	if err != nil {
		return nil, nil, err
	}
	u := &undo{key: key}
	if !held {
		u.fresh, u.first = []*datastore.Store{ds}, true
	}
	return []datastore.Allocation{a}, u, nil
}

// assign gets an address from a card's store, waiting up to s.wait while
// its pool grows. When the store has none free, other (may be nil) is
// asked for one before waiting and each time the wait wakes.
func (s *Server) assign(ctx context.Context, ds *datastore.Store, pool Pool, key datastore.Key, meta datastore.Meta, other func() (datastore.Allocation, bool)) (datastore.Allocation, error) {
	if other == nil {
		other = func() (datastore.Allocation, bool) { return datastore.Allocation{}, false }
	}
	a, err := ds.Assign(key, meta)
	if err == nil {
		return a, nil
	}
	if errors.Is(err, datastore.ErrHeld) {
		return a, status.Error(codes.Unavailable, err.Error())
	}
	if !errors.Is(err, datastore.ErrNoFreeIP) {
		return a, status.Errorf(codes.Internal, "assign: %v", err)
	}
	if a, ok := other(); ok {
		return a, nil
	}
	waitStart := time.Now()
	done := pool.Wait()
	defer done()
	defer func() { s.m.AddWaitSeconds.Observe(time.Since(waitStart).Seconds()) }()
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	for {
		// Subscribe before trying, so no notification falls in between.
		freed := ds.Changed()
		reason, poolChanged := pool.Blocked()
		if a, err := ds.Assign(key, meta); err == nil {
			return a, nil
		}
		if a, ok := other(); ok {
			return a, nil
		}
		if reason != nil {
			return datastore.Allocation{}, status.Errorf(codes.ResourceExhausted, "no IP address for the pod: %v", reason)
		}
		select {
		case <-freed:
		case <-poolChanged:
		case <-ctx.Done():
			why := "the pool did not grow in time"
			if reason, _ := pool.Blocked(); reason != nil {
				why = reason.Error()
			}
			return datastore.Allocation{}, status.Errorf(codes.DeadlineExceeded, "no IP address for the pod after %s: %s", time.Since(waitStart).Round(time.Millisecond), why)
		}
	}
}

// delReasons are the reasons the plugins send (the VPC CNI's two, berth's
// GC). Others are counted as "other": a label value per string a client
// makes up would grow the metric without bound.
var delReasons = map[string]bool{"PodDeleted": true, "SetupNSFailed": true, "GC": true}

func delReason(r string) string {
	if delReasons[r] {
		return r
	}
	return "other"
}

// DelNetwork releases a pod's address; a pod without one is success.
func (s *Server) DelNetwork(ctx context.Context, r *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, error) {
	s.m.DelReq.WithLabelValues(delReason(r.Reason)).Inc()
	if err := s.compatibleClient(r.ClientVersion); err != nil {
		return nil, err
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerID, IfName: r.IfName}
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer unlock()
	as, err := s.releasePersisted(ctx, key, false) // the VPC CNI plugin deletes its veths
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// The plugin tears down one interface per address, card 0's first.
	return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: s.node.NetworkPolicyMode, IPAllocationMetadata: metadata(as)}, nil
}

// GetNetworkPolicyConfigs tells the policy agent about the node.
func (s *Server) GetNetworkPolicyConfigs(ctx context.Context, _ *emptypb.Empty) (*rpc.NetworkPolicyAgentConfigReply, error) {
	return &rpc.NetworkPolicyAgentConfigReply{NetworkPolicyMode: s.node.NetworkPolicyMode, MultiNICEnabled: s.multiNIC(), NodeIPv4: s.node.PrimaryIP.String(),
		InstanceID: s.node.InstanceID, Region: s.node.Region}, nil
}

// String is for logs.
func (n Node) String() string { return fmt.Sprintf("%s %s", n.InstanceID, n.PrimaryIP) }
