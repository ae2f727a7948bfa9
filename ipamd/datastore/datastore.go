// Package datastore is ipamd's record of which VPC addresses the node has
// (ENI → CIDR, a /32 secondary IP or a /28 prefix) and which pod holds
// each, keyed like the Amazon VPC CNI by (network name, container ID,
// interface name). Every lookup is indexed; all methods are safe for
// concurrent use. Freed addresses cool down before reuse so a late packet
// for an old pod never reaches a new one.
package datastore

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Errors returned at the package boundary.
var (
	ErrNoFreeIP      = errors.New("no free IP address in the pool")
	ErrUnknownENI    = errors.New("unknown ENI")
	ErrCIDRInUse     = errors.New("CIDR has assigned or cooling addresses")
	ErrDuplicateCIDR = errors.New("CIDR already in the pool")
	// ErrHeld refuses a second address to an attachment that holds one
	// from before a restart which EC2 does not list yet: once it shows
	// up, the first would be free in the pool for another pod.
	ErrHeld = errors.New("the attachment holds an address from before ipamd's restart that EC2 does not list yet; retry later")
)

// Key identifies a pod attachment.
type Key struct {
	NetworkName string
	ContainerID string
	IfName      string
}

func (k Key) String() string { return k.NetworkName + "/" + k.ContainerID + "/" + k.IfName }

// Meta is what the checkpoint records about a pod.
type Meta struct {
	PodNamespace    string
	PodName         string
	InterfacesCount int
}

// Allocation is one assigned address.
type Allocation struct {
	Key        Key
	IP         netip.Addr
	ENI        string
	Device     int
	Card       int // the ENI's network card
	Meta       Meta
	AssignedAt time.Time
}

// Interface is the index of the pod interface that has a's address when
// a is network card card's: a multi-NIC pod's n-th for card n, and eth0
// (0) for a pod with one interface, whichever card's address it got.
func (a Allocation) Interface(card int) int {
	if a.Meta.InterfacesCount <= 1 {
		return 0
	}
	return card
}

// ENI is an interface the pool draws from.
type ENI struct {
	ID          string
	DeviceIndex int
	Card        int // network card
	IsPrimary   bool
	PrimaryIP   netip.Addr
	Subnet      netip.Prefix
	CreatedAt   time.Time
	cidrs       map[netip.Prefix]*cidr
}

type cidr struct {
	prefix   netip.Prefix
	isPrefix bool // a delegated /28
	eni      *ENI
	assigned int
	added    time.Time
}

// addr is the state of one address the pool owns.
type addr struct {
	cidr     *cidr
	alloc    *Allocation // nil when free
	freedAt  time.Time   // zero: never used
	queueGen uint64      // which queue entry is current (lazy deletion)
}

type queued struct {
	ip  netip.Addr
	gen uint64
}

// Store is the datastore.
type Store struct {
	mu       sync.Mutex
	cooldown time.Duration
	now      func() time.Time

	enis   map[string]*ENI
	addrs  map[netip.Addr]*addr
	allocs map[Key]*Allocation
	// fresh holds never-used free addresses (LIFO); cooling holds freed
	// ones in the order they were freed (FIFO). Entries whose gen no
	// longer matches the address are stale and skipped.
	fresh   []queued
	cooling []queued
	gen     uint64
	free    int

	// changed is closed (and replaced) whenever free addresses appear:
	// added, or at the end of a cooldown (wake, armed while someone waits).
	changed chan struct{}
	wake    *time.Timer
	wakeAt  time.Time // when wake fires

	// held are restored allocations whose address is not in the store yet
	// (see Held); AddCIDR gives them back to their pods.
	held *Held
}

// New returns an empty store.
func New(cooldown time.Duration, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{cooldown: cooldown, now: now, enis: map[string]*ENI{}, addrs: map[netip.Addr]*addr{},
		allocs: map[Key]*Allocation{}, held: &Held{}, changed: make(chan struct{})}
}

// AddENI registers an ENI (idempotent).
func (s *Store) AddENI(e ENI) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.enis[e.ID]; old != nil {
		old.DeviceIndex, old.IsPrimary, old.PrimaryIP, old.Subnet = e.DeviceIndex, e.IsPrimary, e.PrimaryIP, e.Subnet
		return
	}
	ne := e
	ne.cidrs = map[netip.Prefix]*cidr{}
	s.enis[e.ID] = &ne
}

// AddCIDR adds a secondary address (/32) or prefix (/28) of an ENI; its
// addresses become free.
func (s *Store) AddCIDR(eniID string, p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enis[eniID]
	if e == nil {
		return fmt.Errorf("add %s to %s: %w", p, eniID, ErrUnknownENI)
	}
	_, added, err := s.addCIDRLocked(e, p.Masked())
	if added {
		s.notify()
	}
	return err
}

// addCIDRLocked adds p (masked) to e with its addresses free, unless e has
// it already, and gives held addresses in it back to their pods; it
// returns the CIDR and whether it was added. Caller holds s.mu and
// notifies.
func (s *Store) addCIDRLocked(e *ENI, p netip.Prefix) (*cidr, bool, error) {
	if c, ok := e.cidrs[p]; ok {
		return c, false, nil
	}
	for a := range addrsOf(p) {
		if _, taken := s.addrs[a]; taken {
			return nil, false, fmt.Errorf("add %s to %s: %s: %w", p, e.ID, a, ErrDuplicateCIDR)
		}
	}
	c := &cidr{prefix: p, isPrefix: p.Bits() < 32, eni: e, added: s.now()}
	e.cidrs[p] = c
	for a := range addrsOf(p) {
		s.gen++
		s.addrs[a] = &addr{cidr: c, queueGen: s.gen}
		s.fresh = append(s.fresh, queued{a, s.gen})
		s.free++
	}
	s.claimHeldLocked(e, c)
	return c, true, nil
}

func addrsOf(p netip.Prefix) func(func(netip.Addr) bool) {
	return func(yield func(netip.Addr) bool) {
		for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
			if !yield(a) {
				return
			}
		}
	}
}

func (s *Store) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed the next time free addresses appear,
// including when the earliest cooling address becomes usable.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The timer may be set for a later release's end (armed after an
	// earlier one fired): an address usable sooner wakes the waiter then.
	if end, ok := s.firstCoolingEnd(); ok && (s.wake == nil || end.Before(s.wakeAt)) {
		if s.wake != nil {
			s.wake.Stop()
		}
		s.wake, s.wakeAt = time.AfterFunc(max(end.Sub(s.now()), 0), s.cooled), end
	}
	return s.changed
}

// cooled wakes the waiters when a cooldown ends.
func (s *Store) cooled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wake = nil
	s.notify()
}

// firstCoolingEnd returns when the earliest freed address finishes its
// cooldown; the queue is in release order, so that is its first live entry.
func (s *Store) firstCoolingEnd() (time.Time, bool) {
	for len(s.cooling) > 0 {
		q := s.cooling[0]
		if st := s.addrs[q.ip]; st != nil && st.alloc == nil && st.queueGen == q.gen {
			return st.freedAt.Add(s.cooldown), true
		}
		s.cooling = s.cooling[1:]
	}
	return time.Time{}, false
}

// Assign gives key an address. An existing allocation for key is returned
// again (ADD retried by the runtime). ErrNoFreeIP when the pool is dry
// (addresses still cooling down do not count).
func (s *Store) Assign(k Key, m Meta) (Allocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocs[k]; a != nil {
		return *a, nil
	}
	if ha, ok := s.held.Lookup(k); ok {
		return Allocation{}, fmt.Errorf("%w (%s)", ErrHeld, ha.IP)
	}
	ip, ok := s.takeFree()
	if !ok {
		return Allocation{}, ErrNoFreeIP
	}
	st := s.addrs[ip]
	a := &Allocation{Key: k, IP: ip, ENI: st.cidr.eni.ID, Device: st.cidr.eni.DeviceIndex, Card: st.cidr.eni.Card, Meta: m, AssignedAt: s.now()}
	st.alloc = a
	st.cidr.assigned++
	s.allocs[k] = a
	return *a, nil
}

// takeFree pops a usable free address.
func (s *Store) takeFree() (netip.Addr, bool) {
	for len(s.fresh) > 0 {
		q := s.fresh[len(s.fresh)-1]
		s.fresh = s.fresh[:len(s.fresh)-1]
		if st := s.addrs[q.ip]; st != nil && st.alloc == nil && st.queueGen == q.gen {
			s.free--
			return q.ip, true
		}
	}
	now := s.now()
	for len(s.cooling) > 0 {
		q := s.cooling[0]
		st := s.addrs[q.ip]
		if st == nil || st.alloc != nil || st.queueGen != q.gen {
			s.cooling = s.cooling[1:]
			continue
		}
		if now.Sub(st.freedAt) < s.cooldown {
			return netip.Addr{}, false
		}
		s.cooling = s.cooling[1:]
		s.free--
		return q.ip, true
	}
	return netip.Addr{}, false
}

// Restore re-creates an allocation read from the checkpoint. The address
// must belong to the pool.
func (s *Store) Restore(a Allocation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.addrs[a.IP]
	if st == nil {
		return fmt.Errorf("restore %s for %s: address not on any ENI", a.IP, a.Key)
	}
	if st.alloc != nil {
		if st.alloc.Key == a.Key {
			return nil
		}
		return fmt.Errorf("restore %s for %s: already held by %s", a.IP, a.Key, st.alloc.Key)
	}
	if _, dup := s.allocs[a.Key]; dup {
		return fmt.Errorf("restore %s: %s already has an address", a.IP, a.Key)
	}
	na := a
	na.ENI, na.Device, na.Card = st.cidr.eni.ID, st.cidr.eni.DeviceIndex, st.cidr.eni.Card
	st.alloc = &na
	st.queueGen = 0 // any queue entry for it is now stale
	st.cidr.assigned++
	s.allocs[a.Key] = &na
	s.free--
	return nil
}

// Release frees key's address; ok is false when key held none.
func (s *Store) Release(k Key) (Allocation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocs[k]
	if a == nil {
		return Allocation{}, false
	}
	delete(s.allocs, k)
	st := s.addrs[a.IP]
	st.alloc = nil
	st.freedAt = s.now()
	st.cidr.assigned--
	s.gen++
	st.queueGen = s.gen
	s.cooling = append(s.cooling, queued{a.IP, s.gen})
	s.free++
	// A waiter that subscribed before this release is woken when the
	// address is usable again.
	if s.wake == nil {
		s.wake, s.wakeAt = time.AfterFunc(s.cooldown, s.cooled), st.freedAt.Add(s.cooldown)
	}
	return *a, true
}

// Lookup returns key's allocation.
func (s *Store) Lookup(k Key) (Allocation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocs[k]
	if a == nil {
		return Allocation{}, false
	}
	return *a, true
}

// Allocations returns every allocation, sorted by IP.
func (s *Store) Allocations() []Allocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Allocation, 0, len(s.allocs))
	for _, a := range s.allocs {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// RemoveCIDR gives a CIDR back (shrinking the pool). It is refused with
// ErrCIDRInUse while any of its addresses is assigned or cooling, checked
// in the same lock hold as the removal: a pod that came and went since the
// caller looked keeps its address out of EC2 until the cooldown ends.
func (s *Store) RemoveCIDR(eniID string, p netip.Prefix) error {
	return s.removeCIDR("remove", eniID, p, true)
}

// DropCIDR forgets a CIDR EC2 no longer gives the node. Its free addresses
// go even while cooling (they may be someone else's now); ErrCIDRInUse
// while a pod holds one.
func (s *Store) DropCIDR(eniID string, p netip.Prefix) error {
	return s.removeCIDR("drop", eniID, p, false)
}

// removeCIDR removes eniID's CIDR p unless busy says no (counting cooling
// addresses with keepCooling); op names the caller in errors.
func (s *Store) removeCIDR(op, eniID string, p netip.Prefix, keepCooling bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enis[eniID]
	if e == nil {
		return fmt.Errorf("%s %s of %s: %w", op, p, eniID, ErrUnknownENI)
	}
	c := e.cidrs[p.Masked()]
	if c == nil {
		return nil
	}
	if err := s.busy(c, s.now(), keepCooling); err != nil {
		return fmt.Errorf("%s %s of %s: %w", op, p, eniID, err)
	}
	s.dropCIDR(c)
	return nil
}

// RemoveENI drops an ENI with all its CIDRs, or nothing: refused with
// ErrCIDRInUse while any address on it is assigned or cooling. One lock
// hold, so no address can be added to the ENI halfway and outlive it.
func (s *Store) RemoveENI(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enis[id]
	if e == nil {
		return nil
	}
	now := s.now()
	for _, c := range e.cidrs {
		if err := s.busy(c, now, true); err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
	}
	for _, c := range e.cidrs {
		s.dropCIDR(c)
	}
	delete(s.enis, id)
	return nil
}

// busy says why a CIDR may not go back to EC2: an assigned address, or
// (with cooling) a freed one still in its cooldown. The caller holds s.mu.
func (s *Store) busy(c *cidr, now time.Time, cooling bool) error {
	if c.assigned > 0 {
		return fmt.Errorf("%d addresses assigned: %w", c.assigned, ErrCIDRInUse)
	}
	if !cooling {
		return nil
	}
	for a := range addrsOf(c.prefix) {
		if st := s.addrs[a]; st != nil && st.alloc == nil && !st.freedAt.IsZero() && now.Sub(st.freedAt) < s.cooldown {
			return fmt.Errorf("%s cooling down: %w", a, ErrCIDRInUse)
		}
	}
	return nil
}

// dropCIDR removes a CIDR with no assigned address. The caller holds s.mu.
func (s *Store) dropCIDR(c *cidr) {
	for a := range addrsOf(c.prefix) {
		delete(s.addrs, a)
		s.free--
	}
	delete(c.eni.cidrs, c.prefix)
}

// CIDRInfo describes a CIDR for the pool manager and introspection.
type CIDRInfo struct {
	Prefix   netip.Prefix
	IsPrefix bool
	Assigned int
	// Cooling counts free addresses still in their cooldown.
	Cooling int
	// Added is when the CIDR joined the pool.
	Added time.Time
}

// CIDRs lists an ENI's CIDRs, sorted.
func (s *Store) CIDRs(eniID string) []CIDRInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enis[eniID]
	if e == nil {
		return nil
	}
	now := s.now()
	out := make([]CIDRInfo, 0, len(e.cidrs))
	for _, c := range e.cidrs {
		info := CIDRInfo{Prefix: c.prefix, IsPrefix: c.isPrefix, Assigned: c.assigned, Added: c.added}
		for a := range addrsOf(c.prefix) {
			if st := s.addrs[a]; st != nil && st.alloc == nil && !st.freedAt.IsZero() && now.Sub(st.freedAt) < s.cooldown {
				info.Cooling++
			}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.Addr().Less(out[j].Prefix.Addr()) })
	return out
}

// ENIs returns the registered ENIs, by device index.
func (s *Store) ENIs() []ENI {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ENI, 0, len(s.enis))
	for _, e := range s.enis {
		c := *e
		c.cidrs = nil
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceIndex < out[j].DeviceIndex })
	return out
}

// Stats are pool totals.
type Stats struct {
	Total, Assigned, Free, Cooling, ENIs, Prefixes int
}

// Stats returns pool totals.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Total: len(s.addrs), Assigned: len(s.allocs), Free: s.free, ENIs: len(s.enis)}
	now := s.now()
	for _, q := range s.cooling {
		if a := s.addrs[q.ip]; a != nil && a.alloc == nil && a.queueGen == q.gen && now.Sub(a.freedAt) < s.cooldown {
			st.Cooling++
		}
	}
	for _, e := range s.enis {
		for _, c := range e.cidrs {
			if c.isPrefix {
				st.Prefixes++
			}
		}
	}
	return st
}
