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

	rec := &podRecord{ruleset: d.allocID()}
	defer func() {
		if err != nil {
			if derr := d.deleteRecord(rec); derr != nil {
				d.log.Warn("roll back partial policy", "ifindex", ifindex, "err", derr)
			}
		}
	}()
	state := netpolPodState{Ruleset: rec.ruleset}
	var ruleKeys []netpolRuleKey
	var ruleVals []netpolRule
	var peerKeys []netpolPeerKey
	var peerVals []netpolPeerVal
	var portKeys []netpolPortKey
	for dir := range 2 {
		if c.isolated[dir] {
			state.Flags |= [2]uint32{podIsolatedIngress, podIsolatedEgress}[dir]
		}
		state.N_rules[dir] = uint32(len(c.rules[dir]))
		portSets := map[string]uint32{}
		for i, cr := range c.rules[dir] {
			v := netpolRule{Id: cr.id}
			if cr.anyPeer {
				v.Flags |= ruleAnyPeer
			} else {
				v.PeerSet = d.allocID()
				for _, pe := range cr.peers {
					k := netpolPeerKey{
						Prefixlen: uint32(peerPrefixBase + 96 + pe.prefix.Bits()), // IPv4-mapped
						Set:       v.PeerSet,
						Addr:      addrKey(pe.prefix.Addr()),
					}
					if pe.prefix.Addr().Is6() {
						k.Prefixlen, k.Set = uint32(peerPrefixBase+pe.prefix.Bits()), v.PeerSet|setV6
					}
					peerKeys = append(peerKeys, k)
					pv := netpolPeerVal{Id: pe.id}
					if pe.member {
						pv.Member = 1
					}
					peerVals = append(peerVals, pv)
				}
			}
			if cr.anyPort {
				v.Flags |= ruleAnyPort
			} else if id, ok := portSets[cr.portKey]; ok {
				v.PortSet = id
			} else {
				v.PortSet = d.allocID()
				portSets[cr.portKey] = v.PortSet
				for _, pe := range cr.ports {
					portKeys = append(portKeys, netpolPortKey{
						Prefixlen: uint32(portPrefixBase + pe.bits),
						Set:       v.PortSet,
						Proto:     pe.proto,
						Port:      portKey(pe.port),
					})
				}
			}
			ruleKeys = append(ruleKeys, netpolRuleKey{Ruleset: rec.ruleset, Dir: uint32(dir), Index: uint32(i)})
			ruleVals = append(ruleVals, v)
		}
	}

	// Sets first, then the rules that name them, then the state that
	// names the rules: nothing is reachable before it is complete.
	rec.peerKeys = peerKeys
	if err := putAll(d.objs.PeerSets, peerKeys, peerVals); err != nil {
		return fmt.Errorf("write peer sets of ifindex %d: %w", ifindex, err)
	}
	rec.portKeys = portKeys
	portVals := make([]uint32, len(portKeys))
	for i := range portVals {
		portVals[i] = 1
	}
	if err := putAll(d.objs.PortSets, portKeys, portVals); err != nil {
		return fmt.Errorf("write port sets of ifindex %d: %w", ifindex, err)
	}
	rec.rules = ruleKeys
	if err := putAll(d.objs.Rules, ruleKeys, ruleVals); err != nil {
		return fmt.Errorf("write rules of ifindex %d: %w", ifindex, err)
	}
	if err := d.objs.PodStates.Put(uint32(ifindex), state); err != nil {
		return fmt.Errorf("swap policy of ifindex %d: %w", ifindex, err)
	}
	old := d.pods[uint32(ifindex)]
	d.pods[uint32(ifindex)] = rec
	if old != nil {
		if err := d.retire(old); err != nil {
			// The new policy is in force; leftovers go at the next Open.
			d.log.Warn("delete replaced policy", "ifindex", ifindex, "err", err)
		}
	}
	d.log.Debug("policy applied", "ifindex", ifindex, "ruleset", rec.ruleset,
		"ingressRules", state.N_rules[dirIngress], "egressRules", state.N_rules[dirEgress],
		"peerEntries", len(peerKeys), "portEntries", len(portKeys))
	return nil
}

// retire deletes a ruleset nothing points to any more, once no running
// program can still be reading it.
func (d *Datapath) retire(rec *podRecord) error {
	if err := d.waitPrograms(); err != nil {
		return err
	}
	return d.deleteRecord(rec)
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

// deleteRecord deletes the state's rules, then the sets they named.
func (d *Datapath) deleteRecord(rec *podRecord) error {
	return errors.Join(
		deleteAll(d.objs.Rules, rec.rules),
		deleteAll(d.objs.PeerSets, rec.peerKeys),
		deleteAll(d.objs.PortSets, rec.portKeys),
	)
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
		if err := d.retire(rec); err != nil {
			return fmt.Errorf("delete policy of ifindex %d: %w", ifindex, err)
		}
		delete(d.pods, uint32(ifindex))
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
