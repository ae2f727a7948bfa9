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
	ds      *datastore.Store
	keys    keyLocks // one ADD or DEL of an attachment at a time
	pool    Pool
	cp      Checkpoint
	node    Node
	version string
	wait    time.Duration
	log     *slog.Logger
	m       Metrics

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

// lookup is key's allocation, in the store or held (restored, its address
// not in the pool yet).
func (s *Server) lookup(key datastore.Key) (datastore.Allocation, bool) {
	if a, ok := s.ds.Lookup(key); ok {
		return a, ok
	}
	return s.ds.Held().Lookup(key)
}

// release runs the release hook for key's allocation and releases it; the
// caller holds key's lock. A held allocation has no ENI yet, so its route
// table is unknown: the hook gets -1, which removes its "from" rule
// whatever the table.
//
// The pod's address annotation is cleared first too: once released, the
// address may go to a new sandbox of the same pod, whose annotation the
// clear would then wipe.
func (s *Server) release(key datastore.Key, deleteVeth bool) (datastore.Allocation, bool) {
	if a, ok := s.ds.Lookup(key); ok {
		if s.onRelease != nil {
			s.onRelease(net.IP(a.IP.AsSlice()), hostnet.RouteTable(a.Device, a.Card), deleteVeth)
		}
		s.unannotate(a)
		return s.ds.Release(key)
	}
	a, ok := s.ds.Held().Lookup(key)
	if !ok {
		return a, false
	}
	if s.onRelease != nil {
		s.onRelease(net.IP(a.IP.AsSlice()), -1, deleteVeth)
	}
	s.unannotate(a)
	return s.ds.Held().Remove(key)
}

// releasePersisted releases key's address (the caller holds key's lock),
// writes the release down and lets the pool see the free address. ok is
// false when the attachment held none.
func (s *Server) releasePersisted(ctx context.Context, key datastore.Key, deleteVeth bool) (a datastore.Allocation, ok bool, err error) {
	if a, ok = s.release(key, deleteVeth); !ok {
		return a, false, nil
	}
	if err := s.cp.Sync(ctx); err != nil {
		return a, true, fmt.Errorf("persist the release of %s: %w", a.IP, err)
	}
	s.pool.Kick()
	return a, true, nil
}

// ReleaseOrphans releases the addresses of pods that are gone (gone says
// so) and were assigned over minAge ago: a DEL that could not reach ipamd,
// then the runtime deleted the pod's namespace. Each under its
// attachment's lock, so an ADD or DEL of it in flight finishes first and
// the allocation is looked at again after it. It returns how many it
// released.
func (s *Server) ReleaseOrphans(ctx context.Context, minAge time.Duration, gone func(datastore.Allocation) bool) (int, error) {
	released := 0
	candidates := append(s.ds.Allocations(), s.ds.Held().List()...)
	for _, a := range candidates {
		if time.Since(a.AssignedAt) < minAge || !gone(a) {
			continue
		}
		unlock, err := s.keys.lock(ctx, a.Key)
		if err != nil {
			return released, err
		}
		// Still the same allocation, still orphaned?
		if cur, ok := s.lookup(a.Key); ok && cur.IP == a.IP && cur.AssignedAt.Equal(a.AssignedAt) && gone(cur) {
			if _, ok := s.release(a.Key, false); ok { // its veth is gone
				released++
				s.log.Info("released the address of a pod whose veth is gone", "pod", a.Meta.PodNamespace+"/"+a.Meta.PodName, "ip", a.IP)
			}
		}
		unlock()
	}
	if released > 0 {
		if err := s.cp.Sync(ctx); err != nil {
			return released, fmt.Errorf("checkpoint after releasing orphans: %w", err)
		}
		s.pool.Kick()
	}
	return released, nil
}

// New returns the server. version is ipamd's own; wait bounds how long
// AddNetwork waits for an address.
func New(ds *datastore.Store, pool Pool, cp Checkpoint, node Node, version string, wait time.Duration, m Metrics, log *slog.Logger) *Server {
	s := &Server{ds: ds, pool: pool, cp: cp, node: node, version: version, wait: wait, m: m, log: log.With("component", "rpc")}
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

// AddNetwork assigns an address to a pod, waiting for the pool if needed.
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
	if r.RequiresMultiNICAttachment {
		s.log.Warn("AddNetwork refused", "pod", r.K8S_POD_NAMESPACE+"/"+r.K8S_POD_NAME, "err", ErrMultiNIC)
		return nil, status.Error(codes.FailedPrecondition, ErrMultiNIC.Error())
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerID, IfName: r.IfName}
	meta := datastore.Meta{PodNamespace: r.K8S_POD_NAMESPACE, PodName: r.K8S_POD_NAME, InterfacesCount: 1}
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer unlock()
	_, held := s.ds.Lookup(key)
	a, err := s.assign(ctx, key, meta)
	if err != nil {
		s.m.NoIP.Inc()
		s.log.Warn("AddNetwork failed", "pod", r.K8S_POD_NAMESPACE+"/"+r.K8S_POD_NAME, "err", err)
		return nil, err
	}
	if err := s.cp.Sync(ctx); err != nil {
		// Not on disk: not handed out (unless the pod held it already).
		if !held {
			s.ds.Release(key)
		}
		return nil, status.Errorf(codes.Internal, "persist the allocation of %s: %v", a.IP, err)
	}
	if err := s.annotate(ctx, meta, a.IP); err != nil {
		if !held {
			// A patch that timed out may have been applied all the same.
			s.unannotate(a)
			s.ds.Release(key)
			if err := s.cp.Sync(context.Background()); err != nil {
				s.log.Error("checkpoint after a failed ADD", "pod", r.K8S_POD_NAMESPACE+"/"+r.K8S_POD_NAME, "err", err)
			}
		}
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	table := int32(hostnet.RouteTable(a.Device, a.Card))
	reply := &rpc.AddNetworkReply{Success: true, UseExternalSNAT: s.node.ExternalSNAT, NetworkPolicyMode: s.node.NetworkPolicyMode,
		IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: a.IP.String(), DeviceNumber: int32(a.Device), RouteTableId: table}}}
	for _, c := range *s.vpcCIDRs.Load() {
		reply.VPCv4CIDRs = append(reply.VPCv4CIDRs, c.String())
	}
	s.log.Debug("AddNetwork", "pod", r.K8S_POD_NAMESPACE+"/"+r.K8S_POD_NAME, "ip", a.IP, "eni", a.ENI, "took", time.Since(start))
	return reply, nil
}

// ErrMultiNIC refuses an ADD of a pod that asks for an interface on every
// network card. berth-ipamd has no ENABLE_MULTI_NIC, and the VPC CNI
// without it fails such an ADD too rather than give the pod one interface
// where its workload expects several.
var ErrMultiNIC = errors.New("the pod asks for an interface on every network card (annotation k8s.amazonaws.com/nicConfig: multi-nic-attachment); " +
	"berth-ipamd does not attach multi-NIC pods (ENABLE_MULTI_NIC is not supported)")

// assign gets an address, waiting up to s.wait while the pool grows.
func (s *Server) assign(ctx context.Context, key datastore.Key, meta datastore.Meta) (datastore.Allocation, error) {
	a, err := s.ds.Assign(key, meta)
	if err == nil {
		return a, nil
	}
	if errors.Is(err, datastore.ErrHeld) {
		return a, status.Error(codes.Unavailable, err.Error())
	}
	if !errors.Is(err, datastore.ErrNoFreeIP) {
		return a, status.Errorf(codes.Internal, "assign: %v", err)
	}
	waitStart := time.Now()
	done := s.pool.Wait()
	defer done()
	defer func() { s.m.AddWaitSeconds.Observe(time.Since(waitStart).Seconds()) }()
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	for {
		// Subscribe before trying, so no notification falls in between.
		freed := s.ds.Changed()
		reason, poolChanged := s.pool.Blocked()
		if a, err := s.ds.Assign(key, meta); err == nil {
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
			if reason, _ := s.pool.Blocked(); reason != nil {
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
	a, ok, err := s.releasePersisted(ctx, key, false) // the VPC CNI plugin deletes its veth
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if !ok {
		return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: s.node.NetworkPolicyMode}, nil
	}
	table := int32(hostnet.RouteTable(a.Device, a.Card))
	return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: s.node.NetworkPolicyMode,
		IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: a.IP.String(), DeviceNumber: int32(a.Device), RouteTableId: table}}}, nil
}

// GetNetworkPolicyConfigs tells the policy agent about the node.
func (s *Server) GetNetworkPolicyConfigs(ctx context.Context, _ *emptypb.Empty) (*rpc.NetworkPolicyAgentConfigReply, error) {
	return &rpc.NetworkPolicyAgentConfigReply{NetworkPolicyMode: s.node.NetworkPolicyMode, NodeIPv4: s.node.PrimaryIP.String(),
		InstanceID: s.node.InstanceID, Region: s.node.Region}, nil
}

// String is for logs.
func (n Node) String() string { return fmt.Sprintf("%s %s", n.InstanceID, n.PrimaryIP) }
