// Package rtnl tears a pod's host side down with route netlink messages
// written here, for berth-cni's DEL when ipamd is down: the only kernel
// work left in the plugin (ipamd does ADD, CHECK, GC and the DEL it
// answers). A netlink library linked into the plugin would cost every exec
// its package init and pages, ~0.4 ms of each pod's ADD on the benchmark
// VM, for a path that runs only while ipamd is down.
//
// TeardownHost does what internal/podnet's TeardownHost does, and
// rtnl_test.go checks the two against each other on the kernel.
package rtnl

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/podroute"
)

const (
	toPodPriority   = podroute.ToPodPriority
	fromPodPriority = podroute.FromPodPriority
	mainTable       = podroute.MainTable
)

// TeardownHost removes, in the calling thread's network namespace, the
// host's part of a pod's address ip: the rule "to ip lookup main" and,
// for a table other than main, "from ip lookup table" (-1: whatever its
// table); the host route to ip; and with deleteVeth the veth hostName.
// The route and the veth only while that veth routes ip: one of that name
// that does not is another sandbox's of the same pod. hostName "" means
// the veth the main table routes ip through, if it is a veth. Missing
// pieces are fine: DEL is idempotent. The caller makes sure ip is not
// another pod's.
func TeardownHost(hostName string, ip net.IP, table int, deleteVeth bool) error {
	ip4 := ip.To4()
	if ip4 == nil {
		return nil
	}
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.close()
	var errs []error
	if err := c.deleteRule(ip4, nil, toPodPriority, mainTable); err != nil {
		errs = append(errs, err)
	}
	if table != mainTable && table != 0 {
		if err := c.deleteRule(nil, ip4, fromPodPriority, table); err != nil {
			errs = append(errs, err)
		}
	}
	link, err := c.hostRoute(hostName, ip4)
	if err != nil || link == nil {
		return errors.Join(append(errs, err)...)
	}
	if err := c.deleteRoute(ip4, link.index); err != nil {
		errs = append(errs, err)
	}
	if deleteVeth {
		if err := c.deleteLink(link); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type link struct {
	index      int32
	name, kind string
}

// hostRoute is the veth hostName ("" for the one the main table routes
// ip through) when it routes ip; nil otherwise.
func (c *conn) hostRoute(hostName string, ip net.IP) (*link, error) {
	oifs, err := c.routesTo(ip)
	if err != nil {
		return nil, err
	}
	for _, oif := range oifs {
		l, err := c.linkByIndex(oif)
		if err != nil {
			if errors.Is(err, unix.ENODEV) {
				continue
			}
			return nil, err
		}
		if (hostName == "" && l.kind == "veth") || (hostName != "" && l.name == hostName) {
			return l, nil
		}
	}
	return nil, nil
}

// routesTo lists the output interfaces of the main table's routes to
// ip/32.
func (c *conn) routesTo(ip net.IP) ([]int32, error) {
	rtm := make([]byte, unix.SizeofRtMsg)
	rtm[0] = unix.AF_INET
	msgs, err := c.dump(unix.RTM_GETROUTE, rtm)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", ip, err)
	}
	var oifs []int32
	for _, m := range msgs {
		if len(m) < unix.SizeofRtMsg || m[1] != 32 {
			continue // not a /32
		}
		table := uint32(m[4])
		var dst net.IP
		oif := int32(-1)
		forAttrs(m[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
			switch {
			case typ == unix.RTA_TABLE && len(v) == 4:
				table = ne.Uint32(v)
			case typ == unix.RTA_DST && len(v) == 4:
				dst = net.IP(v)
			case typ == unix.RTA_OIF && len(v) == 4:
				oif = int32(ne.Uint32(v))
			}
		})
		if table == mainTable && dst.Equal(ip) && oif > 0 {
			oifs = append(oifs, oif)
		}
	}
	return oifs, nil
}

// linkByIndex reads a link's name and kind.
func (c *conn) linkByIndex(index int32) (*link, error) {
	ifi := make([]byte, unix.SizeofIfInfomsg)
	ne.PutUint32(ifi[4:], uint32(index))
	msgs, err := c.call(unix.RTM_GETLINK, 0, ifi)
	if err != nil {
		return nil, fmt.Errorf("link %d: %w", index, err)
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg || int32(ne.Uint32(m[4:])) != index {
			continue
		}
		l := &link{index: index}
		forAttrs(m[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.IFLA_IFNAME:
				l.name = cString(v)
			case unix.IFLA_LINKINFO:
				forAttrs(v, func(typ uint16, v []byte) {
					if typ == unix.IFLA_INFO_KIND {
						l.kind = cString(v)
					}
				})
			}
		})
		return l, nil
	}
	return nil, fmt.Errorf("link %d: %w", index, unix.ENODEV)
}

// deleteRule deletes the rule of priority prio for dst or src (/32) and
// table (any table when negative). A missing rule is fine.
func (c *conn) deleteRule(dst, src net.IP, prio, table int) error {
	frh := make([]byte, unix.SizeofRtMsg) // struct fib_rule_hdr, the same size
	frh[0] = unix.AF_INET                 // action 0: whatever the rule's, as vishvananda/netlink deletes
	b := frh
	if dst != nil {
		frh[1] = 32
		b = attr(b, unix.FRA_DST, dst)
	}
	if src != nil {
		frh[2] = 32
		b = attr(b, unix.FRA_SRC, src)
	}
	b = attr(b, unix.FRA_PRIORITY, u32(uint32(prio)))
	if table >= 0 { // else any table
		if table < 256 {
			b[4] = byte(table)
		}
		b = attr(b, unix.FRA_TABLE, u32(uint32(table)))
	}
	_, err := c.call(unix.RTM_DELRULE, unix.NLM_F_ACK, b)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		if dst != nil {
			return fmt.Errorf("delete rule for %s: %w", dst, err)
		}
		return fmt.Errorf("delete rule for %s: %w", src, err)
	}
	return nil
}

// deleteRoute deletes the main table's route to ip/32 through oif.
func (c *conn) deleteRoute(ip net.IP, oif int32) error {
	rtm := make([]byte, unix.SizeofRtMsg)
	rtm[0] = unix.AF_INET
	rtm[1] = 32
	rtm[4] = mainTable
	rtm[6] = unix.RT_SCOPE_NOWHERE // any scope
	b := attr(rtm, unix.RTA_DST, ip)
	b = attr(b, unix.RTA_OIF, u32(uint32(oif)))
	_, err := c.call(unix.RTM_DELROUTE, unix.NLM_F_ACK, b)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route to %s: %w", ip, err)
	}
	return nil
}

// deleteLink deletes l if it is still there under its name: not another
// link that took its index since.
func (c *conn) deleteLink(l *link) error {
	cur, err := c.linkByIndex(l.index)
	if err != nil || cur.name != l.name {
		return nil // gone already
	}
	ifi := make([]byte, unix.SizeofIfInfomsg)
	ne.PutUint32(ifi[4:], uint32(l.index))
	if _, err := c.call(unix.RTM_DELLINK, unix.NLM_F_ACK, ifi); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", l.name, err)
	}
	return nil
}

func cString(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}
