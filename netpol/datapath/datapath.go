// Package datapath enforces NetworkPolicy with eBPF on pods' host veths.
//
// Two TCX programs run on each pod's host-side veth: on TCX ingress (what
// the pod sends: its egress policy, matched on the destination) and on TCX
// egress (what reaches the pod: its ingress policy, matched on the source).
// All state is keyed by the host veth's ifindex, lives in maps pinned under
// Config.PinDir and outlives the agent: programs keep enforcing while no
// agent runs, and a new agent picks the state up again.
//
// Usage, per pod, before its first packet:
//
//	dp, err := datapath.Open(datapath.Config{NodeIPs: nodeIPs, Logger: log})
//	...
//	defer dp.Close() // leaves programs, maps and links pinned
//	err = dp.Apply(ifindex, policy) // the whole policy, swapped in atomically
//	err = dp.Attach(ifindex)        // idempotent; upgrades the program in place
//	...
//	err = dp.Remove(ifindex) // pod gone: detach and forget
//
// A pod with programs attached but no state is denied (fail closed). See
// netpol/README.md for the map layout and the rule for established flows
// when a policy changes.
package datapath

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultPinDir holds the pinned maps and links when Config.PinDir is empty.
const DefaultPinDir = "/sys/fs/bpf/berth"

// DefaultConntrackSize is the LRU conntrack capacity when Config.ConntrackSize is 0.
const DefaultConntrackSize = 262144

// MaxRules is the most rules one direction of a pod may hold after rules
// with the same ports and no Except are merged into one.
const MaxRules = 65536

// ErrInvalidPolicy wraps every error Apply returns for bad input.
var ErrInvalidPolicy = errors.New("invalid policy")

// Config configures Open.
type Config struct {
	// PinDir holds maps and links; default DefaultPinDir. bpffs is
	// mounted at /sys/fs/bpf when it is not mounted there yet.
	PinDir string
	// NodeIPs are sources always allowed into pods (kubelet probes), as
	// Kubernetes requires; IPv4 and IPv6.
	NodeIPs []netip.Addr
	// ConntrackSize is the number of LRU conntrack entries; default
	// DefaultConntrackSize. Changing it needs the pinned map removed.
	ConntrackSize int
	Logger        *slog.Logger
}

// Datapath is the loaded BPF objects and the record of what each pod's
// state occupies in the maps. Its methods are safe for concurrent use.
type Datapath struct {
	log      *slog.Logger
	mapsDir  string
	linksDir string
	objs     netpolObjects
	// barrier is an array-of-maps whose update waits for running BPF
	// programs to finish (the kernel does a synchronize_rcu on it): Apply
	// uses it before deleting a replaced ruleset that a packet in flight
	// may still be reading.
	barrier *ebpf.Map
	inner   *ebpf.Map

	mu     sync.Mutex
	pods   map[uint32]*podRecord
	nextID uint32
	// epoch is the ruleset id of the last swap: the value the programs'
	// epoch map gets once an Apply's swaps are all in place.
	epoch uint32
	// legacyCT: Open found conntrack entries of a datapath without the
	// epoch (see migrate.go); CompleteUpgrade still has work.
	legacyCT bool
	// shared holds the peer sets pods share, by identity (see
	// compiledRule.share); ports the port sets, by their ports.
	shared    map[string]*peerSet
	ports     map[string]*portSet
	nPeerSets int
	stats     Stats
}

// Open loads the programs and opens the maps, reusing maps pinned by a
// previous run (which keeps every pod's state and conntrack), and drops
// entries no pod references any more.
func Open(cfg Config) (d *Datapath, err error) {
	if cfg.PinDir == "" {
		cfg.PinDir = DefaultPinDir
	}
	if cfg.ConntrackSize == 0 {
		cfg.ConntrackSize = DefaultConntrackSize
	}
	if cfg.ConntrackSize < 0 {
		return nil, fmt.Errorf("conntrack size %d: must be positive", cfg.ConntrackSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	d = &Datapath{
		log:      cfg.Logger.With("component", "netpol-datapath"),
		mapsDir:  filepath.Join(cfg.PinDir, "maps"),
		linksDir: filepath.Join(cfg.PinDir, "links"),
		pods:     map[uint32]*podRecord{},
		shared:   map[string]*peerSet{},
		ports:    map[string]*portSet{},
	}
	for _, dir := range []string{d.mapsDir, d.linksDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin dir %s: %w", dir, err)
		}
	}
	spec, err := loadNetpol()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	spec.Maps[netpolMapConntrack].MaxEntries = uint32(cfg.ConntrackSize)
	spec.Maps[netpolMapConntrack6].MaxEntries = uint32(cfg.ConntrackSize)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible cpus: %w", err)
	}
	// Each CPU owns its slots of the flow cache (see netpol.c).
	spec.Maps[netpolMapFlowCache].MaxEntries *= uint32(cpus)
	d.legacyCT = legacyConntrack(d.mapsDir)
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.mapsDir}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		// ErrMapIncompatible: a pinned map of another layout or size
		// (an upgrade that changed a map, or a new ConntrackSize).
		return nil, fmt.Errorf("load bpf objects (maps pinned in %s): %w", d.mapsDir, err)
	}
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	d.inner, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create barrier inner map: %w", err)
	}
	d.barrier, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1,
		InnerMap: &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}})
	if err != nil {
		return nil, fmt.Errorf("create barrier map: %w", err)
	}
	if err := d.setNodeIPs(cfg.NodeIPs); err != nil {
		return nil, err
	}
	if err := d.recover(); err != nil {
		return nil, err
	}
	if d.legacyCT {
		if err := d.rekeyConntrack(); err != nil {
			return nil, fmt.Errorf("upgrade conntrack: %w", err)
		}
	}
	return d, nil
}

// Close closes the Datapath's file descriptors. Programs, maps and links
// stay pinned and keep enforcing.
func (d *Datapath) Close() error {
	var errs []error
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close bpf objects: %w", err))
	}
	for _, m := range []*ebpf.Map{d.barrier, d.inner} {
		if m != nil {
			if err := m.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close barrier map: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when it is not there, then
// checks that dir (created if needed) is on bpffs: pins anywhere else fail.
func ensureBPFFS(dir string) error {
	const root = "/sys/fs/bpf"
	if !isBPFFS(root) {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", root, err)
		}
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", root, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("pin dir %s is not on bpffs", dir)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}

// setNodeIPs makes node_ips hold exactly ips.
func (d *Datapath) setNodeIPs(ips []netip.Addr) error {
	want := map[netpolAddr]bool{}
	for _, ip := range ips {
		if ip.IsValid() {
			want[addrKey(ip.Unmap())] = true
		}
	}
	var stale []netpolAddr
	var k netpolAddr
	var v uint32
	it := d.objs.NodeIps.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list node ips: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.NodeIps.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete node ip: %w", err)
		}
	}
	for k := range want {
		if err := d.objs.NodeIps.Put(k, uint32(1)); err != nil {
			return fmt.Errorf("add node ip: %w", err)
		}
	}
	return nil
}

// recover rebuilds the record of each pod's ruleset and sets from the
// pinned maps, deletes entries no pod references (an agent that died
// mid-Apply) and sets the next id above every id still in the maps, so new
// rulesets and sets never collide with old ones. Recovered sets are not
// shared with new Applies (their identity is not in the maps): they are
// deleted once the last pod using them has a new ruleset.
func (d *Datapath) recover() error {
	var maxID uint32
	seen := func(id uint32) {
		maxID = max(maxID, id)
	}
	byRuleset := map[uint32]*podRecord{}
	var ifindex uint32
	var st netpolPodState
	it := d.objs.PodStates.Iterate()
	for it.Next(&ifindex, &st) {
		seen(st.Ruleset)
		rec := &podRecord{ruleset: st.Ruleset, state: st}
		d.pods[ifindex] = rec
		byRuleset[st.Ruleset] = rec
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list pod states: %w", err)
	}

	peers := map[uint32]*peerSet{}
	ports := map[uint32]*portSet{}
	var staleRules []netpolRuleKey
	var rk netpolRuleKey
	var r netpolRule
	it = d.objs.Rules.Iterate()
	for it.Next(&rk, &r) {
		seen(rk.Ruleset)
		seen(r.PeerSet)
		seen(r.PortSet)
		rec, ok := byRuleset[rk.Ruleset]
		if !ok || rk.Dir > 1 || rk.Index >= rec.state.N_rules[rk.Dir] {
			staleRules = append(staleRules, rk)
			continue
		}
		re := ruleEntry{dir: rk.Dir, index: rk.Index, val: r}
		re.val.PeerSet, re.val.PortSet = 0, 0
		if r.Flags&ruleAnyPeer == 0 {
			if peers[r.PeerSet] == nil {
				peers[r.PeerSet] = &peerSet{id: r.PeerSet}
			}
			re.peer = peers[r.PeerSet]
			re.peer.refs++
		}
		if r.Flags&ruleAnyPort == 0 {
			if ports[r.PortSet] == nil {
				ports[r.PortSet] = &portSet{id: r.PortSet}
			}
			re.port = ports[r.PortSet]
			re.port.refs++
		}
		rec.rules = append(rec.rules, re)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, rec := range d.pods {
		slices.SortFunc(rec.rules, func(a, b ruleEntry) int {
			return cmp.Or(cmp.Compare(a.dir, b.dir), cmp.Compare(a.index, b.index))
		})
	}

	var stalePeers []netpolPeerKey
	var pk netpolPeerKey
	var pv netpolPeerVal
	it = d.objs.PeerSets.Iterate()
	for it.Next(&pk, &pv) {
		id := pk.Set &^ setV6
		seen(id)
		if ps := peers[id]; ps != nil {
			k := pk
			k.Set &= setV6
			ps.keys = append(ps.keys, k)
		} else {
			stalePeers = append(stalePeers, pk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list peer sets: %w", err)
	}
	d.nPeerSets = len(peers)
	var stalePorts []netpolPortKey
	var ptk netpolPortKey
	var ptv uint32
	it = d.objs.PortSets.Iterate()
	for it.Next(&ptk, &ptv) {
		seen(ptk.Set)
		if pt := ports[ptk.Set]; pt != nil {
			pt.keys = append(pt.keys, ptk)
		} else {
			stalePorts = append(stalePorts, ptk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list port sets: %w", err)
	}
	// Conntrack entries carry epochs up to the pinned one: a new epoch
	// must differ from all of them, or flows judged under an older state
	// would pass unjudged.
	var ep uint32
	if err := d.objs.Epoch.Lookup(uint32(0), &ep); err != nil {
		return fmt.Errorf("read policy epoch: %w", err)
	}
	seen(ep)
	d.epoch = ep
	d.nextID = maxID + 1
	if d.nextID&setV6 != 0 {
		d.nextID = 1
	}
	if n := len(staleRules) + len(stalePeers) + len(stalePorts); n > 0 {
		d.log.Info("removing unreferenced policy entries", "entries", n)
	}
	if err := errors.Join(
		deleteAll(d.objs.Rules, staleRules),
		deleteAll(d.objs.PeerSets, stalePeers),
		deleteAll(d.objs.PortSets, stalePorts),
	); err != nil {
		return fmt.Errorf("remove unreferenced entries: %w", err)
	}
	d.log.Info("datapath opened", "pods", len(d.pods), "nextID", d.nextID)
	return nil
}

// addrKey is an address as the BPF side sees it: 16 bytes in network
// order in memory whatever the host's, IPv4 as IPv4-mapped IPv6.
func addrKey(a netip.Addr) netpolAddr {
	b := a.As16()
	var k netpolAddr
	for i := range k.A {
		k.A[i] = nativeEndian.Uint32(b[i*4:])
	}
	return k
}

func keyAddr(k netpolAddr) netip.Addr {
	var b [16]byte
	for i, w := range k.A {
		nativeEndian.PutUint32(b[i*4:], w)
	}
	return netip.AddrFrom16(b).Unmap()
}

func portKey(p uint16) uint16 {
	return nativeEndian.Uint16([]byte{byte(p >> 8), byte(p)})
}

func keyPort(k uint16) uint16 {
	var b [2]byte
	nativeEndian.PutUint16(b[:], k)
	return uint16(b[0])<<8 | uint16(b[1])
}
