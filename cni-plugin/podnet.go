package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/vethname"
)

// Rule priorities and the pod gateway of the Amazon VPC CNI datapath.
const (
	toPodPriority   = 512
	fromPodPriority = 1536
	mainTable       = unix.RT_TABLE_MAIN
)

var podGateway = net.IPv4(169, 254, 1, 1).To4()

// hostVethName is the VPC CNI's name for a pod's host veth.
func hostVethName(prefix, namespace, pod string) string { return vethname.For(prefix, namespace, pod) }

func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	// The getrandom(2) system call itself: unix.Getrandom (like crypto/rand)
	// goes through the vDSO, whose first call in a process maps and
	// initialises per-thread state, ~4 page faults and 0.2 ms for 6 bytes.
	// Six bytes are never a short read.
	for {
		_, _, errno := unix.Syscall(unix.SYS_GETRANDOM, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
		if errno != unix.EINTR {
			break
		}
	}
	b[0] = (b[0] | 0x02) &^ 0x01 // locally administered, unicast
	return b
}

func hostNet(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)} }

// podLinks is a pod's veth pair while ADD configures it. Each namespace
// gets one netlink socket for all requests (the package functions open
// and close one per request), and the pod's side is configured through a
// socket opened in its namespace, without moving the thread there.
type podLinks struct {
	h, ph             *netlink.Handle
	podNS             ns.NetNS
	netnsPath, ifName string
	hostName          string
	hostIndex, podIdx int
	hostMAC, podMAC   net.HardwareAddr
}

// createPodLinks does the part of the pod's wiring that does not depend
// on its address: the veth pair with its pod end created directly in the
// pod's namespace, both ends up, the pod's gateway route, default route
// and permanent gateway neighbour. (Running it while ipamd assigns the
// address made no measurable difference and left a veth to delete when
// the assignment failed.)
func createPodLinks(netnsPath, ifName, hostName string, mtu int) (p *podLinks, err error) {
	p = &podLinks{netnsPath: netnsPath, ifName: ifName, hostName: hostName}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.podNS, err = ns.GetNS(netnsPath); err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	if p.h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	if p.ph, err = netlink.NewHandleAt(netns.NsHandle(p.podNS.Fd()), unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	p.hostMAC = randomMAC()
	// The host end is created up, and LinkAdd reads its index back: no
	// separate LinkByName and LinkSetUp round trips.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: mtu, HardwareAddr: p.hostMAC, Flags: net.FlagUp},
		PeerName: ifName, PeerNamespace: netlink.NsFd(int(p.podNS.Fd()))}
	if err := p.h.LinkAdd(veth); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s/%s in %s: %w", hostName, ifName, netnsPath, err)
		}
		// A retried ADD after a partial one: start clean.
		if old, lerr := p.h.LinkByName(hostName); lerr == nil {
			_ = p.h.LinkDel(old)
		}
		if err := p.h.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("create veth %s/%s in %s: %w", hostName, ifName, netnsPath, err)
		}
	}
	defer func() {
		if err != nil {
			p.removeVeth()
		}
	}()
	if p.hostIndex = veth.Attrs().Index; p.hostIndex == 0 {
		return nil, fmt.Errorf("find %s: no index after creation", hostName)
	}
	l, err := p.ph.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", ifName, netnsPath, err)
	}
	p.podMAC, p.podIdx = l.Attrs().HardwareAddr, l.Attrs().Index
	if err := p.ph.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("up %s: %w", ifName, err)
	}
	if err := p.ph.RouteReplace(&netlink.Route{LinkIndex: p.podIdx, Dst: hostNet(podGateway), Scope: netlink.SCOPE_LINK}); err != nil {
		return nil, fmt.Errorf("gateway route in %s: %w", netnsPath, err)
	}
	if err := p.ph.RouteReplace(&netlink.Route{LinkIndex: p.podIdx, Gw: podGateway}); err != nil {
		return nil, fmt.Errorf("default route in %s: %w", netnsPath, err)
	}
	if err := p.ph.NeighSet(&netlink.Neigh{LinkIndex: p.podIdx, IP: podGateway, HardwareAddr: p.hostMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}); err != nil {
		return nil, fmt.Errorf("gateway neighbour in %s: %w", netnsPath, err)
	}
	return p, nil
}

// assign finishes the wiring with the pod's address: the /32 on the pod's
// interface, the host route to it and its rules.
func (p *podLinks) assign(ip net.IP, table int) error {
	if err := p.ph.AddrAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: p.podIdx, Name: p.ifName}}, &netlink.Addr{IPNet: hostNet(ip)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ip, p.ifName, err)
	}
	if err := p.h.RouteReplace(&netlink.Route{LinkIndex: p.hostIndex, Dst: hostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("host route to %s: %w", ip, err)
	}
	return addRules(p.h, ip, table)
}

// removeVeth deletes the pair (an ADD that cannot complete).
func (p *podLinks) removeVeth() {
	if l, err := p.h.LinkByName(p.hostName); err == nil {
		_ = p.h.LinkDel(l)
	}
}

func (p *podLinks) close() {
	if p.ph != nil {
		p.ph.Close()
	}
	if p.h != nil {
		p.h.Close()
	}
	if p.podNS != nil {
		p.podNS.Close()
	}
}

func podRules(ip net.IP, table int) []*netlink.Rule {
	to := netlink.NewRule()
	to.Priority, to.Dst, to.Table = toPodPriority, hostNet(ip), mainTable
	rules := []*netlink.Rule{to}
	if table != mainTable && table != 0 {
		from := netlink.NewRule()
		from.Priority, from.Src, from.Table = fromPodPriority, hostNet(ip), table
		rules = append(rules, from)
	}
	return rules
}

func addRules(h *netlink.Handle, ip net.IP, table int) error {
	for _, r := range podRules(ip, table) {
		if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rule for %s (priority %d): %w", ip, r.Priority, err)
		}
	}
	return nil
}

// teardownHost removes what the host side holds for a pod: its rules,
// route and, when deleteVeth is set, its veth. DEL leaves the veth to the
// runtime's deletion of the pod's namespace, which destroys the pair
// anyway: deleting it here would make every DEL wait ~16 ms on the kernel
// for nothing. Missing pieces are fine (DEL is idempotent).
func teardownHost(hostName string, ip net.IP, table int, deleteVeth bool) error {
	var errs []error
	if ip != nil {
		for _, r := range podRules(ip, table) {
			if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete rule for %s: %w", ip, err))
			}
		}
		// The route goes with the veth; delete it first for the case the
		// veth is already gone with the pod's namespace.
		_ = netlink.RouteDel(&netlink.Route{Dst: hostNet(ip), Scope: netlink.SCOPE_LINK})
	}
	if hostName != "" && deleteVeth {
		if l, err := netlink.LinkByName(hostName); err == nil {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("delete %s: %w", hostName, err))
			}
		}
	}
	return errors.Join(errs...)
}
