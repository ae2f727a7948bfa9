package datastore

import (
	"net/netip"
	"sort"
	"sync"
)

// HostNetworkName is the network name of an allocation rebuilt from the
// host's routes after the checkpoint was lost, like the VPC CNI's
// "_migrated-from-cri" entries: no runtime knows the key, so only the orphan
// sweep releases it, once the veth (the ContainerID) is gone, and CNI GC,
// which looks only at its own network, leaves it alone.
const HostNetworkName = "_restored-from-host"

// HostKey is the key of an address rebuilt from the host veth that routes
// it.
func HostKey(veth string) Key {
	return Key{NetworkName: HostNetworkName, ContainerID: veth, IfName: "unknown"}
}

// HostVeth returns the veth of an allocation rebuilt from the host.
func (a Allocation) HostVeth() (string, bool) {
	if a.Key.NetworkName != HostNetworkName {
		return "", false
	}
	return a.Key.ContainerID, true
}

// Held holds restored allocations of live pods whose address the store
// does not have yet: EC2 listed the node's addresses before an assignment
// made just before a crash became visible, or the ENI is now unmanaged.
// Dropping them would let the pool hand the address to a second pod once
// it shows up; holding them keeps it reserved (AddCIDRHolding), keeps the
// pod's rules and keeps them in the checkpoint for the next restart.
type Held struct {
	mu sync.Mutex
	m  map[netip.Addr]Allocation
}

// Add holds a.
func (h *Held) Add(a Allocation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[netip.Addr]Allocation{}
	}
	h.m[a.IP] = a
}

// List returns the held allocations, sorted by IP.
func (h *Held) List() []Allocation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listLocked()
}

func (h *Held) listLocked() []Allocation {
	out := make([]Allocation, 0, len(h.m))
	for _, a := range h.m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Remove stops holding key's allocation and returns it.
func (h *Held) Remove(k Key) (Allocation, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ip, a := range h.m {
		if a.Key == k {
			delete(h.m, ip)
			return a, true
		}
	}
	return Allocation{}, false
}

// Lookup returns key's held allocation.
func (h *Held) Lookup(k Key) (Allocation, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.m {
		if a.Key == k {
			return a, true
		}
	}
	return Allocation{}, false
}

// Len is how many allocations are held.
func (h *Held) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

// InPool reports whether ip belongs to one of the store's CIDRs.
func (s *Store) InPool(ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[ip] != nil
}

// claimHeldLocked gives the held addresses in a CIDR just added back to
// their holders, in AddCIDR's critical section, so no Assign can take one
// in between. The caller holds s.mu.
func (s *Store) claimHeldLocked(e *ENI, c *cidr) {
	h := s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	for ip, ha := range h.m {
		st := s.addrs[ip]
		if !c.prefix.Contains(ip) || st == nil || st.alloc != nil {
			continue
		}
		if _, dup := s.allocs[ha.Key]; dup {
			continue
		}
		// As Restore: the address leaves the free queues.
		na := ha
		na.ENI, na.Device, na.Card = e.ID, e.DeviceIndex, e.Card
		st.alloc = &na
		st.queueGen = 0
		c.assigned++
		s.allocs[na.Key] = &na
		s.free--
		delete(h.m, ip)
	}
}

// allocationsAndHeld is what the checkpoint records: the store's
// allocations and the held ones, read together so that an allocation
// moving from held to the store is in the snapshot exactly once.
func (s *Store) allocationsAndHeld() []Allocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Allocation, 0, len(s.allocs)+len(h.m))
	for _, a := range s.allocs {
		out = append(out, *a)
	}
	out = append(out, h.listLocked()...)
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Held is the set of restored allocations waiting for their address to
// join the store.
func (s *Store) Held() *Held { return s.held }
