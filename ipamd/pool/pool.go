// Package pool keeps the node's warm pool of VPC addresses at the targets
// of the Amazon VPC CNI knobs (WARM_ENI_TARGET, WARM_IP_TARGET,
// MINIMUM_IP_TARGET, WARM_PREFIX_TARGET), growing it in as few EC2 calls as
// possible (one call for many addresses, sized by the ADDs waiting), never
// past the node's max pods, and shrinking it lazily.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/internal/maxpods"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
)

// HostNet configures secondary ENIs on the node (ipamd/hostnet).
type HostNet interface {
	SetupENI(ctx context.Context, mac net.HardwareAddr, deviceIndex, networkCard int, eniPrimaryIP netip.Addr, subnet netip.Prefix) error
}

// ENIConfig is what custom networking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG)
// puts pod ENIs in: the spec of the node's ENIConfig object.
type ENIConfig struct {
	Name           string
	Subnet         string
	SecurityGroups []string // none: the primary ENI's
}

// ENIConfigs finds the node's ENIConfig (ipamd/eniconfig, from the
// Kubernetes API). It is asked for every new ENI, so that a change of the
// node's ENIConfig applies to the next one, as in the VPC CNI.
type ENIConfigs interface {
	ENIConfig(ctx context.Context) (ENIConfig, error)
}

// Errors explaining why the pool cannot grow.
var (
	ErrNoENIConfig    = errors.New("no ENIConfig for the node (custom networking)")
	ErrNoProvisioning = errors.New("no free address, and ipamd may not allocate any (DISABLE_NETWORK_RESOURCE_PROVISIONING=true)")
	ErrMaxPods        = errors.New("node at max pods")
	ErrNodeCapacity   = errors.New("node at its ENI and address limit")
	ErrNoSubnet       = errors.New("no subnet for pod ENIs: the node's is tagged " + SubnetRoleTag + "=0 and no other is tagged")
	ErrCordoned       = errors.New("node is unschedulable (cordoned): ipamd attaches no ENI or address to it (AWS_MANAGE_ENIS_NON_SCHEDULABLE=false)")
)

// Cordon tells whether the node is unschedulable (ipamd/kube, from the
// Kubernetes API). With AWS_MANAGE_ENIS_NON_SCHEDULABLE=false, the VPC
// CNI's default, the pool then neither grows nor frees ENIs: a node being
// drained for termination does not churn ENIs. Surplus addresses and
// prefixes still go back.
type Cordon interface {
	Cordoned() bool
}

// SubnetRoleTag opts a subnet in to pod ENIs (any value but "0") or, with
// "0", the node's own subnet out (ENABLE_SUBNET_DISCOVERY).
const SubnetRoleTag = "kubernetes.io/role/cni"

// Pool manages the warm pool.
type Pool struct {
	cfg     config.Config
	card    int // the network card whose ENIs the pool manages
	cloud   cloud.Cloud
	ds      *datastore.Store
	host    HostNet
	log     *slog.Logger
	now     func() time.Time
	maxPods int

	kick chan struct{}
	// reconcileNow asks ReconcileLoop for a comparison now: with
	// provisioning disabled, addresses come only from what reconcile finds.
	reconcileNow chan struct{}
	// ec2Lock serialises the sequences that change the node's addresses in
	// EC2 and the datastore together (Init, grow, shrink, reconcile with
	// EC2): reconcile must never compare an EC2 listing with a datastore
	// another of them changed meanwhile. ADDs never take it. A channel, so
	// that waiting for it ends with ctx.
	ec2Lock chan struct{}
	// ec2Gen counts the grows and shrinks run under ec2Lock: reconcile
	// lists EC2 without the lock and keeps the listing only if it did not
	// move meanwhile.
	ec2Gen atomic.Uint64

	mu           sync.Mutex
	waiting      int
	blocked      error     // why growing failed last, while still true
	blockedUntil time.Time // an EC2-reported reason holds until then; zero: recomputed
	backoffUntil time.Time // after subnet exhaustion or EC2 errors
	lastShrink   time.Time
	enis         map[string]time.Time // ENI -> when ipamd added it
	// unmanaged are attached ENIs ipamd leaves alone (see manages), from
	// the last EC2 listing: they take device indexes and ENI slots.
	unmanaged map[string]cloud.ENI
	// released are the CIDRs and ENIs ipamd gave back, by when: EC2 and
	// IMDS may list them for a while, and reconcile must not take them back.
	released map[string]time.Time
	changed  chan struct{}

	reconciled *prometheus.CounterVec // awscni_reconcile_count{fn}, when registered
	// eniConfigs finds the node's ENIConfig with custom networking
	// (cfg.CustomNetworking): new ENIs go where it says.
	eniConfigs ENIConfigs
	// cordon, when set, holds the pool's ENIs as they are on a cordoned
	// node (see Cordon).
	cordon Cordon
}

// UseCordon makes the pool hold its ENIs while the node is cordoned.
// Call before Init; Kick the pool when the cordon changes.
func (p *Pool) UseCordon(c Cordon) { p.cordon = c }

func (p *Pool) cordoned() bool { return p.cordon != nil && p.cordon.Cordoned() }

// UseENIConfigs gives custom networking (cfg.CustomNetworking) the source
// of the node's ENIConfig. Call before Init.
func (p *Pool) UseENIConfigs(src ENIConfigs) { p.eniConfigs = src }

// forPods reports whether pods may get new addresses on the ENI: not on the
// primary with custom networking (what it already has stays usable).
func (p *Pool) forPods(e datastore.ENI) bool {
	return !p.cfg.CustomNetworking || !e.IsPrimary
}

// RegisterMetrics registers the pool's own metrics with reg:
// awscni_reconcile_count{fn}, what reconcile with EC2 changed, labelled
// with the VPC CNI's fn names (pkg/ipamd/ipamd.go): eniReconcileAdd (an
// attached ENI adopted), eniReconcileDel (an ENI EC2 no longer attaches
// dropped), eniDataStorePoolReconcileAdd (an address adopted),
// eniIPPoolReconcileDel (an address EC2 no longer has dropped).
func (p *Pool) RegisterMetrics(reg prometheus.Registerer) {
	p.reconciled = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_reconcile_count",
		Help: "The number of times ipamd reconciles on ENIs and IP/Prefix addresses"}, []string{"fn"})
	reg.MustRegister(p.reconciled)
}

// CountReconcilesWith makes p count its reconciles in card 0's
// awscni_reconcile_count (registered by RegisterMetrics on card0), so that
// the node's one counter covers every network card's pool.
func (p *Pool) CountReconcilesWith(card0 *Pool) { p.reconciled = card0.reconciled }

// countReconcile adds n to awscni_reconcile_count{fn}.
func (p *Pool) countReconcile(fn string, n int) {
	if p.reconciled != nil && n > 0 {
		p.reconciled.WithLabelValues(fn).Add(float64(n))
	}
}

// NoManageTag on an ENI set to "true" keeps ipamd's hands off it, as in the
// VPC CNI.
const NoManageTag = "node.k8s.amazonaws.com/no_manage"

// manages reports whether the pool may draw addresses from an ENI and free
// it. Like the VPC CNI it leaves alone ENIs tagged no_manage=true, EFA-only
// and trunk interfaces: they belong to someone else (an operator, EFA, pod
// ENIs); with MANAGE_UNTAGGED_ENI=false also those it did not create. ENIs
// on other network cards are other pools' (ENABLE_MULTI_NIC) or nobody's.
// The primary ENI is always card 0's pool's.
func (p *Pool) manages(e cloud.ENI) bool {
	if e.ID == p.cloud.Instance().PrimaryENI {
		return p.card == 0
	}
	if e.Card != p.card || e.InterfaceType == "efa-only" || e.InterfaceType == "trunk" {
		return false
	}
	if p.cfg.IMDSOnly {
		return true // IMDS shows no tags: as the VPC CNI, manage them all
	}
	// The tag decides; with MANAGE_UNTAGGED_ENI=false an ENI without it is
	// ipamd's only if ipamd made it for this instance.
	if v, ok := e.Tags[NoManageTag]; ok {
		return v != "true"
	}
	return p.cfg.ManageUntaggedENIs || e.Tags[cloud.InstanceIDTag] == p.cloud.Instance().ID
}

// sortENIs splits an EC2 listing into the ENIs ipamd manages and records
// the others.
func (p *Pool) sortENIs(enis []cloud.ENI) []cloud.ENI {
	var mine []cloud.ENI
	others := map[string]cloud.ENI{}
	for _, e := range enis {
		if p.manages(e) {
			mine = append(mine, e)
			continue
		}
		others[e.ID] = e
	}
	p.mu.Lock()
	for id, e := range others {
		if _, known := p.unmanaged[id]; !known {
			p.log.Info("leaving an ENI alone", "eni", id, "device", e.Device, "card", e.Card, "type", e.InterfaceType, "noManage", e.Tags[NoManageTag])
		}
	}
	p.unmanaged = others
	p.mu.Unlock()
	return mine
}

// UnmanagedENIs counts the ENIs the pool leaves alone on its network card,
// which take slots of the card's ENI limit.
func (p *Pool) UnmanagedENIs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.unmanaged {
		if e.Card == p.card {
			n++
		}
	}
	return n
}

// MaxPods is the node's pod capacity from the shared resolver (the one
// berth-bootstrap gives kubelet): secondary-IP mode ENIs × (IPs − 1) + 2,
// prefix mode ENIs × (IPs − 1) × 16 + 2 capped at 110 (≤ 30 vCPUs) or 250;
// MAX_ENI lowers the ENI count, custom networking leaves the primary ENI
// out, and MAX_PODS overrides it all.
func MaxPods(c config.Config, in cloud.Instance) int {
	info := in.Info
	info.MaxENIs, info.NetworkCards = info.ENIsPerCard(), 1
	if c.MaxENI > 0 && c.MaxENI < info.MaxENIs {
		info.MaxENIs = c.MaxENI
	}
	mode := maxpods.SecondaryIP
	if c.PrefixDelegation {
		mode = maxpods.PrefixDelegation
	}
	r, err := maxpods.Resolve(maxpods.Input{Type: info, Mode: mode, CustomNetworking: c.CustomNetworking, Explicit: c.MaxPods})
	if err != nil {
		return 0
	}
	return r.MaxPods
}

// New returns the manager of network card 0's pool.
func New(cfg config.Config, c cloud.Cloud, ds *datastore.Store, host HostNet, log *slog.Logger) *Pool {
	return build(0, cfg, c, ds, host, log.With("component", "pool"))
}

// NewOnCard returns the pool of network card card (1 or more) of a
// multi-NIC node (ENABLE_MULTI_NIC): ENIs attached to that card, route
// tables 10000+device+100×card, and the VPC CNI's targets for such a card,
// whatever the node's: one address kept free, at least one held
// (WARM_IP_TARGET=1, MINIMUM_IP_TARGET=1). Only multi-NIC pods use it.
func NewOnCard(card int, cfg config.Config, c cloud.Cloud, ds *datastore.Store, host HostNet, log *slog.Logger) *Pool {
	cfg.WarmIPTarget, cfg.MinimumIPTarget = 1, 1
	cfg.DisableLeakedENICleanup = true // card 0's pool cleans up for the node
	return build(card, cfg, c, ds, host, log.With("component", "pool", "card", card))
}

func build(card int, cfg config.Config, c cloud.Cloud, ds *datastore.Store, host HostNet, log *slog.Logger) *Pool {
	return &Pool{card: card, cfg: cfg, cloud: c, ds: ds, host: host, log: log, now: time.Now,
		maxPods: MaxPods(cfg, c.Instance()), kick: make(chan struct{}, 1), reconcileNow: make(chan struct{}, 1), ec2Lock: make(chan struct{}, 1), enis: map[string]time.Time{}, unmanaged: map[string]cloud.ENI{},
		released: map[string]time.Time{}, changed: make(chan struct{})}
}

// lockEC2 takes ec2Lock, or gives up when ctx ends.
func (p *Pool) lockEC2(ctx context.Context) error {
	select {
	case p.ec2Lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the pool's EC2 lock: %w", ctx.Err())
	}
}

func (p *Pool) unlockEC2() { <-p.ec2Lock }

// MaxPodsLimit returns the node's pod capacity.
func (p *Pool) MaxPodsLimit() int { return p.maxPods }

// Init loads the ENIs and addresses the node has into the datastore and
// configures secondary ENIs on the host.
func (p *Pool) Init(ctx context.Context) error {
	if err := p.lockEC2(ctx); err != nil {
		return err
	}
	defer p.unlockEC2()
	enis, err := p.listENIs(ctx)
	if err != nil {
		return fmt.Errorf("list the node's ENIs: %w", err)
	}
	for _, e := range p.sortENIs(enis) {
		if err := p.adopt(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// listENIs lists the node's ENIs from EC2, or with ENABLE_IMDS_ONLY_MODE
// from IMDS: ipamd then changes nothing itself, so an IMDS listing that lags
// only delays what someone else changed.
func (p *Pool) listENIs(ctx context.Context) ([]cloud.ENI, error) {
	if p.cfg.IMDSOnly {
		return p.cloud.MetadataENIs(ctx)
	}
	return p.cloud.AttachedENIs(ctx)
}

// adopt records an ENI and its addresses.
func (p *Pool) adopt(ctx context.Context, e cloud.ENI) error {
	in := p.cloud.Instance()
	p.ds.AddENI(datastore.ENI{ID: e.ID, DeviceIndex: e.Device, Card: e.Card, IsPrimary: e.ID == in.PrimaryENI, PrimaryIP: e.PrimaryIP, Subnet: e.SubnetCIDR, CreatedAt: p.now()})
	p.mu.Lock()
	if _, ok := p.enis[e.ID]; !ok {
		p.enis[e.ID] = p.now()
	}
	p.mu.Unlock()
	if e.ID != in.PrimaryENI && p.host != nil {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("eni %s mac %q: %w", e.ID, e.MAC, err)
		}
		// Bounded: an ENI whose interface never appears must not hang Init.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = p.host.SetupENI(sctx, mac, e.Device, e.Card, e.PrimaryIP, e.SubnetCIDR)
		cancel()
		if err != nil {
			return fmt.Errorf("configure %s on the host: %w", e.ID, err)
		}
	}
	for _, ip := range e.Secondary {
		if err := p.ds.AddCIDR(e.ID, netip.PrefixFrom(ip, 32)); err != nil {
			return err
		}
	}
	for _, pf := range e.Prefixes {
		if err := p.ds.AddCIDR(e.ID, pf); err != nil {
			return err
		}
	}
	return nil
}

// Kick asks for a reconcile now.
func (p *Pool) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Wait registers an ADD waiting for an address; call the returned func
// when it is done.
func (p *Pool) Wait() func() {
	p.mu.Lock()
	p.waiting++
	p.mu.Unlock()
	p.Kick()
	return func() {
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
	}
}

// Blocked returns why the pool cannot give out more addresses, or nil
// while an address may still come (the pool can grow, or a freed address
// ends its cooldown); and a channel closed when that may change.
func (p *Pool) Blocked() (error, <-chan struct{}) {
	st := p.ds.Stats()
	room := p.hasRoom()
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.Assigned >= p.maxPods {
		return fmt.Errorf("%w (%d)", ErrMaxPods, p.maxPods), p.changed
	}
	if p.blocked == nil {
		return nil, p.changed
	}
	// Our own ENI-limit verdict holds while no ENI slot or address slot is
	// free; what EC2 said holds until its backoff ends, when the next
	// growth attempt asks again.
	stale := room
	if !p.blockedUntil.IsZero() {
		stale = !p.now().Before(p.blockedUntil)
	}
	if stale {
		p.blocked, p.blockedUntil = nil, time.Time{}
		return nil, p.changed
	}
	if st.Cooling > 0 {
		return nil, p.changed // an address comes back when its cooldown ends
	}
	return p.blocked, p.changed
}

// hasRoom reports whether the node could hold more addresses: a free ENI
// slot, or an ENI with a free address (or prefix) slot.
func (p *Pool) hasRoom() bool {
	if p.cfg.NoProvisioning {
		return false // room ipamd may not fill
	}
	enis := p.ds.ENIs()
	if len(enis)+p.UnmanagedENIs() < p.maxENIs() {
		return true
	}
	per := p.cloud.Instance().Info.IPv4PerENI - 1
	for _, e := range enis {
		if p.forPods(e) && len(p.ds.CIDRs(e.ID)) < per {
			return true
		}
	}
	return false
}

// setBlocked records why the pool cannot grow. A backoff (for reasons EC2
// gave) also bounds how long the reason is reported.
func (p *Pool) setBlocked(err error, backoff time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked, p.blockedUntil = err, time.Time{}
	if backoff > 0 {
		p.backoffUntil = p.now().Add(backoff)
		if err != nil {
			p.blockedUntil = p.backoffUntil
		}
	}
	p.notifyLocked()
}

// notifyLocked wakes the ADDs waiting on Blocked's channel; p.mu is held.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// report makes the pool's reason err for at most d, without a backoff.
func (p *Pool) report(err error, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked, p.blockedUntil = err, p.now().Add(d)
	p.notifyLocked()
}

// unreport forgets the reason err once it no longer holds.
func (p *Pool) unreport(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked != err {
		return
	}
	p.blocked, p.blockedUntil = nil, time.Time{}
	p.notifyLocked()
}

// capacityFreed forgets the reason growth failed once ipamd gave addresses
// or an ENI back: the subnet or the instance has room again.
func (p *Pool) capacityFreed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked == nil {
		return
	}
	p.blocked, p.blockedUntil, p.backoffUntil = nil, time.Time{}, time.Time{}
	p.notifyLocked()
}

// Run reconciles every 5 s and on Kick until ctx ends.
func (p *Pool) Run(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	p.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
		p.reconcile(ctx)
	}
}

// target returns how many addresses the pool should hold.
func (p *Pool) target(st datastore.Stats, waiting int) int {
	c := p.cfg
	in := p.cloud.Instance()
	var want int
	switch {
	case c.WarmIPTarget > 0 || c.MinimumIPTarget > 0:
		want = max(st.Assigned+c.WarmIPTarget, c.MinimumIPTarget)
	case c.PrefixDelegation:
		want = st.Assigned + c.WarmPrefixTarget*16
	default:
		want = st.Assigned + c.WarmENITarget*(in.Info.IPv4PerENI-1)
	}
	// A warm target of 0 still keeps one address free, as in the VPC CNI:
	// otherwise a new node never has one, never writes its conflist, and
	// so never gets the pod whose ADD would grow the pool.
	if c.WarmIPTarget == 0 && c.MinimumIPTarget == 0 && (c.PrefixDelegation && c.WarmPrefixTarget == 0 || !c.PrefixDelegation && c.WarmENITarget == 0) {
		want = max(want, st.Assigned+1)
	}
	// Waiting ADDs need usable addresses now: cooling ones do not count.
	want = max(want, st.Assigned+st.Cooling+waiting)
	return min(want, p.maxPods+st.Cooling)
}

// maxENIs is the pool's network card's ENI limit, lowered by MAX_ENI (which
// the VPC CNI applies to every card).
func (p *Pool) maxENIs() int {
	n := p.cloud.Instance().Info.ENIsPerCard()
	if p.cfg.MaxENI > 0 && p.cfg.MaxENI < n {
		n = p.cfg.MaxENI
	}
	return n
}

func (p *Pool) reconcile(ctx context.Context) {
	if p.lockEC2(ctx) != nil {
		return // shutting down
	}
	defer p.unlockEC2()
	st := p.ds.Stats()
	p.mu.Lock()
	waiting := p.waiting
	inBackoff := p.now().Before(p.backoffUntil)
	p.mu.Unlock()
	if p.cfg.NoProvisioning {
		// Addresses come from whoever provisions the node; reconcile
		// with EC2 adopts them. ADDs learn why none come from ipamd.
		if st.Free-st.Cooling > 0 {
			p.setBlocked(nil, 0)
			return
		}
		if waiting > 0 {
			p.setBlocked(ErrNoProvisioning, 0)
		}
		select { // someone may have assigned some since the last look
		case p.reconcileNow <- struct{}{}:
		default:
		}
		return
	}
	want := p.target(st, waiting)
	if !p.cordoned() {
		p.unreport(ErrCordoned)
	}
	switch {
	case st.Total < want && p.cordoned():
		if waiting > 0 {
			// Reported until the next look (every 5 s, and on the
			// cordon's end); no backoff, so growth resumes at once.
			p.report(ErrCordoned, 10*time.Second)
		}
	case st.Total < want:
		if inBackoff {
			// Also with ADDs waiting: they get the reason from Blocked,
			// and a pod retried every few seconds must not turn into an
			// EC2 call each time against a subnet known to be full.
			return
		}
		defer p.ec2Gen.Add(1) // after the grow, before the unlock
		if err := p.grow(ctx, want-st.Total, p.maxPods+st.Cooling-st.Total); err != nil {
			p.log.Warn("grow the pool", "want", want, "have", st.Total, "err", err)
		}
	case st.Total >= want && waiting == 0:
		p.mu.Lock()
		due := p.now().Sub(p.lastShrink) >= 30*time.Second
		p.mu.Unlock()
		if due {
			surplus := st.Total - want
			if p.cfg.PrefixDelegation {
				surplus = p.prefixSurplus(st, want)
			}
			p.shrink(ctx, surplus)
			p.ec2Gen.Add(1) // after: a listing that overlapped it must see the change
		}
	}
}

// prefixSurplus is how many addresses of whole free prefixes may go back,
// counted as the VPC CNI counts them: only prefixes with no address
// assigned or cooling are free, and WARM_PREFIX_TARGET keeps that many of
// them; with WARM_IP_TARGET or MINIMUM_IP_TARGET, free prefixes go while
// the addresses above the target (extra) fill whole prefixes. Addresses
// freed inside prefixes that pods still use are no surplus: they cannot
// go back, and counting them would return the warm prefixes instead.
func (p *Pool) prefixSurplus(st datastore.Stats, want int) int {
	free := 0
	for _, e := range p.ds.ENIs() {
		for _, c := range p.ds.CIDRs(e.ID) {
			if c.IsPrefix && c.Assigned == 0 && c.Cooling == 0 {
				free++
			}
		}
	}
	if p.cfg.WarmIPTarget > 0 || p.cfg.MinimumIPTarget > 0 {
		return 16 * min(free, max(st.Total-want, 0)/16)
	}
	keep := p.cfg.WarmPrefixTarget
	if keep == 0 && st.Total-st.Assigned-16*free < 1 {
		keep = 1 // the one free address target keeps (see target)
	}
	return 16 * max(free-keep, 0)
}

// grow adds at least deficit addresses (at most limit, the max-pods bound):
// first on existing ENIs, then on a new one, in one EC2 call per ENI.
func (p *Pool) grow(ctx context.Context, deficit, limit int) error {
	in := p.cloud.Instance()
	per := in.Info.IPv4PerENI - 1 // slots besides the ENI's own primary address
	// In WARM_ENI_TARGET mode the VPC CNI fills every free slot of an ENI
	// in one call, so the pods that follow cost no EC2 call; WARM_IP_TARGET
	// and MINIMUM_IP_TARGET ask for exactly what they need.
	whole := !p.cfg.PrefixDelegation && p.cfg.WarmIPTarget == 0 && p.cfg.MinimumIPTarget == 0
	ask := func(room int) int {
		if whole {
			return max(min(room, limit), deficit)
		}
		return deficit
	}
	var exhausted error // of an existing ENI's subnet
	enis := p.ds.ENIs()
	for _, e := range enis {
		if deficit <= 0 {
			break
		}
		used := len(p.ds.CIDRs(e.ID))
		room := per - used
		if room <= 0 || !p.forPods(e) {
			continue
		}
		got, err := p.addTo(ctx, e.ID, room, ask(room))
		deficit -= got
		limit -= got
		if errors.Is(err, cloud.ErrSubnetExhausted) && p.cfg.SubnetDiscovery {
			// This ENI's subnet is full; a new ENI may go to another.
			p.log.Warn("subnet of the ENI exhausted", "eni", e.ID, "err", err)
			exhausted = err
			continue
		}
		if errors.Is(err, cloud.ErrLimitExceeded) {
			// EC2 counts this ENI full (it holds addresses the datastore
			// does not know of yet): the next ENI, or a new one, may not be.
			p.log.Warn("ENI at its address limit", "eni", e.ID, "err", err)
			continue
		}
		if err != nil {
			return p.failed(err)
		}
	}
	for deficit > 0 {
		if len(p.ds.ENIs())+p.UnmanagedENIs() >= p.maxENIs() {
			if exhausted != nil {
				return p.failed(exhausted)
			}
			err := fmt.Errorf("%w: %d ENIs of %s", ErrNodeCapacity, p.maxENIs(), in.Type)
			p.setBlocked(err, 0)
			return err
		}
		req := cloud.CreateENIRequest{SubnetID: in.SubnetID, SecurityGroups: in.SecurityGroups, Device: p.nextDevice(), Card: p.card, Tags: p.cfg.AdditionalENITags}
		var subnets []string
		if !p.cfg.CustomNetworking {
			subnets = p.subnetCandidates(ctx)
		} else {
			if p.eniConfigs == nil {
				return p.failed(fmt.Errorf("%w: no way to read it", ErrNoENIConfig))
			}
			ec, err := p.eniConfigs.ENIConfig(ctx)
			if err != nil {
				return p.failed(fmt.Errorf("%w: %w", ErrNoENIConfig, err))
			}
			if len(ec.SecurityGroups) > 0 {
				req.SecurityGroups = ec.SecurityGroups
			}
			subnets = []string{ec.Subnet}
		}
		if p.cfg.PrefixDelegation {
			// The ENI's slots are prefixes: as many as the deficit needs.
			req.Prefixes = min((deficit+15)/16, per)
		} else {
			req.IPs = min(ask(per), per)
		}
		e, err := p.createENI(ctx, req, subnets)
		if err != nil {
			return p.failed(err)
		}
		if err := p.adopt(ctx, e); err != nil {
			return p.failed(err)
		}
		got := len(e.Secondary) + 16*len(e.Prefixes)
		deficit -= got
		limit -= got
		p.log.Info("attached ENI", "eni", e.ID, "device", e.Device, "card", e.Card, "ips", len(e.Secondary), "prefixes", len(e.Prefixes))
	}
	p.setBlocked(nil, 0)
	return nil
}

// createENI creates an ENI in the first candidate subnet, moving on to
// the next when EC2 says a subnet has no free addresses.
func (p *Pool) createENI(ctx context.Context, req cloud.CreateENIRequest, subnets []string) (cloud.ENI, error) {
	if len(subnets) == 0 {
		return cloud.ENI{}, ErrNoSubnet
	}
	var err error
	for _, id := range subnets {
		req.SubnetID = id
		var e cloud.ENI
		if e, err = p.cloud.CreateENI(ctx, req); err == nil {
			return e, nil
		}
		if !errors.Is(err, cloud.ErrSubnetExhausted) {
			return cloud.ENI{}, err
		}
		p.log.Warn("subnet exhausted, trying the next", "subnet", id, "err", err)
	}
	return cloud.ENI{}, err
}

// subnetCandidates lists the subnets a new ENI may go to, most free
// addresses first: the node's own unless tagged SubnetRoleTag=0, and,
// with ENABLE_SUBNET_DISCOVERY, those of its VPC and AZ tagged with any
// other value. Without the listing it falls back to the node's subnet.
func (p *Pool) subnetCandidates(ctx context.Context) []string {
	own := p.cloud.Instance().SubnetID
	if !p.cfg.SubnetDiscovery {
		return []string{own}
	}
	subs, err := p.cloud.CNISubnets(ctx)
	if err != nil {
		p.log.Warn("list subnets; using the node's", "err", err)
		return []string{own}
	}
	sort.SliceStable(subs, func(i, j int) bool { return subs[i].Available > subs[j].Available })
	var ids []string
	ownListed := false
	for _, s := range subs {
		role := s.Tags[SubnetRoleTag]
		if s.ID == own {
			ownListed = true
		} else if role == "" {
			continue
		}
		if role != "0" {
			ids = append(ids, s.ID)
		}
	}
	if !ownListed {
		ids = append(ids, own)
	}
	return ids
}

// addTo assigns up to room slots (addresses or prefixes) to an ENI for a
// deficit of addresses; it returns how many addresses it added.
func (p *Pool) addTo(ctx context.Context, eniID string, room, deficit int) (int, error) {
	if p.cfg.PrefixDelegation {
		n := min((deficit+15)/16, room)
		ps, err := p.cloud.AssignPrefixes(ctx, eniID, n)
		if err != nil {
			return 0, err
		}
		for _, pf := range ps {
			if err := p.ds.AddCIDR(eniID, pf); err != nil {
				return 0, err
			}
		}
		return 16 * len(ps), nil
	}
	ips, err := p.cloud.AssignIPs(ctx, eniID, min(deficit, room))
	if err != nil {
		return 0, err
	}
	for _, ip := range ips {
		if err := p.ds.AddCIDR(eniID, netip.PrefixFrom(ip, 32)); err != nil {
			return 0, err
		}
	}
	return len(ips), nil
}

// nextDevice is the lowest free device index on the pool's card: from 1 on
// card 0, whose device 0 is the primary ENI, from 0 on the others.
func (p *Pool) nextDevice() int {
	used := map[int]bool{}
	for _, e := range p.ds.ENIs() {
		used[e.DeviceIndex] = true
	}
	p.mu.Lock()
	for _, e := range p.unmanaged {
		if e.Card == p.card {
			used[e.Device] = true
		}
	}
	p.mu.Unlock()
	first := 0
	if p.card == 0 {
		first = 1
	}
	for d := first; ; d++ {
		if !used[d] {
			return d
		}
	}
}

// failed records a growth failure and its backoff.
func (p *Pool) failed(err error) error {
	switch {
	case errors.Is(err, cloud.ErrSubnetExhausted), errors.Is(err, ErrNoSubnet):
		p.setBlocked(err, 120*time.Second)
	case errors.Is(err, ErrNoENIConfig):
		// Until someone creates or names it: tell the waiting ADDs why.
		p.setBlocked(err, 10*time.Second)
	case errors.Is(err, cloud.ErrLimitExceeded):
		p.setBlocked(fmt.Errorf("%w: %v", ErrNodeCapacity, err), 30*time.Second)
	default:
		// Transient (throttling the SDK could not ride out, EC2 errors):
		// retry soon, with jitter, but tell waiting ADDs the reason only if
		// it persists.
		p.setBlocked(nil, time.Duration(1000+rand.IntN(2000))*time.Millisecond)
	}
	return err
}

// shrink returns surplus addresses: whole prefixes in prefix mode,
// individual addresses with WARM_IP_TARGET, whole ENIs otherwise; never
// the primary ENI, never an ENI younger than a minute.
func (p *Pool) shrink(ctx context.Context, surplus int) {
	p.mu.Lock()
	p.lastShrink = p.now()
	p.mu.Unlock()
	enis := p.ds.ENIs()
	sort.Slice(enis, func(i, j int) bool { return enis[i].DeviceIndex > enis[j].DeviceIndex })
	individual := p.cfg.WarmIPTarget > 0 || p.cfg.MinimumIPTarget > 0 || p.cfg.PrefixDelegation
	for _, e := range enis {
		cidrs := p.ds.CIDRs(e.ID)
		if surplus <= 0 && len(cidrs) > 0 {
			continue // only empty ENIs go when there is no surplus
		}
		size := 0
		busy := false
		for _, c := range cidrs {
			size += 1 << (32 - c.Prefix.Bits())
			busy = busy || c.Assigned > 0 || c.Cooling > 0
		}
		p.mu.Lock()
		young := p.now().Sub(p.enis[e.ID]) < time.Minute
		p.mu.Unlock()
		if !e.IsPrimary && !busy && !young && size <= surplus && !p.cordoned() {
			if err := p.ds.RemoveENI(e.ID); err != nil {
				continue
			}
			if err := p.cloud.FreeENI(ctx, e.ID); err != nil {
				p.log.Error("free ENI", "eni", e.ID, "err", err)
				continue
			}
			p.mu.Lock()
			delete(p.enis, e.ID)
			p.released[e.ID] = p.now()
			p.mu.Unlock()
			p.capacityFreed()
			surplus -= size
			p.log.Info("freed surplus ENI", "eni", e.ID)
			continue
		}
		if !individual {
			continue
		}
		var ips []netip.Addr
		var prefixes []netip.Prefix
		for _, c := range cidrs {
			n := 1 << (32 - c.Prefix.Bits())
			if c.Assigned > 0 || c.Cooling > 0 || n > surplus {
				continue
			}
			if err := p.ds.RemoveCIDR(e.ID, c.Prefix); err != nil {
				continue
			}
			if c.IsPrefix {
				prefixes = append(prefixes, c.Prefix)
			} else {
				ips = append(ips, c.Prefix.Addr())
			}
			surplus -= n
		}
		if len(ips) > 0 {
			if err := p.cloud.UnassignIPs(ctx, e.ID, ips); err != nil {
				p.log.Error("unassign surplus addresses", "eni", e.ID, "err", err)
				// Still the ENI's: back in the pool, which must not ask EC2
				// for more than the ENI can take.
				for _, ip := range ips {
					_ = p.ds.AddCIDR(e.ID, netip.PrefixFrom(ip, 32))
				}
			} else {
				noteReleased(p, ips)
				p.capacityFreed()
			}
		}
		if len(prefixes) > 0 {
			if err := p.cloud.UnassignPrefixes(ctx, e.ID, prefixes); err != nil {
				p.log.Error("unassign surplus prefixes", "eni", e.ID, "err", err)
				for _, pf := range prefixes {
					_ = p.ds.AddCIDR(e.ID, pf)
				}
			} else {
				noteReleased(p, prefixes)
				p.capacityFreed()
			}
		}
	}
}

// CleanupLeakedENIs deletes available ENIs that a node of the VPC (of the
// cluster, with CLUSTER_NAME) created and no longer uses: this one's, or a
// terminated node's;
// it runs hourly after a random delay (as the VPC CNI does), unless disabled.
func (p *Pool) CleanupLeakedENIs(ctx context.Context) {
	if p.cfg.DisableLeakedENICleanup {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(rand.IntN(300)) * time.Second):
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		p.cleanupLeakedOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// cleanupLeakedOnce deletes the leaked ENIs EC2 reports, never one the
// datastore still uses.
func (p *Pool) cleanupLeakedOnce(ctx context.Context) int {
	ids, err := p.cloud.LeakedENIs(ctx)
	if err != nil {
		p.log.Warn("list leaked ENIs", "err", err)
		return 0
	}
	inUse := map[string]bool{}
	for _, e := range p.ds.ENIs() {
		inUse[e.ID] = true
	}
	deleted := 0
	for _, id := range ids {
		if inUse[id] {
			continue
		}
		if err := p.cloud.DeleteENI(ctx, id); err != nil {
			p.log.Warn("delete leaked ENI", "eni", id, "err", err)
			continue
		}
		deleted++
		p.log.Info("deleted leaked ENI", "eni", id)
	}
	return deleted
}
