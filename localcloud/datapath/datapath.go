// Package datapath is localcloud's "VPC in a box": it mirrors EC2 state
// into the Linux kernel so that node agents run inside an instance as on
// EC2 and the kernel judges their work.
//
//   - each VPC with running instances is a router namespace berth-<vpc-id>,
//     linked to the host by a veth (bv<id>) so the host reaches every VPC
//     address;
//   - each running instance is a namespace berth-<instance-id>; each
//     attached ENI is a veth pair whose instance end is eth<device-index>
//     with the ENI's MAC, and whose router end (r<id>) carries the subnet
//     gateway address; eth0 gets the primary address and default route;
//   - the router delivers every assigned address and /28 prefix to the ENI
//     that owns it (static neighbour of the ENI's MAC) and, with
//     source/dest check on, drops what an ENI sends from an address it does
//     not own (nftables in the router namespace);
//   - with EgressNAT, the host masquerades what a VPC's addresses send past
//     the host (nftables table berth_nat_<vpc> on the host), as a NAT
//     gateway;
//   - inside an instance, 169.254.169.254:80 is that instance's IMDS and
//     169.254.169.254:4566 the localcloud API;
//   - an attached EBS volume is a loop device over a sparse file with the
//     /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id> link.
//
// Datapath implements ec2.Hooks: every hook (and a periodic reconcile)
// converges the kernel to the EC2 state, so it also recovers after a
// restart. Every object made is recorded in a registry with the owner's
// pid; a new run sweeps the objects of dead runs.
package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/localcloud/ec2"
)

// MetadataIP is where instances find IMDS and the API.
const MetadataIP = "169.254.169.254"

// VPCMTU is the MTU of ENIs and of the VPC fabric between them: jumbo
// frames, as in an AWS VPC (and what ipamd sets, AWS_VPC_ENI_MTU). Past
// the VPC (the uplink to the host) frames are 1500 bytes, and the router
// answers bigger ones with ICMP "fragmentation needed".
const VPCMTU = 9001

// Host and router ends of a VPC's uplink.
const (
	hostLinkIP   = "169.254.123.1"
	routerLinkIP = "169.254.123.2"
)

// ByIDDir holds the EBS device links.
const ByIDDir = "/dev/disk/by-id"

// Config configures the datapath.
type Config struct {
	StateDir    string
	RegistryDir string // default DefaultRegistryDir
	// IMDS serves an instance's metadata; API serves the localcloud API.
	IMDS func(instanceID string) http.Handler
	API  http.Handler
	// EgressNAT masquerades what a VPC's addresses send out of the host
	// (not to the host, not to another VPC) to the host's address on the
	// way out, as a NAT gateway does for private subnets: the network
	// beyond the host cannot route back to VPC addresses.
	EgressNAT bool
}

// Datapath mirrors EC2 state into namespaces, links and loop devices.
type Datapath struct {
	cfg Config
	log *slog.Logger
	ec2 *ec2.Service
	reg *registry

	mu      sync.Mutex
	routers map[string]*router   // by VPC ID
	insts   map[string]*instance // by instance ID
	enis    map[string]*eniLink  // by ENI ID
	vols    map[string]*volume   // by volume ID
	closed  bool
}

type router struct {
	vpc, name, hostLink string
	ns                  netns.NsHandle
	h                   *netlink.Handle
	routes              map[string]routeSpec
	neighs              map[string]string // ip -> mac
	nft                 string
	natTable, nat       string // the host's nft table of the VPC's NAT, and its last text
	hostIndex           int
	// cidrs maps each IPv4 block of the VPC the router serves to the
	// host's route to it (nil when another VPC's route overlaps it).
	cidrs map[string]*netlink.Route
}

type routeSpec struct {
	link string
	via  string // "" for on-link
}

type instance struct {
	id, name, vpc string
	ns            netns.NsHandle
	h             *netlink.Handle
	servers       []*http.Server
}

type eniLink struct {
	id, inst, vpc, routerIf string
}

type volume struct {
	id, dev, link, file string
	sizeGiB             int
}

// New sweeps leftovers of dead runs and returns a datapath for svc. Call
// svc.SetHooks(d) and go d.Run(ctx) to start it.
func New(cfg Config, svc *ec2.Service, log *slog.Logger) (*Datapath, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the VPC-in-a-box datapath needs root (namespaces, links, loop devices)")
	}
	if cfg.RegistryDir == "" {
		cfg.RegistryDir = DefaultRegistryDir
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("the datapath needs nft (apt install nftables): %w", err)
	}
	log = log.With("component", "datapath")
	reg, err := newRegistry(cfg.RegistryDir, log)
	if err != nil {
		return nil, err
	}
	if n := reg.sweep(); n > 0 {
		log.Info("removed leftovers of crashed runs", "objects", n)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "ebs"), 0o700); err != nil {
		return nil, fmt.Errorf("ebs dir: %w", err)
	}
	return &Datapath{cfg: cfg, log: log, ec2: svc, reg: reg, routers: map[string]*router{}, insts: map[string]*instance{},
		enis: map[string]*eniLink{}, vols: map[string]*volume{}}, nil
}

// Run reconciles once a second (source/dest check and volume size changes
// arrive without a hook) until ctx ends, then tears everything down.
func (d *Datapath) Run(ctx context.Context) {
	d.ec2.View(ctx, func(st *ec2.State) { d.sync(ctx, st, "") })
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.Close()
			return
		case <-t.C:
			d.ec2.View(ctx, func(st *ec2.State) { d.sync(ctx, st, "") })
		}
	}
}

// Close removes every namespace, link, loop device and device link made.
func (d *Datapath) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	for id := range d.vols {
		d.removeVolume(id)
	}
	for id := range d.insts {
		d.removeInstance(id)
	}
	for id := range d.enis {
		delete(d.enis, id)
	}
	for vpc := range d.routers {
		d.removeRouter(vpc)
	}
}

// name helpers: interface names are at most 15 bytes.
func shortID(id string) string {
	_, hexPart, _ := strings.Cut(id, "-")
	if len(hexPart) > 12 {
		hexPart = hexPart[:12]
	}
	return hexPart
}

func nsName(id string) string { return "berth-" + id }

// sync converges the kernel to st. skip names an instance that is being
// terminated (its state still says running while the hook runs).
func (d *Datapath) sync(ctx context.Context, st *ec2.State, skip string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	wantInst := map[string]*ec2.Instance{}
	wantVPC := map[string]bool{}
	for id, inst := range st.Instances {
		if inst.State == "running" && id != skip {
			wantInst[id] = inst
			wantVPC[inst.VPCID] = true
		}
	}
	wantENI := map[string]*ec2.ENI{}
	for id, e := range st.ENIs {
		if a := e.Attachment; a != nil && wantInst[a.InstanceID] != nil && a.Status != "attaching" {
			wantENI[id] = e
		}
	}
	// Remove first (frees names and addresses), then add.
	for id, l := range d.enis {
		if e := wantENI[id]; e == nil || e.Attachment.InstanceID != l.inst {
			d.removeENI(id)
		}
	}
	for id := range d.insts {
		if wantInst[id] == nil {
			d.removeInstance(id)
		}
	}
	for vpc := range d.routers {
		if !wantVPC[vpc] {
			d.removeRouter(vpc)
		}
	}
	for vpc := range wantVPC {
		if d.routers[vpc] == nil {
			if err := d.addRouter(st, vpc); err != nil {
				d.log.Error("create VPC router", "vpc", vpc, "err", err)
			}
		}
	}
	for id, inst := range wantInst {
		if d.insts[id] == nil && d.routers[inst.VPCID] != nil {
			if err := d.addInstance(inst); err != nil {
				d.log.Error("create instance namespace", "instance", id, "err", err)
			}
		}
	}
	ids := make([]string, 0, len(wantENI))
	for id := range wantENI {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		e := wantENI[id]
		if d.enis[id] == nil && d.insts[e.Attachment.InstanceID] != nil {
			if err := d.addENI(st, e); err != nil {
				d.log.Error("plug ENI", "eni", id, "err", err)
			}
		}
	}
	for vpc, r := range d.routers {
		if v := st.VPCs[vpc]; v != nil {
			d.syncCIDRs(v, r)
		}
		if err := d.syncRoutes(st, r, wantENI); err != nil {
			d.log.Error("router routes", "vpc", vpc, "err", err)
		}
	}
	d.syncVolumes(st, wantInst)
}

func (d *Datapath) addRouter(st *ec2.State, vpcID string) (err error) {
	vpc := st.VPCs[vpcID]
	if vpc == nil {
		return fmt.Errorf("vpc %s not in state", vpcID)
	}
	r := &router{vpc: vpcID, name: nsName(vpcID), hostLink: "bv" + shortID(vpcID), routes: map[string]routeSpec{}, neighs: map[string]string{},
		cidrs: map[string]*netlink.Route{}, natTable: "berth_nat_" + shortID(vpcID)}
	if r.ns, err = createNetns(r.name); err != nil {
		return err
	}
	if err := d.reg.add("netns", r.name, ""); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			r.ns.Close()
			_ = deleteNetns(r.name)
			d.reg.remove("netns", r.name)
		}
	}()
	if r.h, err = netlink.NewHandleAt(r.ns); err != nil {
		return fmt.Errorf("netlink handle in %s: %w", r.name, err)
	}
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/default/rp_filter": "0"} {
		if err := writeSysctl(r.ns, k, v); err != nil {
			return err
		}
	}
	if err := setUp(r.h, "lo"); err != nil {
		return err
	}
	// The uplink: host end bv<id>, router end "uplink".
	if old, lerr := netlink.LinkByName(r.hostLink); lerr == nil {
		_ = netlink.LinkDel(old)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: r.hostLink}, PeerName: "uplink", PeerNamespace: netlink.NsFd(int(r.ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create uplink %s: %w", r.hostLink, err)
	}
	if err := d.reg.add("link", r.hostLink, ""); err != nil {
		return err
	}
	host, err := netlink.LinkByName(r.hostLink)
	if err != nil {
		return fmt.Errorf("find %s: %w", r.hostLink, err)
	}
	if err := netlink.AddrReplace(host, &netlink.Addr{IPNet: hostNet(hostLinkIP)}); err != nil {
		return fmt.Errorf("address on %s: %w", r.hostLink, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("up %s: %w", r.hostLink, err)
	}
	up, err := r.h.LinkByName("uplink")
	if err != nil {
		return fmt.Errorf("find uplink in %s: %w", r.name, err)
	}
	if err := r.h.AddrReplace(up, &netlink.Addr{IPNet: hostNet(routerLinkIP)}); err != nil {
		return fmt.Errorf("address on uplink: %w", err)
	}
	if err := r.h.LinkSetUp(up); err != nil {
		return fmt.Errorf("up uplink: %w", err)
	}
	if err := r.h.RouteReplace(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: nil, Gw: net.ParseIP(hostLinkIP), Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		return fmt.Errorf("router default route: %w", err)
	}
	r.hostIndex = host.Attrs().Index
	d.syncCIDRs(vpc, r)
	d.routers[vpcID] = r
	return nil
}

// syncCIDRs routes the VPC's IPv4 blocks (the primary and those
// AssociateVpcCidrBlock added) as they are now: in the router a blackhole
// for the addresses no ENI holds, and on the host a route to each through
// the router. Another localcloud may already route an overlapping block:
// then that block is reachable only from the VPC's instances, which the
// log says, until that route goes (a failed host route is tried again at
// every sync).
func (d *Datapath) syncCIDRs(vpc *ec2.VPC, r *router) {
	want := map[string]bool{}
	for _, c := range vpc.IPv4CIDRs() {
		want[c] = true
	}
	for c, hr := range r.cidrs {
		if want[c] {
			continue
		}
		_, n, _ := net.ParseCIDR(c)
		if err := r.h.RouteDel(&netlink.Route{Dst: n, Type: unix.RTN_BLACKHOLE}); err != nil && !errors.Is(err, unix.ESRCH) {
			d.log.Warn("remove router blackhole", "vpc", r.vpc, "cidr", c, "err", err)
		}
		if hr != nil {
			if err := netlink.RouteDel(hr); err != nil && !errors.Is(err, unix.ESRCH) {
				d.log.Warn("remove host route to VPC block", "vpc", r.vpc, "cidr", c, "err", err)
			}
		}
		delete(r.cidrs, c)
	}
	for c := range want {
		hr, retry := r.cidrs[c] // retry: its host route failed before, overlapped
		if hr != nil {
			continue
		}
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			d.log.Error("VPC block", "vpc", r.vpc, "cidr", c, "err", err)
			continue
		}
		if err := r.h.RouteReplace(&netlink.Route{Dst: n, Type: unix.RTN_BLACKHOLE}); err != nil {
			d.log.Error("router blackhole", "vpc", r.vpc, "cidr", c, "err", err)
			continue
		}
		hr = &netlink.Route{LinkIndex: r.hostIndex, Dst: n, Gw: net.ParseIP(routerLinkIP), Flags: int(netlink.FLAG_ONLINK)}
		if err := netlink.RouteAdd(hr); err != nil {
			if !retry {
				d.log.Warn("host route to VPC block not added (overlapping CIDR?); retried each sync", "vpc", r.vpc, "cidr", c, "err", err)
			}
			hr = nil
		}
		r.cidrs[c] = hr
	}
	if d.cfg.EgressNAT {
		if err := d.applyNAT(r); err != nil {
			d.log.Error("VPC egress NAT", "vpc", r.vpc, "err", err)
		}
	}
}

// applyNAT replaces the VPC's NAT table on the host. Only what leaves
// through another link than a VPC uplink (bv*) is masqueraded: the host's
// own addresses and other VPCs see VPC addresses as they are.
func (d *Datapath) applyNAT(r *router) error {
	cidrs := slices.Sorted(maps.Keys(r.cidrs))
	text := fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", r.natTable)
	if len(cidrs) > 0 {
		text += fmt.Sprintf("table ip %s {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"+
			"\t\tip saddr { %s } oifname != \"bv*\" counter masquerade fully-random comment \"NAT gateway of %s\"\n\t}\n}\n",
			r.natTable, strings.Join(cidrs, ", "), r.vpc)
	}
	if text == r.nat {
		return nil
	}
	if err := hostForwarding(d.log); err != nil {
		return err
	}
	if r.nat == "" {
		if err := d.reg.add("nft", r.natTable, ""); err != nil {
			return err
		}
	}
	if err := nft(text); err != nil {
		return err
	}
	r.nat = text
	return nil
}

// hostForwarding turns on the host's IPv4 forwarding, without which the
// host is no gateway: as a container runtime does, and left on at exit
// (others may rely on it by then).
func hostForwarding(log *slog.Logger) error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("host forwarding: %w", err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("host forwarding: %w", err)
	}
	log.Info("turned on the host's IPv4 forwarding for VPC egress (--egress-nat)")
	return nil
}

// nft applies a ruleset in the host's network namespace.
func nft(text string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (d *Datapath) removeRouter(vpcID string) {
	r := d.routers[vpcID]
	if r == nil {
		return
	}
	if l, err := netlink.LinkByName(r.hostLink); err == nil {
		_ = netlink.LinkDel(l) // takes the host route with it
	}
	d.reg.remove("link", r.hostLink)
	if r.nat != "" {
		if err := nft(fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", r.natTable)); err != nil {
			d.log.Error("remove VPC egress NAT", "vpc", vpcID, "err", err)
		}
		d.reg.remove("nft", r.natTable)
	}
	if r.h != nil {
		r.h.Close()
	}
	r.ns.Close()
	if err := deleteNetns(r.name); err != nil {
		d.log.Error("delete router namespace", "vpc", vpcID, "err", err)
	}
	d.reg.remove("netns", r.name)
	delete(d.routers, vpcID)
}

func hostNet(ip string) *net.IPNet {
	return &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(32, 32)}
}

func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	return nil
}

func (d *Datapath) addInstance(inst *ec2.Instance) (err error) {
	in := &instance{id: inst.ID, name: nsName(inst.ID), vpc: inst.VPCID}
	if in.ns, err = createNetns(in.name); err != nil {
		return err
	}
	if err := d.reg.add("netns", in.name, ""); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for _, s := range in.servers {
				_ = s.Close()
			}
			in.ns.Close()
			_ = deleteNetns(in.name)
			d.reg.remove("netns", in.name)
		}
	}()
	if in.h, err = netlink.NewHandleAt(in.ns); err != nil {
		return fmt.Errorf("netlink handle in %s: %w", in.name, err)
	}
	lo, err := in.h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := in.h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("up lo: %w", err)
	}
	if err := in.h.AddrReplace(lo, &netlink.Addr{IPNet: hostNet(MetadataIP)}); err != nil {
		return fmt.Errorf("metadata address: %w", err)
	}
	for _, svc := range []struct {
		port string
		h    http.Handler
	}{{"80", d.cfg.IMDS(inst.ID)}, {"4566", d.cfg.API}} {
		if svc.h == nil {
			continue
		}
		ln, err := listenIn(in.ns, net.JoinHostPort(MetadataIP, svc.port))
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: svc.h, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("instance listener", "instance", inst.ID, "port", svc.port, "err", err)
			}
		}()
		in.servers = append(in.servers, hs)
	}
	d.insts[inst.ID] = in
	return nil
}

func (d *Datapath) removeInstance(id string) {
	in := d.insts[id]
	if in == nil {
		return
	}
	for eid, l := range d.enis {
		if l.inst == id {
			d.removeENI(eid)
		}
	}
	for _, s := range in.servers {
		_ = s.Close()
	}
	if in.h != nil {
		in.h.Close()
	}
	in.ns.Close()
	if err := deleteNetns(in.name); err != nil {
		d.log.Error("delete instance namespace", "instance", id, "err", err)
	}
	d.reg.remove("netns", in.name)
	delete(d.insts, id)
}

func gatewayOf(cidr string) (netip.Addr, int, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return p.Masked().Addr().Next(), p.Bits(), nil
}

func (d *Datapath) addENI(st *ec2.State, e *ec2.ENI) (err error) {
	a := e.Attachment
	in := d.insts[a.InstanceID]
	r := d.routers[in.vpc]
	sub := st.Subnets[e.SubnetID]
	if r == nil || sub == nil {
		return fmt.Errorf("eni %s: router or subnet missing", e.ID)
	}
	gw, bits, err := gatewayOf(sub.CIDR)
	if err != nil {
		return fmt.Errorf("subnet %s: %w", sub.ID, err)
	}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return fmt.Errorf("eni %s mac: %w", e.ID, err)
	}
	routerIf := "r" + shortID(e.ID)
	ifname := "eth" + strconv.Itoa(a.DeviceIndex)
	if a.NetworkCardIndex > 0 {
		ifname = fmt.Sprintf("eth%d", a.NetworkCardIndex*100+a.DeviceIndex)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: routerIf, MTU: VPCMTU}, PeerName: ifname, PeerHardwareAddr: mac,
		PeerNamespace: netlink.NsFd(int(in.ns)), PeerMTU: VPCMTU}
	if err := r.h.LinkAdd(veth); err != nil {
		return fmt.Errorf("plug %s as %s of %s: %w", e.ID, ifname, in.id, err)
	}
	defer func() {
		if err != nil {
			if l, lerr := r.h.LinkByName(routerIf); lerr == nil {
				_ = r.h.LinkDel(l)
			}
		}
	}()
	rl, err := r.h.LinkByName(routerIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", routerIf, err)
	}
	if err := r.h.AddrReplace(rl, &netlink.Addr{IPNet: hostNet(gw.String())}); err != nil {
		return fmt.Errorf("gateway address on %s: %w", routerIf, err)
	}
	// Instances ARP for subnet neighbours on-link; the VPC fabric answers
	// for every assigned address, which proxy ARP on the router end does
	// (at once: proxy_delay 0). Unassigned addresses hit the VPC's
	// blackhole route and get no answer.
	for k, v := range map[string]string{"net/ipv4/conf/" + routerIf + "/proxy_arp": "1", "net/ipv4/neigh/" + routerIf + "/proxy_delay": "0"} {
		if err := writeSysctl(r.ns, k, v); err != nil {
			return err
		}
	}
	if err := r.h.LinkSetUp(rl); err != nil {
		return fmt.Errorf("up %s: %w", routerIf, err)
	}
	il, err := in.h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, in.name, err)
	}
	if err := in.h.LinkSetUp(il); err != nil {
		return fmt.Errorf("up %s: %w", ifname, err)
	}
	// The primary ENI comes up configured, as EC2's DHCP does; secondary
	// ENIs are left to the node agent (ipamd), as on EKS nodes.
	if a.DeviceIndex == 0 && a.NetworkCardIndex == 0 && len(e.PrivateIPs) > 0 {
		ip := net.ParseIP(e.PrivateIPs[0].Address).To4()
		if err := in.h.AddrReplace(il, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, 32)}}); err != nil {
			return fmt.Errorf("address %s on %s: %w", ip, ifname, err)
		}
		if err := in.h.RouteReplace(&netlink.Route{LinkIndex: il.Attrs().Index, Gw: net.ParseIP(gw.String())}); err != nil {
			return fmt.Errorf("default route of %s: %w", in.id, err)
		}
	}
	d.enis[e.ID] = &eniLink{id: e.ID, inst: in.id, vpc: in.vpc, routerIf: routerIf}
	return nil
}

func (d *Datapath) removeENI(id string) {
	l := d.enis[id]
	if l == nil {
		return
	}
	if r := d.routers[l.vpc]; r != nil {
		if link, err := r.h.LinkByName(l.routerIf); err == nil {
			if err := r.h.LinkDel(link); err != nil {
				d.log.Error("unplug ENI", "eni", id, "err", err)
			}
		}
		// Routes through the link went with it.
		for dst, spec := range r.routes {
			if spec.link == l.routerIf {
				delete(r.routes, dst)
			}
		}
		for ip, link := range r.neighs {
			if link == l.routerIf {
				delete(r.neighs, ip)
			}
		}
	}
	delete(d.enis, id)
}

// syncRoutes converges a router's routes, neighbours and source check.
func (d *Datapath) syncRoutes(st *ec2.State, r *router, want map[string]*ec2.ENI) error {
	routes := map[string]routeSpec{}
	neighs := map[string]string{}
	macs := map[string]string{}
	var allowed []string
	var unchecked []string
	for id, l := range d.enis {
		if l.vpc != r.vpc {
			continue
		}
		e := want[id]
		if e == nil || len(e.PrivateIPs) == 0 {
			continue
		}
		primary := e.PrivateIPs[0].Address
		for _, ip := range e.PrivateIPs {
			if ip.Primary {
				primary = ip.Address
			}
		}
		neighs[primary] = l.routerIf
		macs[primary] = e.MAC
		for _, ip := range e.PrivateIPs {
			spec := routeSpec{link: l.routerIf, via: primary}
			if ip.Address == primary {
				spec.via = ""
			}
			routes[ip.Address+"/32"] = spec
			allowed = append(allowed, fmt.Sprintf("%q . %s", l.routerIf, ip.Address))
		}
		for _, p := range e.IPv4Prefixes {
			routes[p] = routeSpec{link: l.routerIf, via: primary}
			allowed = append(allowed, fmt.Sprintf("%q . %s", l.routerIf, p))
		}
		if !e.SourceDestCheck {
			unchecked = append(unchecked, strconv.Quote(l.routerIf))
		}
	}
	var errs []error
	for ip, link := range neighs {
		if r.neighs[ip] == link {
			continue
		}
		rl, err := r.h.LinkByName(link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mac, _ := net.ParseMAC(macs[ip])
		if err := r.h.NeighSet(&netlink.Neigh{LinkIndex: rl.Attrs().Index, IP: net.ParseIP(ip), HardwareAddr: mac, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s: %w", ip, err))
			continue
		}
		r.neighs[ip] = link
	}
	// Primary (on-link) routes first, so the "via primary" ones resolve.
	dsts := make([]string, 0, len(routes))
	for dst := range routes {
		dsts = append(dsts, dst)
	}
	sort.Slice(dsts, func(i, j int) bool {
		a, b := routes[dsts[i]], routes[dsts[j]]
		if (a.via == "") != (b.via == "") {
			return a.via == ""
		}
		return dsts[i] < dsts[j]
	})
	for _, dst := range dsts {
		spec := routes[dst]
		if old, ok := r.routes[dst]; ok && old == spec {
			continue
		}
		rl, err := r.h.LinkByName(spec.link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, ipn, _ := net.ParseCIDR(dst)
		rt := &netlink.Route{LinkIndex: rl.Attrs().Index, Dst: ipn, Scope: netlink.SCOPE_LINK}
		if spec.via != "" {
			rt.Gw, rt.Flags, rt.Scope = net.ParseIP(spec.via), int(netlink.FLAG_ONLINK), netlink.SCOPE_UNIVERSE
		}
		if err := r.h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", dst, err))
			continue
		}
		r.routes[dst] = spec
	}
	for dst := range r.routes {
		if _, ok := routes[dst]; ok {
			continue
		}
		_, ipn, _ := net.ParseCIDR(dst)
		if err := r.h.RouteDel(&netlink.Route{Dst: ipn}); err != nil && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such process") {
			errs = append(errs, fmt.Errorf("delete route %s: %w", dst, err))
		}
		delete(r.routes, dst)
	}
	for ip, link := range r.neighs {
		if neighs[ip] != link {
			delete(r.neighs, ip) // went with its link or moved
		}
	}
	slices.Sort(allowed)
	slices.Sort(unchecked)
	if err := r.applyNft(allowed, unchecked); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applyNft replaces the router's source-check table atomically.
func (r *router) applyNft(allowed, unchecked []string) error {
	var b strings.Builder
	b.WriteString("table ip berth\ndelete table ip berth\ntable ip berth {\n")
	b.WriteString("\tset allowed {\n\t\ttype ifname . ipv4_addr\n\t\tflags interval\n")
	if len(allowed) > 0 {
		b.WriteString("\t\telements = { " + strings.Join(allowed, ", ") + " }\n")
	}
	b.WriteString("\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	b.WriteString("\t\tiifname \"uplink\" accept\n")
	if len(unchecked) > 0 {
		b.WriteString("\t\tiifname { " + strings.Join(unchecked, ", ") + " } accept\n")
	}
	b.WriteString("\t\tiifname . ip saddr @allowed accept\n\t\tcounter drop comment \"source/dest check\"\n\t}\n}\n")
	text := b.String()
	if text == r.nft {
		return nil
	}
	cmd := exec.Command("nsenter", "--net="+filepath.Join(netnsDir, r.name), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", r.name, err, out)
	}
	r.nft = text
	return nil
}

// volumeFile is the sparse file behind a volume.
func (d *Datapath) volumeFile(id string) string {
	return filepath.Join(d.cfg.StateDir, "ebs", id+".img")
}

// ByIDLink is the device link EC2's NVMe driver gives a volume.
func ByIDLink(volumeID string) string {
	return filepath.Join(ByIDDir, "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(volumeID, "-", ""))
}

func (d *Datapath) syncVolumes(st *ec2.State, running map[string]*ec2.Instance) {
	want := map[string]*ec2.Volume{}
	for id, v := range st.Volumes {
		for _, a := range v.Attachments {
			if a.State != "attaching" && running[a.InstanceID] != nil {
				want[id] = v
			}
		}
	}
	for id := range d.vols {
		if want[id] == nil {
			d.removeVolume(id)
		}
	}
	for id, v := range want {
		cur := d.vols[id]
		if cur == nil {
			if err := d.addVolume(v); err != nil {
				d.log.Error("attach volume", "volume", id, "err", err)
			}
			continue
		}
		if v.SizeGiB > cur.sizeGiB {
			if err := os.Truncate(cur.file, int64(v.SizeGiB)<<30); err != nil {
				d.log.Error("grow volume", "volume", id, "err", err)
				continue
			}
			if err := loopResize(cur.dev); err != nil {
				d.log.Error("grow volume", "volume", id, "err", err)
				continue
			}
			cur.sizeGiB = v.SizeGiB
		}
	}
}

func (d *Datapath) addVolume(v *ec2.Volume) (err error) {
	file := d.volumeFile(v.ID)
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("volume file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < int64(v.SizeGiB)<<30 {
		err = f.Truncate(int64(v.SizeGiB) << 30) // sparse
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("size volume file: %w", err)
	}
	dev, err := loopAttach(file)
	if err != nil {
		return err
	}
	if err := d.reg.add("loop", dev, file); err != nil {
		_ = loopDetach(dev)
		return err
	}
	link := ByIDLink(v.ID)
	if err := os.MkdirAll(ByIDDir, 0o755); err != nil {
		return fmt.Errorf("by-id dir: %w", err)
	}
	_ = os.Remove(link)
	if err := os.Symlink(dev, link); err != nil {
		_ = loopDetach(dev)
		d.reg.remove("loop", dev)
		return fmt.Errorf("device link %s: %w", link, err)
	}
	if err := d.reg.add("symlink", link, ""); err != nil {
		return err
	}
	d.vols[v.ID] = &volume{id: v.ID, dev: dev, link: link, file: file, sizeGiB: v.SizeGiB}
	return nil
}

func (d *Datapath) removeVolume(id string) {
	v := d.vols[id]
	if v == nil {
		return
	}
	if err := os.Remove(v.link); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Error("remove device link", "volume", id, "err", err)
	}
	d.reg.remove("symlink", v.link)
	if err := loopDetach(v.dev); err != nil {
		d.log.Error("detach loop device", "volume", id, "err", err)
	}
	d.reg.remove("loop", v.dev)
	delete(d.vols, id)
}

// ---- ec2.Hooks: every hook converges the datapath to the state. ----

var _ ec2.Hooks = (*Datapath)(nil)

func (d *Datapath) InstanceRunning(ctx context.Context, _ *ec2.Instance, _ *ec2.ENI) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

func (d *Datapath) InstanceTerminated(ctx context.Context, inst *ec2.Instance) error {
	d.sync(ctx, d.ec2.LockedState(), inst.ID)
	return nil
}

func (d *Datapath) ENIAttached(ctx context.Context, _ *ec2.Instance, _ *ec2.ENI) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

func (d *Datapath) ENIDetached(ctx context.Context, _ string, _ *ec2.ENI) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

func (d *Datapath) AddressesChanged(ctx context.Context, _ *ec2.ENI) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

// TrunkChanged changes nothing: the datapath carries no VLANs (see
// localcloud/README.md), so a branch ENI's addresses are not delivered.
func (d *Datapath) TrunkChanged(context.Context, *ec2.ENI) error { return nil }

func (d *Datapath) VolumeAttached(ctx context.Context, _ *ec2.Volume, _ *ec2.VolumeAttachment) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

func (d *Datapath) VolumeDetached(ctx context.Context, _ *ec2.Volume, _ string) error {
	d.sync(ctx, d.ec2.LockedState(), "")
	return nil
}

// VolumeDeleted removes the volume's data file.
func (d *Datapath) VolumeDeleted(ctx context.Context, v *ec2.Volume) error {
	d.mu.Lock()
	d.removeVolume(v.ID)
	d.mu.Unlock()
	if err := os.Remove(d.volumeFile(v.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove volume file: %w", err)
	}
	return nil
}

// Namespace returns the netns name of an instance (for tests and tools).
func Namespace(instanceID string) string { return nsName(instanceID) }
