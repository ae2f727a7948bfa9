package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// compiled is a validated policy, before ids are assigned.
type compiled struct {
	isolated [2]bool
	rules    [2][]compiledRule
}

type compiledRule struct {
	id      uint32
	anyPeer bool
	peers   []peerEntry // when !anyPeer
	anyPort bool
	ports   []portEntry // when !anyPort
	portKey string      // canonical form of ports, to share one port set
	shared  bool        // Rule.Shared
	// share is the identity of the peer set when pods may share it:
	// direction, ports and the sorted IDs of the shared rules merged
	// into it; "" for a set of the pod's own.
	share string
}

type peerEntry struct {
	prefix netip.Prefix
	member bool
	id     uint32 // the rule's ID: sets merge several rules
}

type portEntry struct {
	proto uint8
	port  uint16
	bits  int // port bits matched, 0..16
}

type portRange struct {
	proto      uint8
	start, end uint16
}

// compile validates p and turns it into rules with peer and port sets.
// All rules of a direction that allow the same ports share one peer set,
// so a packet costs one LPM lookup per distinct port set, however many
// rules and CIDRs there are. Without Except the set is the union of the
// CIDRs (each entry keeps its rule's ID). With Except, each prefix in
// the set gets the verdict the rules give the addresses for which it is
// the longest match (see resolvePeers), which keeps every rule's Except
// to itself.
func compile(p Policy) (*compiled, error) {
	c := &compiled{}
	for dir, pd := range [2]Direction{dirIngress: p.Ingress, dirEgress: p.Egress} {
		name := [2]string{"ingress", "egress"}[dir]
		c.isolated[dir] = pd.Isolated
		if !pd.Isolated {
			continue
		}
		groups := map[string][]*compiledRule{} // by port set
		var order []string
		for i, r := range pd.Rules {
			cr, err := compileRule(r)
			if err != nil {
				return nil, fmt.Errorf("%w: %s rule %d (id %d): %w", ErrInvalidPolicy, name, i, r.ID, err)
			}
			if cr == nil {
				continue // no peer: matches nothing
			}
			if _, ok := groups[cr.portKey]; !ok {
				order = append(order, cr.portKey)
			}
			groups[cr.portKey] = append(groups[cr.portKey], cr)
		}
		for _, key := range order {
			g := groups[key]
			share := ""
			if !slices.ContainsFunc(g, func(r *compiledRule) bool { return !r.shared || r.id == 0 }) {
				// Content must not depend on the order of the rules:
				// merge them in ID order, so every pod builds the same set.
				slices.SortStableFunc(g, func(a, b *compiledRule) int { return cmp.Compare(a.id, b.id) })
				ids := make([]uint32, 0, len(g))
				for _, r := range g {
					ids = append(ids, r.id)
				}
				share = fmt.Sprintf("%s|%s|%v", name, key, slices.Compact(ids))
			}
			m := mergeRules(g)
			if !m.anyPeer {
				m.share = share
			}
			c.rules[dir] = append(c.rules[dir], m)
		}
		if len(c.rules[dir]) > MaxRules {
			return nil, fmt.Errorf("%w: %s has %d distinct port sets, at most %d", ErrInvalidPolicy, name, len(c.rules[dir]), MaxRules)
		}
	}
	return c, nil
}

// mergeRules makes one rule of rules that allow the same ports.
func mergeRules(rules []*compiledRule) compiledRule {
	if i := slices.IndexFunc(rules, func(r *compiledRule) bool { return r.anyPeer }); i >= 0 {
		return *rules[i] // every peer: the others add nothing
	}
	m := *rules[0]
	m.id = 0 // each peer entry carries its own rule's ID
	m.peers = nil
	if !slices.ContainsFunc(rules, func(r *compiledRule) bool { return hasExcept(r.peers) }) {
		for _, r := range rules {
			m.peers = append(m.peers, r.peers...)
		}
		m.peers = dedupPeers(m.peers)
		return m
	}
	m.peers = resolvePeers(rules)
	return m
}

func hasExcept(peers []peerEntry) bool {
	return slices.ContainsFunc(peers, func(p peerEntry) bool { return !p.member })
}

// dedupPeers keeps the first entry of each prefix (all are members).
func dedupPeers(peers []peerEntry) []peerEntry {
	if len(peers) < 2 {
		return peers
	}
	seen := make(map[pfxKey]bool, len(peers))
	out := peers[:0:0]
	for _, p := range peers {
		if k := prefixKey(p.prefix); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// pfxKey is a comparable prefix without netip's zone pointer, for maps.
type pfxKey struct {
	addr [16]byte
	bits int
	v6   bool
}

func prefixKey(p netip.Prefix) pfxKey {
	return pfxKey{addr: p.Addr().As16(), bits: p.Bits(), v6: p.Addr().Is6()}
}

// resolvePeers builds one LPM set that is exact for several rules with
// Excepts. Every address's longest matching prefix P among all the rules'
// CIDRs and Excepts is contained in every rule prefix that contains the
// address (prefixes nest or are disjoint), so which rules allow the
// address (one of its CIDRs contains it, none of its Excepts does) is the
// same for every address whose longest match is P. Each P therefore gets
// that verdict, and the ID of the first rule allowing it.
func resolvePeers(rules []*compiledRule) []peerEntry {
	type mark struct {
		rule   int
		except bool
	}
	marks := map[pfxKey][]mark{}
	var order []netip.Prefix
	for i, r := range rules {
		for _, pe := range r.peers {
			k := prefixKey(pe.prefix)
			if _, ok := marks[k]; !ok {
				order = append(order, pe.prefix)
			}
			marks[k] = append(marks[k], mark{rule: i, except: !pe.member})
		}
	}
	allowed := make([]bool, len(rules))
	removed := make([]bool, len(rules))
	var touched []int
	member := make(map[pfxKey]bool, len(order))
	out := make([]peerEntry, 0, len(order))
	for _, p := range order {
		touched = touched[:0]
		for bits := p.Bits(); bits >= 0; bits-- {
			for _, m := range marks[prefixKey(netip.PrefixFrom(p.Addr(), bits).Masked())] {
				if m.except {
					removed[m.rule] = true
				} else {
					allowed[m.rule] = true
				}
				touched = append(touched, m.rule)
			}
		}
		best := -1
		for _, r := range touched {
			if allowed[r] && !removed[r] && (best < 0 || r < best) {
				best = r
			}
		}
		for _, r := range touched {
			allowed[r], removed[r] = false, false
		}
		e := peerEntry{prefix: p}
		if best >= 0 {
			e.member, e.id = true, rules[best].id
		}
		member[prefixKey(p)] = e.member
		out = append(out, e)
	}
	// A non-member whose nearest enclosing entry is no member (or which
	// has none) changes no lookup: leave it out.
	return slices.DeleteFunc(out, func(e peerEntry) bool {
		if e.member {
			return false
		}
		for bits := e.prefix.Bits() - 1; bits >= 0; bits-- {
			if m, ok := member[prefixKey(netip.PrefixFrom(e.prefix.Addr(), bits).Masked())]; ok {
				return !m
			}
		}
		return true
	})
}

// compileRule returns nil for a rule that can match no packet.
func compileRule(r Rule) (*compiledRule, error) {
	cr := &compiledRule{id: r.ID, anyPeer: r.AnyPeer, shared: r.Shared}
	var cidrs, except []netip.Prefix
	for _, p := range r.CIDRs {
		c, err := canonPrefix(p)
		if err != nil {
			return nil, fmt.Errorf("cidr: %w", err)
		}
		cidrs = append(cidrs, c)
	}
	for _, p := range r.Except {
		e, err := canonPrefix(p)
		if err != nil {
			return nil, fmt.Errorf("except: %w", err)
		}
		except = append(except, e)
	}
	ranges, anyPort, err := normalizePorts(r.Ports)
	if err != nil {
		return nil, err
	}
	cr.anyPort = anyPort
	if !anyPort {
		var b strings.Builder
		for _, pr := range ranges {
			fmt.Fprintf(&b, "%d:%d-%d,", pr.proto, pr.start, pr.end)
			cr.ports = append(cr.ports, splitRange(pr)...)
		}
		cr.portKey = b.String()
	}
	if cr.anyPeer && len(except) > 0 {
		// Every address minus Except.
		cr.anyPeer = false
		cidrs = []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
	}
	if cr.anyPeer {
		return cr, nil
	}
	// A CIDR inside an Except is removed whole; with the rest, the longest
	// prefix gives exactly "CIDRs minus Except" (prefixes nest or are
	// disjoint, and a CIDR longer than an Except that holds it is gone).
	for _, c := range cidrs {
		if slices.ContainsFunc(except, func(e netip.Prefix) bool { return e.Bits() <= c.Bits() && e.Contains(c.Addr()) }) {
			continue
		}
		cr.peers = append(cr.peers, peerEntry{prefix: c, member: true, id: r.ID})
	}
	if len(cr.peers) == 0 {
		return nil, nil
	}
	for _, e := range except {
		cr.peers = append(cr.peers, peerEntry{prefix: e, id: r.ID})
	}
	return cr, nil
}

// canonPrefix masks p; an IPv4-mapped IPv6 prefix becomes IPv4.
func canonPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid prefix", p.String())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// normalizePorts validates ports and merges them into sorted,
// non-overlapping ranges per protocol; anyPort when every protocol and
// port is allowed.
func normalizePorts(ports []PortRange) (ranges []portRange, anyPort bool, err error) {
	if len(ports) == 0 {
		return nil, true, nil
	}
	for _, p := range ports {
		switch p.Protocol {
		case ProtoAny:
			if p.Start != 0 || p.End != 0 {
				return nil, false, fmt.Errorf("port %d-%d without a protocol", p.Start, p.End)
			}
			return nil, true, nil
		case ProtoTCP, ProtoUDP, ProtoSCTP:
		default:
			return nil, false, fmt.Errorf("unknown protocol %d (TCP 6, UDP 17, SCTP 132 or 0 for any)", p.Protocol)
		}
		r := portRange{proto: p.Protocol, start: p.Start, end: p.End}
		switch {
		case p.Start == 0:
			r.end = 65535 // every port of the protocol
		case p.End == 0:
			r.end = p.Start
		case p.Start > p.End:
			return nil, false, fmt.Errorf("port range %d-%d: start after end", p.Start, p.End)
		}
		ranges = append(ranges, r)
	}
	slices.SortFunc(ranges, func(a, b portRange) int {
		if a.proto != b.proto {
			return int(a.proto) - int(b.proto)
		}
		return int(a.start) - int(b.start)
	})
	out := ranges[:1]
	for _, r := range ranges[1:] {
		last := &out[len(out)-1]
		if r.proto == last.proto && uint32(r.start) <= uint32(last.end)+1 {
			last.end = max(last.end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out, false, nil
}

// splitRange decomposes start..end into the fewest aligned power-of-two
// blocks, each one LPM prefix.
func splitRange(r portRange) []portEntry {
	var out []portEntry
	start, end := uint32(r.start), uint32(r.end)
	for start <= end {
		size := uint32(1)
		for size < 1<<16 && start%(size*2) == 0 && start+size*2-1 <= end {
			size *= 2
		}
		bits := 16
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		out = append(out, portEntry{proto: r.proto, port: uint16(start), bits: bits})
		start += size
	}
	return out
}
