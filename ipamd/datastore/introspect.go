package datastore

import (
	"net/netip"
	"sort"
	"time"
)

// AddressState is one address of the pool that a pod holds or held, as
// the introspection API reports it.
type AddressState struct {
	IP netip.Addr
	// Alloc is the current holder; nil once released.
	Alloc *Allocation
	// FreedAt is when the address was last released (zero if never).
	FreedAt time.Time
}

// CIDRState is a CIDR with the addresses pods hold or held; addresses
// never handed out are left out, as the VPC CNI leaves them out.
type CIDRState struct {
	Prefix    netip.Prefix
	IsPrefix  bool
	Addresses []AddressState
}

// ENIState is an ENI with its CIDRs.
type ENIState struct {
	ENI
	CIDRs []CIDRState
}

// Snapshot returns every ENI, CIDR and used address under one lock, so
// the totals and the listing agree. ENIs are sorted by device index,
// CIDRs and addresses by address.
func (s *Store) Snapshot() (enis []ENIState, total, assigned int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.enis {
		es := ENIState{ENI: *e}
		es.cidrs = nil
		for _, c := range e.cidrs {
			cs := CIDRState{Prefix: c.prefix, IsPrefix: c.isPrefix}
			for a := range addrsOf(c.prefix) {
				st := s.addrs[a]
				if st == nil || (st.alloc == nil && st.freedAt.IsZero()) {
					continue
				}
				as := AddressState{IP: a, FreedAt: st.freedAt}
				if st.alloc != nil {
					al := *st.alloc
					as.Alloc = &al
				}
				cs.Addresses = append(cs.Addresses, as)
			}
			es.CIDRs = append(es.CIDRs, cs)
		}
		sort.Slice(es.CIDRs, func(i, j int) bool { return es.CIDRs[i].Prefix.Addr().Less(es.CIDRs[j].Prefix.Addr()) })
		enis = append(enis, es)
	}
	sort.Slice(enis, func(i, j int) bool { return enis[i].DeviceIndex < enis[j].DeviceIndex })
	return enis, len(s.addrs), len(s.allocs)
}
