package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Conntrack keys are canonical (the lower endpoint first, ct_val.flags
// saying which way the opener sent) since the datapath gained its policy
// epoch. Maps pinned by an older agent hold keys in the opener's order:
// an upgrade rewrites them, so established flows keep passing. Programs
// of the old agent run until each pod is attached again and may add
// old-order entries meanwhile, so the rewrite runs at Open and once more
// from CompleteUpgrade, after the agent has re-attached every pod.

// legacyConntrack reports whether the pinned maps predate the epoch map:
// conntrack pinned, epoch not (checked before loading, which pins it).
func legacyConntrack(mapsDir string) bool {
	_, errCT := os.Stat(filepath.Join(mapsDir, "conntrack"))
	_, errEpoch := os.Stat(filepath.Join(mapsDir, "epoch"))
	return errCT == nil && errors.Is(errEpoch, os.ErrNotExist)
}

// canonical4 orders an IPv4 key's endpoints as the programs do (raw
// network-order words, then ports) and reports whether it swapped them.
func canonical4(k netpolCt4Key) (netpolCt4Key, bool) {
	if k.Saddr > k.Daddr || (k.Saddr == k.Daddr && k.Sport > k.Dport) {
		k.Saddr, k.Daddr, k.Sport, k.Dport = k.Daddr, k.Saddr, k.Dport, k.Sport
		return k, true
	}
	return k, false
}

// canonical6 is canonical4 for the IPv6 map.
func canonical6(k netpolCtKey) (netpolCtKey, bool) {
	gt := k.Sport > k.Dport
	for i := range 4 {
		if k.Saddr.A[i] != k.Daddr.A[i] {
			gt = k.Saddr.A[i] > k.Daddr.A[i]
			break
		}
	}
	if gt {
		k.Saddr, k.Daddr, k.Sport, k.Dport = k.Daddr, k.Saddr, k.Dport, k.Sport
		return k, true
	}
	return k, false
}

// rekey moves every entry of m whose key is not canonical to its
// canonical key, marking the opener's order; an entry already at the
// canonical key (made since by a new program) wins. Returns how many
// entries moved.
func rekey[K comparable](m *ebpf.Map, canon func(K) (K, bool)) (int, error) {
	type move struct {
		from, to K
		val      netpolCtVal
	}
	var moves []move
	var k K
	var v netpolCtVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		if to, swapped := canon(k); swapped {
			v.Flags |= ctOpenerSwapped
			moves = append(moves, move{from: k, to: to, val: v})
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("list conntrack: %w", err)
	}
	for _, mv := range moves {
		if err := m.Update(mv.to, mv.val, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return 0, fmt.Errorf("write canonical conntrack entry: %w", err)
		}
		if err := m.Delete(mv.from); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("delete old-order conntrack entry: %w", err)
		}
	}
	return len(moves), nil
}

// rekeyConntrack rewrites both families' old-order entries.
func (d *Datapath) rekeyConntrack() error {
	n4, err := rekey(d.objs.Conntrack, canonical4)
	if err != nil {
		return err
	}
	n6, err := rekey(d.objs.Conntrack6, canonical6)
	if err != nil {
		return err
	}
	d.log.Info("conntrack entries of the previous datapath rewritten", "ipv4", n4, "ipv6", n6)
	return nil
}

// CompleteUpgrade finishes an upgrade from a datapath without the policy
// epoch: once every pod runs the new programs it rewrites the entries the
// old ones added since Open. A no-op otherwise; call it after re-attaching
// the pods found at start.
func (d *Datapath) CompleteUpgrade() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.legacyCT {
		return nil
	}
	if err := d.rekeyConntrack(); err != nil {
		return fmt.Errorf("complete upgrade: %w", err)
	}
	d.legacyCT = false
	return nil
}
