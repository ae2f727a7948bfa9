package hostnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The traffic test's network, emulating an instance in a VPC:
//
//	pod A (10.0.1.50, an IP of the primary ENI)   pod B (10.0.2.50, an IP of ENI 1)
//	   eth0 ── enia                                  eth0 ── enib
//	               node: eth0 10.0.1.10/24 (primary), eth1 10.0.2.10/24 (device 1, table 2)
//	                     └── vpc0 10.0.1.1 ──┐  ┌── vpc1 10.0.2.1 ──┘
//	                                         outside: lo 198.51.100.1 ("the internet"),
//	                                                  lo 203.0.113.1 (an excluded CIDR)
//
// The outside namespace plays the VPC router and the internet. Its strict
// rp_filter stands in for the source/destination check: a packet from the
// primary IP arriving through ENI 1 is dropped, as EC2 would drop it.
// The node's namespace has strict rp_filter by default too (as many
// distributions do), so the reply path through the primary interface for a
// pod on ENI 1 only works with SetupPrimary's rp_filter=2.

type trafficNet struct {
	node, outside, podA, podB netns.NsHandle
	nodeH                     *netlink.Handle
	primaryMAC, eni1MAC       net.HardwareAddr
}

const (
	primaryIP = "10.0.1.10"
	podAIP    = "10.0.1.50"
	podBIP    = "10.0.2.50"
	internet  = "198.51.100.1"
	excluded  = "203.0.113.1"
	routerA   = "10.0.1.1"
	routerB   = "10.0.2.1"
	nodePort  = 30080
)

func setSysctls(t *testing.T, ns netns.NsHandle, kv map[string]string) {
	t.Helper()
	if err := runIn(t, ns, func() error {
		for k, v := range kv {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("sysctls: %v", err)
	}
}

func addRoute(t *testing.T, h *netlink.Handle, dev, dst, gw string, scope netlink.Scope) {
	t.Helper()
	r := &netlink.Route{Dst: ipNet(netip.MustParsePrefix(dst)), Scope: scope}
	if dev != "" {
		r.LinkIndex = must[netlink.Link](t)(h.LinkByName(dev)).Attrs().Index
	}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %q dev %q: %v", dst, gw, dev, err)
	}
}

func addRule(t *testing.T, h *netlink.Handle, prio int, from, to string, table int) {
	t.Helper()
	r := netlink.NewRule()
	r.Priority, r.Table = prio, table
	if from != "" {
		r.Src = ipNet(netip.MustParsePrefix(from + "/32"))
	}
	if to != "" {
		r.Dst = ipNet(netip.MustParsePrefix(to + "/32"))
	}
	if err := h.RuleAdd(r); err != nil {
		t.Fatalf("rule %d from %q to %q: %v", prio, from, to, err)
	}
}

// addPod wires a pod the way berth-cni does: host veth <hostIf>, pod eth0
// with ip/32, gateway 169.254.1.1 with a permanent neighbour entry, host
// route and rule 512, and rule 1536 when the IP is on a secondary ENI.
func addPod(t *testing.T, nodeH *netlink.Handle, hostIf, ip string, table int) netns.NsHandle {
	t.Helper()
	pod, podH := newNS(t)
	setSysctls(t, pod, map[string]string{"net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "1"})
	addVeth(t, nodeH, hostIf, nil, "eth0", pod, podH)
	hostMAC := must[netlink.Link](t)(nodeH.LinkByName(hostIf)).Attrs().HardwareAddr
	addAddr(t, podH, "eth0", ip+"/32")
	addRoute(t, podH, "eth0", "169.254.1.1/32", "", netlink.SCOPE_LINK)
	addRoute(t, podH, "eth0", "0.0.0.0/0", "169.254.1.1", netlink.SCOPE_UNIVERSE)
	eth0 := must[netlink.Link](t)(podH.LinkByName("eth0"))
	if err := podH.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("169.254.1.1"), HardwareAddr: hostMAC}); err != nil {
		t.Fatal(err)
	}
	addRoute(t, nodeH, hostIf, ip+"/32", "", netlink.SCOPE_LINK)
	addRule(t, nodeH, ToPodRulePriority, "", ip, unix.RT_TABLE_MAIN)
	if table != unix.RT_TABLE_MAIN {
		addRule(t, nodeH, FromPodRulePriority, ip, "", table)
	}
	return pod
}

func newTrafficNet(t *testing.T) *trafficNet {
	t.Helper()
	n := &trafficNet{primaryMAC: mustMAC(t, "02:00:00:00:00:0a"), eni1MAC: mustMAC(t, "02:00:00:00:01:0a")}
	var outH *netlink.Handle
	n.node, n.nodeH = newNS(t)
	n.outside, outH = newNS(t)
	strict := map[string]string{"net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "1"}
	setSysctls(t, n.node, strict)
	setSysctls(t, n.outside, map[string]string{"net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "1",
		"net/ipv4/ip_forward": "0"})

	addVeth(t, n.nodeH, "eth0", n.primaryMAC, "vpc0", n.outside, outH)
	addVeth(t, n.nodeH, "eth1", n.eni1MAC, "vpc1", n.outside, outH)
	// The instance's own configuration of its primary interface.
	addAddr(t, n.nodeH, "eth0", primaryIP+"/24")
	addRoute(t, n.nodeH, "", "0.0.0.0/0", routerA, netlink.SCOPE_UNIVERSE)

	addAddr(t, outH, "vpc0", routerA+"/24")
	addAddr(t, outH, "vpc1", routerB+"/24")
	addAddr(t, outH, "lo", internet+"/32")
	addAddr(t, outH, "lo", excluded+"/32")
	// The VPC router knows where each pod IP lives.
	addRoute(t, outH, "vpc0", podAIP+"/32", primaryIP, netlink.SCOPE_UNIVERSE)
	addRoute(t, outH, "vpc1", podBIP+"/32", "10.0.2.10", netlink.SCOPE_UNIVERSE)

	n.podA = addPod(t, n.nodeH, "enia", podAIP, unix.RT_TABLE_MAIN)
	n.podB = addPod(t, n.nodeH, "enib", podBIP, RouteTable(1, 0))
	return n
}

// serve answers every TCP connection to port on any address of ns with
// the peer address it sees.
func serve(t *testing.T, ns netns.NsHandle, port int) {
	t.Helper()
	var ln net.Listener
	if err := runIn(t, ns, func() (err error) {
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ip := c.RemoteAddr().(*net.TCPAddr).IP.String()
			_, _ = fmt.Fprintln(c, ip)
			c.Close()
		}
	}()
}

// peerSeen connects from ns to addr and returns the source address the
// server saw. The socket is created on a thread inside ns.
func peerSeen(t *testing.T, ns netns.NsHandle, addr string) (string, error) {
	t.Helper()
	var seen string
	err := runIn(t, ns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		seen = strings.TrimSpace(line)
		return err
	})
	return seen, err
}

// delNFTRule deletes the i-th rule of a berth-snat chain.
func delNFTRule(t *testing.T, ns netns.NsHandle, chain string, i int) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tab := snatTable()
	rules, err := c.GetRules(tab, &nftables.Chain{Name: chain, Table: tab})
	if err != nil || len(rules) <= i {
		t.Fatalf("rules of %s: %d, %v", chain, len(rules), err)
	}
	if err := c.DelRule(rules[i]); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("delete rule %d of %s: %v", i, chain, err)
	}
}

// addNodePortDNAT stands in for kube-proxy: <primary>:30080 → podB:port.
func addNodePortDNAT(t *testing.T, ns netns.NsHandle, port int) {
	t.Helper()
	addTestDNAT(t, ns, "nodeports", primaryIP, nodePort, podBIP, port)
}

// addTestDNAT adds, in a table of its own, a DNAT of TCP to daddr (and
// dport, unless 0) → to:toPort, in nat prerouting at priority dstnat.
func addTestDNAT(t *testing.T, ns netns.NsHandle, chain, daddr string, dport uint16, to string, toPort int) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tab := c.AddTable(&nftables.Table{Name: "test-kube-proxy", Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: chain, Table: tab, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	exprs := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr(daddr).AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	if dport != 0 {
		exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, dport)})
	}
	exprs = append(exprs, &expr.Immediate{Register: 1, Data: netip.MustParseAddr(to).AsSlice()},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, uint16(toPort))},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2})
	c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: exprs})
	if err := c.Flush(); err != nil {
		t.Fatalf("test DNAT: %v", err)
	}
}

// clusterIP is a Service address as EKS gives them: outside the VPC.
const clusterIP = "172.20.0.10"

// addClusterIPDNAT stands in for kube-proxy: clusterIP:port → endpoint:port,
// in nat prerouting (priority dstnat) as kube-proxy's rules are.
func addClusterIPDNAT(t *testing.T, ns netns.NsHandle, endpoint string, port int) {
	t.Helper()
	addTestDNAT(t, ns, "services", clusterIP, 0, endpoint, port)
}

func TestSNATTraffic(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	ctx := t.Context()
	n := newTrafficNet(t)
	const port = 7000
	serve(t, n.outside, port)
	serve(t, n.podB, port)
	addNodePortDNAT(t, n.node, port)
	addClusterIPDNAT(t, n.node, routerB, port)

	cfg := Config{NetNS: n.node, VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")},
		ExcludeSNATCIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	h := newHost(t, cfg)
	if err := h.SetupPrimary(ctx, n.primaryMAC, netip.MustParseAddr(primaryIP)); err != nil {
		t.Fatalf("SetupPrimary: %v", err)
	}
	if err := h.SetupENI(ctx, n.eni1MAC, 1, 0, netip.MustParseAddr("10.0.2.10"), netip.MustParsePrefix("10.0.2.0/24")); err != nil {
		t.Fatalf("SetupENI: %v", err)
	}

	type flow struct {
		name string
		from netns.NsHandle
		to   string
		want string // the source the server sees
	}
	run := func(t *testing.T, flows []flow) {
		for _, f := range flows {
			t.Run(f.name, func(t *testing.T) {
				got, err := peerSeen(t, f.from, net.JoinHostPort(f.to, strconv.Itoa(port)))
				if err != nil {
					t.Fatalf("connect to %s: %v", f.to, err)
				}
				if got != f.want {
					t.Errorf("server saw %s, want %s", got, f.want)
				}
			})
		}
	}
	t.Run("SNAT", func(t *testing.T) {
		run(t, []flow{
			{"primary-ENI pod to the internet is SNATed", n.podA, internet, primaryIP},
			{"primary-ENI pod inside the VPC keeps its IP", n.podA, routerA, podAIP},
			{"primary-ENI pod to an excluded CIDR keeps its IP", n.podA, excluded, podAIP},
			{"ENI-1 pod to the internet leaves through the primary ENI, SNATed", n.podB, internet, primaryIP},
			{"ENI-1 pod inside the VPC keeps its IP", n.podB, routerB, podBIP},
			{"ENI-1 pod to an excluded CIDR keeps its IP", n.podB, excluded, podBIP},
			// kube-proxy's DNAT comes first: a Service whose ClusterIP is
			// outside the VPC but whose endpoint is inside is VPC traffic.
			{"primary-ENI pod to a ClusterIP with an endpoint in the VPC keeps its IP", n.podA, clusterIP, podAIP},
			{"ENI-1 pod to a ClusterIP with an endpoint in the VPC leaves through ENI 1 with its IP", n.podB, clusterIP, podBIP},
		})
	})
	t.Run("NodePort to an ENI-1 pod replies through the primary ENI", func(t *testing.T) {
		got, err := peerSeen(t, n.outside, net.JoinHostPort(primaryIP, strconv.Itoa(nodePort)))
		if err != nil {
			t.Fatalf("connect to the NodePort: %v (the reply left through ENI 1?)", err)
		}
		if got != routerA {
			t.Errorf("pod saw %s, want %s", got, routerA)
		}
	})

	// Controls: break one piece at a time and watch the flow that needs it
	// fail, so the checks above cannot pass by accident; then SetupPrimary
	// must repair the drift.
	fromPodB := func() (string, error) {
		return peerSeen(t, n.podB, net.JoinHostPort(internet, strconv.Itoa(port)))
	}
	viaNodePort := func() (string, error) {
		return peerSeen(t, n.outside, net.JoinHostPort(primaryIP, strconv.Itoa(nodePort)))
	}
	for _, c := range []struct {
		name string
		flow func() (string, error)
		want string
		brk  func(t *testing.T)
	}{
		{"strict rp_filter on the primary interface", fromPodB, primaryIP, func(t *testing.T) {
			setSysctls(t, n.node, map[string]string{"net/ipv4/conf/eth0/rp_filter": "1"})
		}},
		{"no fwmark rule", fromPodB, primaryIP, func(t *testing.T) {
			if err := n.nodeH.RuleDel(h.fwmarkRule()); err != nil {
				t.Fatal(err)
			}
		}},
		{"no connmark for pod connections", fromPodB, primaryIP, func(t *testing.T) { delNFTRule(t, n.node, chainPrerouting, 0) }},
		{"no connmark for NodePort connections", viaNodePort, routerA, func(t *testing.T) { delNFTRule(t, n.node, chainNodePort, 0) }},
		{"no mark restore", fromPodB, primaryIP, func(t *testing.T) { delNFTRule(t, n.node, chainPrerouting, 1) }},
		{"no SNAT", fromPodB, primaryIP, func(t *testing.T) { delNFTRule(t, n.node, chainPostrouting, 0) }},
	} {
		t.Run("control: "+c.name, func(t *testing.T) {
			c.brk(t)
			if got, err := c.flow(); err == nil && got == c.want {
				t.Errorf("the flow still works (server saw %s): this piece is not what makes it work", got)
			} else {
				t.Logf("broken as expected: saw %q, %v", got, err)
			}
			if err := h.SetupPrimary(ctx, n.primaryMAC, netip.MustParseAddr(primaryIP)); err != nil {
				t.Fatalf("SetupPrimary (repair): %v", err)
			}
			if got, err := c.flow(); err != nil || got != c.want {
				t.Errorf("after SetupPrimary: saw %q, %v; want %s", got, err, c.want)
			}
		})
	}

	ext := newHost(t, Config{NetNS: n.node, ExternalSNAT: true})
	if err := ext.SetupPrimary(ctx, n.primaryMAC, netip.MustParseAddr(primaryIP)); err != nil {
		t.Fatalf("SetupPrimary (ExternalSNAT): %v", err)
	}
	t.Run("ExternalSNAT", func(t *testing.T) {
		run(t, []flow{
			{"primary-ENI pod to the internet keeps its IP", n.podA, internet, podAIP},
			{"ENI-1 pod to the internet leaves through ENI 1 with its IP", n.podB, internet, podBIP},
			{"ENI-1 pod to a ClusterIP with an endpoint in the VPC keeps its IP", n.podB, clusterIP, podBIP},
		})
		got, err := peerSeen(t, n.outside, net.JoinHostPort(primaryIP, strconv.Itoa(nodePort)))
		if err != nil || got != routerA {
			t.Errorf("NodePort to an ENI-1 pod with ExternalSNAT: saw %q, %v; want %s", got, err, routerA)
		}
	})

	// AWS_VPC_K8S_CNI_CONNMARK: ipamd restarted with another mark routes and
	// SNATs the same, with the 0x80 rule gone.
	cfg.ConnMark = 0x2000
	h2 := newHost(t, cfg)
	if err := h2.SetupPrimary(ctx, n.primaryMAC, netip.MustParseAddr(primaryIP)); err != nil {
		t.Fatalf("SetupPrimary (connmark 0x2000): %v", err)
	}
	t.Run("connmark 0x2000", func(t *testing.T) {
		if c := fwmarkRuleCount(t, n.nodeH, 0x2000); c != 1 {
			t.Errorf("fwmark rules: count %d, want only the 0x2000 one (the 0x80 rule of the earlier start gone)", c)
		}
		run(t, []flow{
			{"primary-ENI pod to the internet is SNATed", n.podA, internet, primaryIP},
			{"ENI-1 pod to the internet leaves through the primary ENI, SNATed", n.podB, internet, primaryIP},
			{"ENI-1 pod inside the VPC keeps its IP", n.podB, routerB, podBIP},
		})
		got, err := peerSeen(t, n.outside, net.JoinHostPort(primaryIP, strconv.Itoa(nodePort)))
		if err != nil || got != routerA {
			t.Errorf("NodePort to an ENI-1 pod: saw %q, %v; want %s", got, err, routerA)
		}
	})

	// A CIDR associated with the VPC later is VPC traffic from then on.
	t.Run("VPC CIDR associated later", func(t *testing.T) {
		vpc := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
		more := append(slices.Clone(vpc), netip.MustParsePrefix("198.51.100.0/24"))
		if changed, err := h2.SetVPCCIDRs(ctx, more); err != nil || !changed {
			t.Fatalf("SetVPCCIDRs: %v, %v", changed, err)
		}
		if changed, err := h2.SetVPCCIDRs(ctx, more); err != nil || changed {
			t.Fatalf("SetVPCCIDRs again: %v, %v; want no change", changed, err)
		}
		run(t, []flow{{"primary-ENI pod to the new VPC CIDR keeps its IP", n.podA, internet, podAIP}})
		if _, err := h2.SetVPCCIDRs(ctx, vpc); err != nil {
			t.Fatal(err)
		}
		run(t, []flow{{"disassociated, it is SNATed again", n.podA, internet, primaryIP}})
	})
}
