// Package podnet wires a pod into the node's network the way the Amazon VPC
// CNI does: a veth pair whose pod end is eth0 with the pod's /32, a default
// route through 169.254.1.1 with a permanent neighbour entry for it, a host
// /32 route to the pod, the rule "to <pod> lookup main" (512) and, for an
// address on a secondary ENI, "from <pod> lookup <ENI table>" (1536).
//
// berth-ipamd does this work for berth-cni's ADD, CHECK, DEL and GC: it is
// warm, so the work costs the pod no process start-up, and it runs under
// the attachment's lock. berth-cni itself only tears the host side down
// when no ipamd is listening (cni-plugin/internal/rtnl, which does what
// TeardownHost does without this package's netlink library).
package podnet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/podroute"
)

// Rule priorities, the main table and the pod gateway of the Amazon VPC
// CNI datapath (package podroute's, named here for podnet's users).
const (
	ToPodPriority   = podroute.ToPodPriority
	FromPodPriority = podroute.FromPodPriority
	MainTable       = podroute.MainTable
)

// ErrInterfaceExists is an ADD for an interface the pod already has.
var ErrInterfaceExists = errors.New("interface already exists")

// Gateway is every pod's next hop, answered by the host veth's MAC.
var Gateway = podroute.Gateway

// GatewayOf is the gateway of a multi-NIC pod's interface index (0 for
// eth0).
func GatewayOf(index int) net.IP { return podroute.GatewayOf(index) }

// PodRulePriority is the priority of the rule "from <address> lookup
// <index>" inside a multi-NIC pod, which sends what leaves from an extra
// interface's address out of that interface (the VPC CNI's).
const PodRulePriority = 1

// podTable is the pod's own route table of interface index: main for eth0,
// the index for the others.
func podTable(index int) int {
	if index == 0 {
		return MainTable
	}
	return index
}

// HostNet is ip/32.
func HostNet(ip net.IP) *net.IPNet { return podroute.HostNet(ip) }

// randomMAC is a locally administered unicast MAC for the host veth.
func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	// The getrandom(2) system call itself: unix.Getrandom (like crypto/rand)
	// goes through the vDSO, whose first call in a process maps and
	// initialises per-thread state. Six bytes are never a short read.
	for {
		_, _, errno := unix.Syscall(unix.SYS_GETRANDOM, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
		if errno != unix.EINTR {
			break
		}
	}
	b[0] = (b[0] | 0x02) &^ 0x01 // locally administered, unicast
	return b
}

// Links is a pod's veth pair while ADD configures it. The node's side goes
// through the caller's netlink handle, the pod's through one socket opened
// in its namespace for all requests, without moving a thread there.
type Links struct {
	h, ph             *netlink.Handle
	ifName, hostName  string
	index             int // the pod's interface: 0 for eth0, card order for a multi-NIC pod's others
	HostIndex, PodIdx int
	HostMAC, PodMAC   net.HardwareAddr
}

// Create does the part of the pod's wiring that does not depend on its
// address: the veth pair with its pod end created directly in podNS, both
// ends up, the pod's gateway route, default route and permanent gateway
// neighbour. host is a netlink handle in the node's namespace, which the
// Links use until Close and which the caller keeps; home is the namespace
// the caller's threads are in, where the thread that opens the socket in
// podNS goes back to. On error nothing is left.
func Create(host *netlink.Handle, home, podNS netns.NsHandle, ifName, hostName string, mtu int) (*Links, error) {
	return CreateIndexed(host, home, podNS, ifName, hostName, mtu, 0)
}

// CreateIndexed is Create for interface index of a multi-NIC pod (0 is
// eth0): the gateway is GatewayOf(index), and for index 1 and up the
// pod's routes go into its table index, which Assign's rule selects for
// the interface's address.
func CreateIndexed(host *netlink.Handle, home, podNS netns.NsHandle, ifName, hostName string, mtu, index int) (_ *Links, err error) {
	// The deferred clean-ups use p, not the named result, which a failing
	// return sets to nil before they run.
	p := &Links{h: host, ifName: ifName, hostName: hostName, index: index}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// The socket in the pod's namespace, opened from a thread of home
	// without looking up which namespace that thread is in.
	if p.ph, err = handleIn(podNS, home); err != nil {
		return nil, fmt.Errorf("netlink in the pod's namespace: %w", err)
	}
	p.HostMAC = randomMAC()
	// The host end is created up, and LinkAdd reads its index back: no
	// separate LinkByName and LinkSetUp round trips.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: mtu, HardwareAddr: p.HostMAC, Flags: net.FlagUp},
		PeerName: ifName, PeerNamespace: netlink.NsFd(int(podNS))}
	if err := p.h.LinkAdd(veth); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s/%s: %w", hostName, ifName, err)
		}
		// The pod already has the interface (a second ADD of the same
		// attachment): CNI requires an error, and the pod keeps its network.
		if _, lerr := p.ph.LinkByName(ifName); lerr == nil {
			return nil, fmt.Errorf("%w: %s in the pod's namespace", ErrInterfaceExists, ifName)
		}
		// Only the host name is taken: the veth of an earlier sandbox of
		// the same pod, or of an ADD cut short. As the VPC CNI does, start
		// clean.
		if old, lerr := p.h.LinkByName(hostName); lerr == nil {
			_ = p.h.LinkDel(old)
		}
		if err := p.h.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("create veth %s/%s: %w", hostName, ifName, err)
		}
	}
	defer func() {
		if err != nil {
			p.RemoveVeth()
		}
	}()
	if p.HostIndex = veth.Attrs().Index; p.HostIndex == 0 {
		return nil, fmt.Errorf("find %s: no index after creation", hostName)
	}
	l, err := p.ph.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find %s in the pod's namespace: %w", ifName, err)
	}
	p.PodMAC, p.PodIdx = l.Attrs().HardwareAddr, l.Attrs().Index
	if err := p.ph.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("up %s: %w", ifName, err)
	}
	gw, table := GatewayOf(index), podTable(index)
	if err := p.ph.RouteReplace(&netlink.Route{LinkIndex: p.PodIdx, Dst: HostNet(gw), Scope: netlink.SCOPE_LINK, Table: table}); err != nil {
		return nil, fmt.Errorf("gateway route in the pod's namespace: %w", err)
	}
	if err := p.ph.RouteReplace(&netlink.Route{LinkIndex: p.PodIdx, Gw: gw, Table: table}); err != nil {
		return nil, fmt.Errorf("default route in the pod's namespace: %w", err)
	}
	if err := p.ph.NeighSet(&netlink.Neigh{LinkIndex: p.PodIdx, IP: gw, HardwareAddr: p.HostMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}); err != nil {
		return nil, fmt.Errorf("gateway neighbour in the pod's namespace: %w", err)
	}
	return p, nil
}

// handleIn opens a route netlink socket in ns from a thread of home. If
// the thread cannot go back home it stays locked to the calling goroutine
// (whose netlink work goes through handles, bound to their namespaces), and
// the runtime ends it with that goroutine instead of reusing it in the
// wrong namespace.
func handleIn(ns, home netns.NsHandle) (*netlink.Handle, error) {
	runtime.LockOSThread()
	if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter the pod's namespace: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if serr := unix.Setns(int(home), unix.CLONE_NEWNET); serr != nil {
		if h != nil {
			h.Close()
		}
		return nil, fmt.Errorf("return to the caller's namespace: %w", serr)
	}
	runtime.UnlockOSThread()
	return h, err
}

// Assign finishes the wiring with the pod's address: the /32 on the pod's
// interface, the host route to it and its rules.
func (p *Links) Assign(ip net.IP, table int) error {
	if err := p.ph.AddrAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: p.PodIdx, Name: p.ifName}}, &netlink.Addr{IPNet: HostNet(ip)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ip, p.ifName, err)
	}
	if err := p.h.RouteReplace(&netlink.Route{LinkIndex: p.HostIndex, Dst: HostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("host route to %s: %w", ip, err)
	}
	for _, r := range Rules(ip, table) {
		if err := p.h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rule for %s (priority %d): %w", ip, r.Priority, err)
		}
	}
	if p.index > 0 {
		if err := p.ph.RuleAdd(podRule(ip, p.index)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rule from %s lookup %d in the pod's namespace: %w", ip, p.index, err)
		}
	}
	return nil
}

// podRule is the multi-NIC pod's rule for interface index's address.
func podRule(ip net.IP, index int) *netlink.Rule {
	r := netlink.NewRule()
	r.Priority, r.Src, r.Table = PodRulePriority, HostNet(ip), index
	return r
}

// Undo removes what Create and Assign made: the pair (with the host route)
// and, when ip is set, the pod's rules. For an ADD that cannot complete.
func (p *Links) Undo(ip net.IP, table int) {
	if ip != nil {
		for _, r := range Rules(ip, table) {
			_ = p.h.RuleDel(r)
		}
		if p.index > 0 && p.ph != nil {
			_ = p.ph.RuleDel(podRule(ip, p.index))
		}
	}
	p.RemoveVeth()
}

// RemoveVeth deletes the pair Create made. It goes by the index Create
// recorded, not by name: another sandbox of the same pod may have replaced
// the veth of that name meanwhile.
func (p *Links) RemoveVeth() {
	if p.HostIndex == 0 {
		return
	}
	if l, err := p.h.LinkByIndex(p.HostIndex); err == nil && l.Attrs().Name == p.hostName {
		_ = p.h.LinkDel(l)
	}
}

// Close releases the pod's netlink socket; the links stay.
func (p *Links) Close() {
	if p.ph != nil {
		p.ph.Close()
	}
}

// Check verifies a pod's wiring as Create and Assign made it: the host
// veth hostName with its route to ip, the pod's rules for ip (table is its
// route table; MainTable on the primary ENI), and in podNS the interface
// ifName with ip/32, the default route via Gateway and Gateway's permanent
// neighbour at the host veth's MAC. host and home are as for Create. The
// error says what is missing.
func Check(host *netlink.Handle, home, podNS netns.NsHandle, ifName, hostName string, ip net.IP, table int) error {
	return CheckIndexed(host, home, podNS, ifName, hostName, ip, table, 0)
}

// CheckIndexed is Check for interface index of a multi-NIC pod, as
// CreateIndexed made it: its routes in the pod's table index, via
// GatewayOf(index), and the pod's rule for its address.
func CheckIndexed(host *netlink.Handle, home, podNS netns.NsHandle, ifName, hostName string, ip net.IP, table, index int) error {
	hl, err := host.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostName, err)
	}
	routes, err := host.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: HostNet(ip), Table: MainTable}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil || len(routes) == 0 || routes[0].LinkIndex != hl.Attrs().Index {
		return fmt.Errorf("no host route %s dev %s", ip, hostName)
	}
	rules, err := host.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, want := range Rules(ip, table) {
		found := false
		for _, r := range rules {
			found = found || (r.Priority == want.Priority && r.Table == want.Table && sameNet(r.Dst, want.Dst) && sameNet(r.Src, want.Src))
		}
		if found {
			continue
		}
		if want.Dst != nil {
			return fmt.Errorf("no rule 'to %s lookup main' (priority %d)", ip, want.Priority)
		}
		return fmt.Errorf("no rule 'from %s lookup %d' (priority %d)", ip, want.Table, want.Priority)
	}
	ph, err := handleIn(podNS, home)
	if err != nil {
		return fmt.Errorf("netlink in the pod's namespace: %w", err)
	}
	defer ph.Close()
	l, err := ph.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", ifName, err)
	}
	addrs, err := ph.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("pod addresses: %w", err)
	}
	ok := false
	for _, a := range addrs {
		ok = ok || sameNet(a.IPNet, HostNet(ip))
	}
	if !ok {
		return fmt.Errorf("pod %s has no %s/32", ifName, ip)
	}
	gw, ptable := GatewayOf(index), podTable(index)
	rs, err := ph.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Table: ptable}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("pod routes: %w", err)
	}
	ok = false
	for _, r := range rs {
		ok = ok || ((r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw))
	}
	if !ok {
		return fmt.Errorf("pod has no default route via %s in table %d", gw, ptable)
	}
	if index > 0 {
		prs, err := ph.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("pod rules: %w", err)
		}
		ok = false
		for _, r := range prs {
			ok = ok || (r.Priority == PodRulePriority && r.Table == index && sameNet(r.Src, HostNet(ip)))
		}
		if !ok {
			return fmt.Errorf("pod has no rule 'from %s lookup %d' (priority %d)", ip, index, PodRulePriority)
		}
	}
	neighs, err := ph.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("pod neighbours: %w", err)
	}
	for _, n := range neighs {
		if n.IP.Equal(gw) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == hl.Attrs().HardwareAddr.String() {
			return nil
		}
	}
	return fmt.Errorf("pod has no permanent neighbour %s -> %s", gw, hl.Attrs().HardwareAddr)
}

// sameNet reports whether a and b are the same network, both nil included.
func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.IP.Equal(b.IP) && a.Mask.String() == b.Mask.String()
}

// Rules are the pod's policy routing rules.
func Rules(ip net.IP, table int) []*netlink.Rule {
	to := netlink.NewRule()
	to.Priority, to.Dst, to.Table = ToPodPriority, HostNet(ip), MainTable
	rules := []*netlink.Rule{to}
	if table != MainTable && table != 0 {
		from := netlink.NewRule()
		from.Priority, from.Src, from.Table = FromPodPriority, HostNet(ip), table
		rules = append(rules, from)
	}
	return rules
}

// TeardownHost removes what the host holds for a pod's address ip, in the
// calling thread's namespace: its rules (DeleteRules) and what TeardownVeth
// removes. ipamd calls it under the attachment's lock just before it
// releases the address, so the address is still the pod's.
func TeardownHost(hostName string, ip net.IP, table int, deleteVeth bool) error {
	if ip == nil {
		return nil
	}
	return errors.Join(DeleteRules(ip, table), TeardownVeth(hostName, ip, deleteVeth))
}

// DeleteRules removes the pod's rules for ip, in the calling thread's
// namespace; a table of -1 (unknown) removes the "from" rule whatever its
// table. Rules are not tied to a device, so this must run before ipamd
// releases the address: after that they may be its next pod's. Missing
// rules are fine.
func DeleteRules(ip net.IP, table int) error {
	var errs []error
	for _, r := range Rules(ip, table) {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete rule for %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

// TeardownVeth removes, in the calling thread's namespace, the host route
// to ip and (with deleteVeth) the veth hostName, while that veth routes
// ip. A veth of that name that does not route ip belongs to another
// sandbox of the same pod (the name comes from the pod's name) and is left
// alone; so is everything when ip is unknown. hostName "" means the veth
// that routes ip, whatever its name (what ipamd's release uses). DEL leaves the veth to the
// runtime's deletion of the pod's namespace, which destroys the pair
// anyway: deleting it here would make every DEL wait ~16 ms on the kernel
// for nothing. Missing pieces are fine (DEL is idempotent).
func TeardownVeth(hostName string, ip net.IP, deleteVeth bool) error {
	if ip == nil {
		return nil
	}
	l, route, err := HostRoute(hostName, ip)
	if err != nil || route == nil {
		return err // the veth is gone with the pod's namespace, or is another sandbox's
	}
	var errs []error
	if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("delete route to %s: %w", ip, err))
	}
	if deleteVeth {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// HostRoute finds, in the calling thread's namespace, the host veth
// hostName and its route to ip: a nil link when the veth is gone, a nil
// route when the veth does not route ip (it is another sandbox's). With
// hostName "", the veth is the one the main table routes ip through, if
// that is a veth (a route to ip through anything else is not a pod's).
func HostRoute(hostName string, ip net.IP) (netlink.Link, *netlink.Route, error) {
	if ip.To4() == nil {
		return nil, nil, nil // no address, no route of it
	}
	filter, mask := &netlink.Route{Dst: HostNet(ip), Table: MainTable}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE
	var l netlink.Link
	if hostName != "" {
		var err error
		if l, err = netlink.LinkByName(hostName); err != nil {
			// Only "no such link" is a gone veth: a lookup that failed
			// says nothing, and a caller must not take it for a gone pod.
			var gone netlink.LinkNotFoundError
			if errors.As(err, &gone) {
				return nil, nil, nil
			}
			return nil, nil, fmt.Errorf("find %s: %w", hostName, err)
		}
		filter.LinkIndex, mask = l.Attrs().Index, mask|netlink.RT_FILTER_OIF
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
	if err != nil {
		return l, nil, fmt.Errorf("list routes to %s: %w", ip, err)
	}
	if hostName != "" {
		if len(routes) == 0 {
			return l, nil, nil
		}
		return l, &routes[0], nil
	}
	for i, r := range routes {
		if rl, err := netlink.LinkByIndex(r.LinkIndex); err == nil && rl.Type() == "veth" {
			return rl, &routes[i], nil
		}
	}
	return nil, nil, nil
}
