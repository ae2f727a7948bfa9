package main

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rule priorities and the pod gateway of the Amazon VPC CNI datapath.
const (
	toPodPriority   = 512
	fromPodPriority = 1536
	mainTable       = unix.RT_TABLE_MAIN
)

var podGateway = net.IPv4(169, 254, 1, 1).To4()

// hostVethName is <prefix><first 11 hex of sha1("<namespace>.<pod>")>.
func hostVethName(prefix, namespace, pod string) string {
	h := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(h[:])[:11]
}

func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = (b[0] | 0x02) &^ 0x01 // locally administered, unicast
	return b
}

func hostNet(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)} }

// setupPod creates the veth pair with its pod end directly in the pod's
// namespace, then configures both ends. It returns the pod end's MAC.
func setupPod(netnsPath, ifName, hostName string, mtu int, ip net.IP, table int) (hostMAC, podMAC net.HardwareAddr, err error) {
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	hostMAC = randomMAC()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: mtu, HardwareAddr: hostMAC},
		PeerName: ifName, PeerNamespace: netlink.NsFd(int(podNS.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, nil, fmt.Errorf("create veth %s/%s in %s: %w", hostName, ifName, netnsPath, err)
		}
		// A retried ADD after a partial one: start clean.
		if old, lerr := netlink.LinkByName(hostName); lerr == nil {
			_ = netlink.LinkDel(old)
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return nil, nil, fmt.Errorf("create veth %s/%s in %s: %w", hostName, ifName, netnsPath, err)
		}
	}
	defer func() {
		if err != nil {
			if l, lerr := netlink.LinkByName(hostName); lerr == nil {
				_ = netlink.LinkDel(l)
			}
		}
	}()
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, nil, fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, nil, fmt.Errorf("up %s: %w", hostName, err)
	}
	err = podNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", ifName, netnsPath, err)
		}
		podMAC = l.Attrs().HardwareAddr
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("up %s: %w", ifName, err)
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: hostNet(ip)}); err != nil {
			return fmt.Errorf("address %s on %s: %w", ip, ifName, err)
		}
		idx := l.Attrs().Index
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: hostNet(podGateway), Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("gateway route in %s: %w", netnsPath, err)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Gw: podGateway}); err != nil {
			return fmt.Errorf("default route in %s: %w", netnsPath, err)
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, IP: podGateway, HardwareAddr: hostMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}); err != nil {
			return fmt.Errorf("gateway neighbour in %s: %w", netnsPath, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostNet(ip), Scope: netlink.SCOPE_LINK}); err != nil {
		return nil, nil, fmt.Errorf("host route to %s: %w", ip, err)
	}
	if err := addRules(ip, table); err != nil {
		return nil, nil, err
	}
	return hostMAC, podMAC, nil
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

func addRules(ip net.IP, table int) error {
	for _, r := range podRules(ip, table) {
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
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
