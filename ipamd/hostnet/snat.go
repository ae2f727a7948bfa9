package hostnet

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The berth-snat table, as `nft list table ip berth-snat` shows it (counters
// and comments left out; eth0 stands for the primary interface, eni for
// the veth prefix, 0x80 for AWS_VPC_K8S_CNI_CONNMARK):
//
//	table ip berth-snat {
//		set nosnat {                     # VPC CIDRs ∪ excluded CIDRs, merged
//			type ipv4_addr
//			flags interval
//		}
//		chain prerouting-nodeport {      # absent with AWS_VPC_CNI_NODE_PORT_SUPPORT=false
//			type filter hook prerouting priority mangle; policy accept;
//			# a connection to the node through the primary interface
//			# (NodePort), before kube-proxy's DNAT: the pod's replies must
//			# leave through it too
//			iifname "eth0" ct state new fib daddr . iif type local ct mark set ct mark | 0x00000080
//		}
//		chain prerouting {
//			type filter hook prerouting priority dstnat + 10; policy accept;
//			# a pod opens a connection that leaves the VPC, judged after
//			# kube-proxy's DNAT (a Service's endpoint, not its ClusterIP);
//			# one such rule per earlier veth prefix pods still use
//			iifname "eni*" ct state new ip daddr != @nosnat fib daddr type != local ct mark set ct mark | 0x00000080
//			# every packet of a marked connection, so that the fwmark rule
//			# (1024) routes it with main, out of the primary interface
//			ct mark & 0x00000080 == 0x00000080 meta mark set meta mark | 0x00000080
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "eth0" ct mark & 0x00000080 == 0x00000080 ip daddr != @nosnat fib daddr type != local snat to <primary IP> fully-random
//		}
//	}
//
// With AWS_VPC_K8S_CNI_EXTERNALSNAT=true the set, the pod rule and the
// postrouting chain are left out: the NodePort mark and the restore stay.
//
// "From a pod address" is read from the conntrack mark: a connection is
// SNATed only when its first packet came in on a pod veth (or is a NodePort
// connection, whose first packet leaves through the primary interface
// towards a non-VPC address only for an external endpoint, which must be
// SNATed anyway). The node's own traffic is never rewritten. This is the
// Amazon VPC CNI's AWS-SNAT-CHAIN-0 / AWS-CONNMARK-CHAIN-0 pair plus its
// NodePort mangle rules, written for nftables.

const (
	chainPrerouting  = "prerouting"
	chainNodePort    = "prerouting-nodeport"
	chainPostrouting = "postrouting"
	setNoSNAT        = "nosnat"
)

func snatTable() *nftables.Table {
	return &nftables.Table{Name: SNATTable, Family: nftables.TableFamilyIPv4}
}

// span is an inclusive range of IPv4 addresses.
type span struct{ first, last uint32 }

// mergeSpans turns prefixes into sorted, disjoint, non-adjacent ranges:
// the kernel refuses overlapping intervals in one set.
func mergeSpans(ps []netip.Prefix) []span {
	all := make([]span, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		first := binary.BigEndian.Uint32(p.Addr().AsSlice())
		size := uint64(1) << (32 - p.Bits())
		all = append(all, span{first, uint32(uint64(first) + size - 1)})
	}
	slices.SortFunc(all, func(a, b span) int { return cmp.Compare(a.first, b.first) })
	var out []span
	for _, s := range all {
		if n := len(out); n > 0 && uint64(s.first) <= uint64(out[n-1].last)+1 {
			out[n-1].last = max(out[n-1].last, s.last)
			continue
		}
		out = append(out, s)
	}
	return out
}

// intervalElements encodes ranges for an interval set: a start element
// and an interval-end element one past the last address (none when the
// range runs to 255.255.255.255).
func intervalElements(spans []span) []nftables.SetElement {
	var els []nftables.SetElement
	for _, s := range spans {
		els = append(els, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, s.first)})
		if s.last != math.MaxUint32 {
			els = append(els, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, s.last+1), IntervalEnd: true})
		}
	}
	return els
}

// ifname is an exact interface-name match value (NUL padded, as nft
// compares it); a wildcard "eni*" match compares the prefix bytes only.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func ne32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// Expression fragments, all working in register 1. Functions rather than
// shared values, so no rule aliases another's expressions.

func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(expr.CtStateBitNEW), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
	}
}

// ct mark set ct mark | mark
func ctMarkSet(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^mark), Xor: ne32(mark)},
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true},
	}
}

// ct mark & mark == mark
func ctMarked(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mark), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(mark)},
	}
}

// meta mark set meta mark | mark
func metaMarkSet(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^mark), Xor: ne32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}
}

// fib daddr type != local
func daddrNotLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(unix.RTN_LOCAL)},
	}
}

// fib daddr . iif type local
func daddrLocalOnIif() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, FlagIIF: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(unix.RTN_LOCAL)},
	}
}

func daddrNotIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
	}
}

func metaIfname(key expr.MetaKey, value []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: value},
	}
}

func join(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// queueSNATTable queues, on c, the replacement of the berth-snat table: the
// old table (if any) is deleted and the new one created in the same batch,
// so the kernel swaps them atomically on Flush.
func (h *Host) queueSNATTable(c *nftables.Conn, primaryIf string, primaryIP netip.Addr) error {
	t := snatTable()
	c.AddTable(t) // creates it if absent, so the delete cannot fail
	c.DelTable(t)
	c.AddTable(t)

	accept := nftables.ChainPolicyAccept
	// A connection from outside to the node (a NodePort) is marked before
	// kube-proxy's DNAT, while its destination is still the node's own
	// address, so that the pod's replies leave through the primary ENI.
	if !h.cfg.NoNodePort {
		np := c.AddChain(&nftables.Chain{Name: chainNodePort, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: t, Chain: np, UserData: comment("berth: connection to the node through the primary interface"),
			Exprs: join(metaIfname(expr.MetaKeyIIFNAME, ifname(primaryIf)), ctStateNew(), daddrLocalOnIif(), ctMarkSet(h.cfg.ConnMark))})
	}
	// A pod's connection is judged after kube-proxy's DNAT (priority
	// dstnat + 10): one to a Service goes where its endpoint is, not where
	// the ClusterIP (outside the VPC on EKS) would. Marked before DNAT, a
	// pod on a secondary ENI would reach an endpoint in the VPC through the
	// primary ENI with its own address, and EC2's source/dest check would
	// drop it.
	pre := c.AddChain(&nftables.Chain{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest + 10), Policy: &accept})
	var set *nftables.Set
	if !h.cfg.ExternalSNAT {
		set = &nftables.Set{Table: t, Name: setNoSNAT, KeyType: nftables.TypeIPAddr, Interval: true,
			Comment: "VPC and excluded CIDRs: never SNATed"}
		nosnat := slices.Concat(h.cfg.VPCCIDRs, h.cfg.ExcludeSNATCIDRs)
		if err := c.AddSet(set, intervalElements(mergeSpans(nosnat))); err != nil {
			return fmt.Errorf("queue set %s: %w", setNoSNAT, err)
		}
		for _, prefix := range append([]string{h.cfg.VethPrefix}, h.earlierPrefixes...) {
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: comment("berth: pod connection leaving the VPC"),
				Exprs: join(metaIfname(expr.MetaKeyIIFNAME, []byte(prefix)), ctStateNew(), daddrNotIn(set), daddrNotLocal(),
					[]expr.Any{&expr.Counter{}}, ctMarkSet(h.cfg.ConnMark))})
		}
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: comment("berth: restore the connmark for the fwmark rule"),
		Exprs: join(ctMarked(h.cfg.ConnMark), metaMarkSet(h.cfg.ConnMark))})
	if h.cfg.ExternalSNAT {
		// An external NAT device translates; NodePort still needs the mark.
		return nil
	}

	post := c.AddChain(&nftables.Chain{Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	// As the VPC CNI's iptables rule: prng is --random-fully, hashrandom
	// --random, none neither.
	nat := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1,
		FullyRandom: h.cfg.RandomizeSNAT == SNATPortsPRNG, Random: h.cfg.RandomizeSNAT == SNATPortsHashRandom}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, UserData: comment("berth: SNAT pod traffic leaving the VPC"),
		Exprs: join(metaIfname(expr.MetaKeyOIFNAME, ifname(primaryIf)), ctMarked(h.cfg.ConnMark), daddrNotIn(set), daddrNotLocal(),
			[]expr.Any{&expr.Counter{}, &expr.Immediate{Register: 1, Data: primaryIP.AsSlice()}, nat})})
	return nil
}

// nftConn opens an nftables connection in the node's namespace. It is not
// lasting: nftables is only touched at start-up and teardown, and a fresh
// socket per transaction cannot be left with unread acks by a failed batch.
func (h *Host) nftConn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(h.ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return c, nil
}

// replaceSNAT installs the berth-snat table in one transaction.
func (h *Host) replaceSNAT(primaryIf string, primaryIP netip.Addr) (err error) {
	if h.connmarkReconciles != nil {
		defer func() {
			result := "success"
			if err != nil {
				result = "error"
			}
			h.connmarkReconciles.WithLabelValues(result).Inc()
		}()
	}
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	if err := h.queueSNATTable(c, primaryIf, primaryIP); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables table %s: %w", SNATTable, err)
	}
	return nil
}

// deleteSNAT removes the berth-snat table if it exists.
func (h *Host) deleteSNAT() error {
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	t := snatTable()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", SNATTable, err)
	}
	return nil
}
