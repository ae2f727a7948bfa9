package datapath

import (
	"cmp"
	"slices"
)

// peerSet is one peer set in the peer_sets map. Its keys are kept with the
// set id cleared (only the IPv6 bit), so the same content can be written
// under another id.
type peerSet struct {
	id uint32
	// share is the identity under which d.shared holds the set; "" for a
	// set of one pod, a recovered set or one no longer shared.
	share string
	// pure: every entry is a member (no Except), so content can change in
	// place one address at a time.
	pure bool
	keys []netpolPeerKey // sorted by lessPeerKey, Set = family bit
	vals []netpolPeerVal // nil for a private set (never compared)
	refs int             // rules of installed or pending rulesets naming it
}

// portSet is one port set in port_sets; shared by every rule with the same
// ports (its content is a function of the key).
type portSet struct {
	id   uint32
	key  string // "" for a recovered set
	keys []netpolPortKey
	refs int
}

// ruleEntry is one rule of a pod's ruleset.
type ruleEntry struct {
	dir, index uint32
	val        netpolRule // PeerSet and PortSet filled in from peer and port
	peer       *peerSet   // nil: any peer
	port       *portSet   // nil: any port
}

func (re ruleEntry) value() netpolRule {
	v := re.val
	if re.peer != nil {
		v.PeerSet = re.peer.id
	}
	if re.port != nil {
		v.PortSet = re.port.id
	}
	return v
}

// podRecord is a pod's ruleset in the maps.
type podRecord struct {
	ruleset uint32 // also the pod's policy generation
	state   netpolPodState
	rules   []ruleEntry
}

// sameAs: rec would install exactly the ruleset o has (same sets, ports,
// flags and isolation).
func (o *podRecord) sameAs(rec *podRecord) bool {
	if o.state.Flags != rec.state.Flags || o.state.N_rules != rec.state.N_rules || len(o.rules) != len(rec.rules) {
		return false
	}
	for i := range o.rules {
		if o.rules[i] != rec.rules[i] {
			return false
		}
	}
	return true
}

func (o *podRecord) uses(sets map[*peerSet]bool) bool {
	if len(sets) == 0 {
		return false
	}
	for _, re := range o.rules {
		if re.peer != nil && sets[re.peer] {
			return true
		}
	}
	return false
}

func (o *podRecord) usesMoved(moved map[*peerSet]*peerSet) bool {
	for _, re := range o.rules {
		if re.peer != nil && moved[re.peer] != nil {
			return true
		}
	}
	return false
}

// renewed is a copy of o naming the new sets of moved ones; it holds a
// reference on each of its sets. The caller assigns the ruleset id.
func (o *podRecord) renewed(moved map[*peerSet]*peerSet) *podRecord {
	n := &podRecord{state: o.state, rules: slices.Clone(o.rules)}
	for i := range n.rules {
		re := &n.rules[i]
		if re.peer != nil {
			if m := moved[re.peer]; m != nil {
				re.peer = m
			}
			re.peer.refs++
		}
		if re.port != nil {
			re.port.refs++
		}
	}
	return n
}

// setTx is what one Apply did to shared sets that other pods use.
type setTx struct {
	// bump: sets that lost members in place; their pods need a new
	// generation.
	bump map[*peerSet]bool
	// moved: sets whose new content was built under a new id (old ->
	// new); their pods move to the new one.
	moved map[*peerSet]*peerSet
	// hold: references the transaction keeps until its end.
	hold []*peerSet
}

// Stats counts map writes since Open, for tests and benchmarks.
type Stats struct {
	PeerWrites   uint64 // peer_sets entries written
	PeerDeletes  uint64 // peer_sets entries deleted
	RulesetSwaps uint64 // pod_states entries swapped to a new ruleset
	SharedSets   int    // peer sets shared now
	PeerSets     int    // peer sets in the maps now
}

// Stats returns the write counters and set counts.
func (d *Datapath) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.SharedSets = len(d.shared)
	s.PeerSets = d.nPeerSets
	return s
}

func lessPeerKey(a, b netpolPeerKey) int {
	if c := cmp.Compare(a.Set, b.Set); c != 0 {
		return c
	}
	for i := range a.Addr.A {
		if c := cmp.Compare(a.Addr.A[i], b.Addr.A[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.Prefixlen, b.Prefixlen)
}

// peerContent is cr's peer set content, sorted, with the set id cleared.
func peerContent(cr *compiledRule) (keys []netpolPeerKey, vals []netpolPeerVal, pure bool) {
	type kv struct {
		k netpolPeerKey
		v netpolPeerVal
	}
	ents := make([]kv, 0, len(cr.peers))
	pure = true
	for _, pe := range cr.peers {
		k := netpolPeerKey{
			Prefixlen: uint32(peerPrefixBase + 96 + pe.prefix.Bits()), // IPv4-mapped
			Addr:      addrKey(pe.prefix.Addr()),
		}
		if pe.prefix.Addr().Is6() {
			k.Prefixlen, k.Set = uint32(peerPrefixBase+pe.prefix.Bits()), setV6
		}
		v := netpolPeerVal{Id: pe.id}
		if pe.member {
			v.Member = 1
		} else {
			pure = false
		}
		ents = append(ents, kv{k, v})
	}
	slices.SortFunc(ents, func(a, b kv) int { return lessPeerKey(a.k, b.k) })
	keys = make([]netpolPeerKey, len(ents))
	vals = make([]netpolPeerVal, len(ents))
	for i, e := range ents {
		keys[i], vals[i] = e.k, e.v
	}
	return keys, vals, pure
}

// withID returns keys with the set id id.
func withID(id uint32, keys []netpolPeerKey) []netpolPeerKey {
	out := make([]netpolPeerKey, len(keys))
	for i, k := range keys {
		k.Set |= id
		out[i] = k
	}
	return out
}

// newPeerSet writes a set under a new id.
func (d *Datapath) newPeerSet(share string, keys []netpolPeerKey, vals []netpolPeerVal, pure bool) (*peerSet, error) {
	ps := &peerSet{id: d.allocID(), share: share, pure: pure, keys: keys, vals: vals}
	full := withID(ps.id, keys)
	if err := putAll(d.objs.PeerSets, full, vals); err != nil {
		_ = deleteAll(d.objs.PeerSets, full)
		return nil, err
	}
	d.stats.PeerWrites += uint64(len(keys))
	d.nPeerSets++
	if share == "" {
		ps.vals = nil
	}
	return ps, nil
}

// peerSetFor returns the peer set of cr, written and complete; the caller
// takes a reference.
//
// A private set (cr.share == "") is new. A shared one is looked up by its
// identity; when its content differs from cr's:
//   - both old and new content are members only: the difference is written
//     into the same set, additions and changes first, then removals. Each
//     address's verdict depends on its own membership alone, so a packet
//     sees it either old or new; sets that lost members go into tx.bump.
//   - otherwise (an Except on either side, where an entry's removal or
//     addition changes the verdict of other addresses), the new content is
//     written under a new id and the pods using the old set move to it
//     (tx.moved). A set with non-members is never changed in place.
func (d *Datapath) peerSetFor(cr *compiledRule, tx *setTx) (*peerSet, error) {
	keys, vals, pure := peerContent(cr)
	if cr.share == "" {
		return d.newPeerSet("", keys, vals, pure)
	}
	ps := d.shared[cr.share]
	if ps == nil {
		ps, err := d.newPeerSet(cr.share, keys, vals, pure)
		if err != nil {
			return nil, err
		}
		d.shared[cr.share] = ps
		return ps, nil
	}
	if slices.Equal(ps.keys, keys) && slices.Equal(ps.vals, vals) {
		return ps, nil
	}
	if ps.pure && pure {
		return ps, d.updateInPlace(ps, keys, vals, tx)
	}
	nps, err := d.newPeerSet(cr.share, keys, vals, pure)
	if err != nil {
		return nil, err
	}
	// The old set stays, unshared, until the last pod has left it.
	ps.share = ""
	d.shared[cr.share] = nps
	for o, n := range tx.moved {
		if n == ps {
			tx.moved[o] = nps // changed twice in one Apply
		}
	}
	if ps.refs > 0 {
		tx.moved[ps] = nps
		nps.refs++
		tx.hold = append(tx.hold, nps)
	} else {
		d.freePeerSet(ps)
	}
	return nps, nil
}

// updateInPlace writes the difference from ps's content to keys/vals into
// ps (all members on both sides).
func (d *Datapath) updateInPlace(ps *peerSet, keys []netpolPeerKey, vals []netpolPeerVal, tx *setTx) error {
	var putK, delK []netpolPeerKey
	var putV []netpolPeerVal
	i, j := 0, 0
	for i < len(ps.keys) || j < len(keys) {
		switch {
		case j == len(keys) || (i < len(ps.keys) && lessPeerKey(ps.keys[i], keys[j]) < 0):
			delK = append(delK, ps.keys[i])
			i++
		case i == len(ps.keys) || lessPeerKey(ps.keys[i], keys[j]) > 0:
			putK, putV = append(putK, keys[j]), append(putV, vals[j])
			j++
		default:
			if ps.vals[i] != vals[j] {
				putK, putV = append(putK, keys[j]), append(putV, vals[j])
			}
			i++
			j++
		}
	}
	fail := func(err error) error {
		// The map holds part of the change: each address old or new. Keep
		// every key that may be present, stop sharing the set (its
		// content is no longer known exactly) and judge its pods' flows
		// again.
		all := append(slices.Clone(ps.keys), putK...)
		slices.SortFunc(all, lessPeerKey)
		ps.keys = slices.Compact(all)
		ps.vals = nil
		if d.shared[ps.share] == ps {
			delete(d.shared, ps.share)
		}
		ps.share = ""
		tx.bump[ps] = true
		return err
	}
	if err := putAll(d.objs.PeerSets, withID(ps.id, putK), putV); err != nil {
		return fail(err)
	}
	d.stats.PeerWrites += uint64(len(putK))
	if err := deleteAll(d.objs.PeerSets, withID(ps.id, delK)); err != nil {
		return fail(err)
	}
	d.stats.PeerDeletes += uint64(len(delK))
	ps.keys, ps.vals = keys, vals
	if len(delK) > 0 {
		tx.bump[ps] = true
	}
	return nil
}

// freePeerSet deletes an unreferenced set's entries.
func (d *Datapath) freePeerSet(ps *peerSet) {
	if ps.share != "" && d.shared[ps.share] == ps {
		delete(d.shared, ps.share)
	}
	if err := deleteAll(d.objs.PeerSets, withID(ps.id, ps.keys)); err != nil {
		d.log.Warn("delete peer set", "set", ps.id, "err", err)
	}
	d.stats.PeerDeletes += uint64(len(ps.keys))
	d.nPeerSets--
}

// portSetFor returns the port set of cr's ports, shared by every rule with
// the same ports; the caller takes a reference.
func (d *Datapath) portSetFor(cr *compiledRule) (*portSet, error) {
	if pt := d.ports[cr.portKey]; pt != nil {
		return pt, nil
	}
	pt := &portSet{id: d.allocID(), key: cr.portKey}
	for _, pe := range cr.ports {
		pt.keys = append(pt.keys, netpolPortKey{
			Prefixlen: uint32(portPrefixBase + pe.bits),
			Set:       pt.id,
			Proto:     pe.proto,
			Port:      portKey(pe.port),
		})
	}
	vals := make([]uint32, len(pt.keys))
	for i := range vals {
		vals[i] = 1
	}
	if err := putAll(d.objs.PortSets, pt.keys, vals); err != nil {
		_ = deleteAll(d.objs.PortSets, pt.keys)
		return nil, err
	}
	d.ports[cr.portKey] = pt
	return pt, nil
}

// release drops rec's references and deletes the sets nobody names any
// more. Call it only once no installed ruleset and no running program can
// read rec's rules.
func (d *Datapath) release(rec *podRecord) {
	for _, re := range rec.rules {
		if ps := re.peer; ps != nil {
			if ps.refs--; ps.refs == 0 {
				d.freePeerSet(ps)
			}
		}
		if pt := re.port; pt != nil {
			if pt.refs--; pt.refs == 0 {
				if pt.key != "" && d.ports[pt.key] == pt {
					delete(d.ports, pt.key)
				}
				if err := deleteAll(d.objs.PortSets, pt.keys); err != nil {
					d.log.Warn("delete port set", "set", pt.id, "err", err)
				}
			}
		}
	}
}
