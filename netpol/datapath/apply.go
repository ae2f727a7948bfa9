package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

var nativeEndian = binary.NativeEndian

// Flags shared with netpol/bpf/netpol.c.
const (
	podIsolatedIngress = 1 << 0
	podIsolatedEgress  = 1 << 1
	ruleAnyPeer        = 1 << 0
	ruleAnyPort        = 1 << 1
	ctOpenerSwapped    = 1 << 0

	dirIngress = 0
	dirEgress  = 1
)

// LPM prefix lengths: the set id (32 bits) always matches, then the
// address (IPv4 as IPv4-mapped IPv6: 96 more bits); for ports the id, the
// protocol and a zero pad byte, then the port.
const (
	peerPrefixBase = 32
	// setV6 marks the peer set ids of IPv6 prefixes (SET_V6 in the C).
	setV6          = 0x80000000
	portPrefixBase = 48
)

// Apply makes p the whole policy of the pod whose host veth is ifindex.
// The new rules are written under a new ruleset id, the pod's state entry
// is swapped to it in one map update, and only then are the old rules
// deleted, so a packet sees either the old policy or the new one. Bad
// input returns an error wrapping ErrInvalidPolicy and changes nothing.
//
// Peer sets of shared rules (Rule.Shared) are shared with every pod whose
// merged rule has the same identity; new content for such a set is written
// into it for all of them (see peerSetFor), and the pods that lose
// members get a new generation, so their established flows are judged
// again.
func (d *Datapath) Apply(ifindex int, p Policy) (err error) {
	if ifindex <= 0 || ifindex > 1<<31-1 {
		return fmt.Errorf("%w: ifindex %d", ErrInvalidPolicy, ifindex)
	}
	c, err := compile(p)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	idx := uint32(ifindex)
	epochBefore := d.epoch
	rec := &podRecord{}
	for dir := range 2 {
		if c.isolated[dir] {
			rec.state.Flags |= [2]uint32{podIsolatedIngress, podIsolatedEgress}[dir]
		}
		rec.state.N_rules[dir] = uint32(len(c.rules[dir]))
	}
	tx := &setTx{bump: map[*peerSet]bool{}, moved: map[*peerSet]*peerSet{}}
	var errs []error
	// Sets first, then the rules that name them, then the state that
	// names the rules: nothing is reachable before it is complete.
	setsErr := func() error {
		for dir := range 2 {
			for i, cr := range c.rules[dir] {
				rec.rules = append(rec.rules, ruleEntry{dir: uint32(dir), index: uint32(i), val: netpolRule{Id: cr.id}})
				re := &rec.rules[len(rec.rules)-1]
				if cr.anyPeer {
					re.val.Flags |= ruleAnyPeer
				} else {
					ps, err := d.peerSetFor(&cr, tx)
					if err != nil {
						return fmt.Errorf("write peer sets of ifindex %d: %w", ifindex, err)
					}
					ps.refs++
					re.peer = ps
				}
				if cr.anyPort {
					re.val.Flags |= ruleAnyPort
				} else {
					pt, err := d.portSetFor(&cr)
					if err != nil {
						return fmt.Errorf("write port sets of ifindex %d: %w", ifindex, err)
					}
					pt.refs++
					re.port = pt
				}
			}
		}
		return nil
	}()
	old := d.pods[idx]
	var retired []*podRecord
	switch {
	case setsErr != nil:
		errs = append(errs, setsErr)
		d.release(rec)
	case old != nil && old.sameAs(rec) && !old.uses(tx.bump):
		// Nothing of this pod's ruleset changes: no swap.
		d.release(rec)
	default:
		rec.ruleset = d.allocID()
		if err := d.install(idx, rec); err != nil {
			errs = append(errs, err)
			d.release(rec)
			break
		}
		if old != nil {
			retired = append(retired, old)
		}
	}
	// Other pods using a set whose content changed: a new generation
	// where members left, the new set where it was rebuilt.
	if len(tx.bump) > 0 || len(tx.moved) > 0 {
		for other, orec := range d.pods {
			if orec == rec || !(orec.uses(tx.bump) || orec.usesMoved(tx.moved)) {
				continue
			}
			nrec := orec.renewed(tx.moved)
			nrec.ruleset = d.allocID()
			if err := d.install(other, nrec); err != nil {
				errs = append(errs, fmt.Errorf("new generation of ifindex %d: %w", other, err))
				d.release(nrec)
				continue
			}
			retired = append(retired, orec)
		}
	}
	if d.epoch != epochBefore {
		// After the swaps: the programs pass an established flow
		// unjudged only while its entry carries the current epoch.
		if err := d.objs.Epoch.Put(uint32(0), d.epoch); err != nil {
			errs = append(errs, fmt.Errorf("raise policy epoch: %w", err))
		}
	}
	for _, ps := range tx.hold {
		if ps.refs--; ps.refs == 0 {
			d.freePeerSet(ps) // no pod moved to it
		}
	}
	if len(retired) > 0 {
		if err := d.waitPrograms(); err != nil {
			// The new rulesets are in force; leftovers go at the next Open.
			d.log.Warn("delete replaced policy", "ifindex", ifindex, "err", err)
		} else {
			for _, r := range retired {
				if err := d.deleteRules(r); err != nil {
					d.log.Warn("delete replaced policy", "ifindex", ifindex, "err", err)
				}
				d.release(r)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.log.Debug("policy applied", "ifindex", ifindex, "ruleset", d.pods[idx].ruleset,
		"ingressRules", rec.state.N_rules[dirIngress], "egressRules", rec.state.N_rules[dirEgress],
		"newGenerations", len(retired))
	return nil
}

// install writes rec's rules under rec.ruleset and swaps the pod's state
// to them; on error nothing of rec is reachable and its rules are gone.
func (d *Datapath) install(ifindex uint32, rec *podRecord) error {
	rec.state.Ruleset = rec.ruleset
	keys := make([]netpolRuleKey, len(rec.rules))
	vals := make([]netpolRule, len(rec.rules))
	for i, re := range rec.rules {
		keys[i] = netpolRuleKey{Ruleset: rec.ruleset, Dir: re.dir, Index: re.index}
		vals[i] = re.value()
	}
	if err := putAll(d.objs.Rules, keys, vals); err != nil {
		_ = deleteAll(d.objs.Rules, keys)
		return fmt.Errorf("write rules of ifindex %d: %w", ifindex, err)
	}
	if err := d.objs.PodStates.Put(ifindex, rec.state); err != nil {
		_ = deleteAll(d.objs.Rules, keys)
		return fmt.Errorf("swap policy of ifindex %d: %w", ifindex, err)
	}
	d.stats.RulesetSwaps++
	d.epoch = rec.ruleset
	d.pods[ifindex] = rec
	return nil
}

// waitPrograms returns once every BPF program running at the time of the
// call has finished: the kernel waits for an RCU grace period on each
// update of an array-of-maps.
func (d *Datapath) waitPrograms() error {
	if err := d.barrier.Put(uint32(0), d.inner); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}

func (d *Datapath) allocID() uint32 {
	id := d.nextID
	d.nextID++
	if d.nextID&setV6 != 0 {
		// 2^31 Applies later: the top bit marks IPv6 sets. Wrap; 0 is
		// never an id.
		d.nextID = 1
	}
	return id
}

// putAll writes keys[i]=vals[i] with one batch syscall where the kernel
// has batch ops for the map type, one syscall per key otherwise.
func putAll[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// deleteAll deletes keys; absent keys are fine. A batch delete stops at
// the first absent key; the rest then go one by one.
func deleteAll[K any](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	n, err := m.BatchDelete(keys, nil)
	if err == nil {
		return nil
	}
	var errs []error
	for i := range keys[n:] {
		if err := m.Delete(keys[n+i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteRules deletes the rules of rec's ruleset.
func (d *Datapath) deleteRules(rec *podRecord) error {
	keys := make([]netpolRuleKey, len(rec.rules))
	for i, re := range rec.rules {
		keys[i] = netpolRuleKey{Ruleset: rec.ruleset, Dir: re.dir, Index: re.index}
	}
	return deleteAll(d.objs.Rules, keys)
}

// Remove detaches the programs from ifindex and deletes the pod's state,
// rules, sets and conntrack entries. Removing an unknown ifindex is not an
// error.
func (d *Datapath) Remove(ifindex int) error {
	if err := d.detach(ifindex); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.objs.PodStates.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete state of ifindex %d: %w", ifindex, err)
	}
	if rec := d.pods[uint32(ifindex)]; rec != nil {
		if err := d.waitPrograms(); err != nil {
			return fmt.Errorf("delete policy of ifindex %d: %w", ifindex, err)
		}
		delete(d.pods, uint32(ifindex))
		err := d.deleteRules(rec)
		d.release(rec)
		if err != nil {
			return fmt.Errorf("delete policy of ifindex %d: %w", ifindex, err)
		}
	}
	if err := d.deleteConntrack(uint32(ifindex)); err != nil {
		return fmt.Errorf("delete conntrack of ifindex %d: %w", ifindex, err)
	}
	return nil
}

func (d *Datapath) deleteConntrack(ifindex uint32) error {
	return errors.Join(
		deleteOwned(d.objs.Conntrack, func(k netpolCt4Key) bool { return k.Ifindex == ifindex }),
		deleteOwned(d.objs.Conntrack6, func(k netpolCtKey) bool { return k.Ifindex == ifindex }),
	)
}

// deleteOwned deletes the entries of m whose key mine selects.
func deleteOwned[K any](m *ebpf.Map, mine func(K) bool) error {
	var stale []K
	var k K
	var v netpolCtVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		if mine(k) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	return deleteAll(m, stale)
}
