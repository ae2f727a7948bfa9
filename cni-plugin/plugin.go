package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/cni-plugin/internal/early"
	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/version"
)

// rpcTimeout bounds a call to ipamd, which itself waits up to 30 s for a
// warm address.
const rpcTimeout = 60 * time.Second

// tableInterface is the name prefix of the result's pseudo-interface that
// carries the route table (Mac) and ENI device (Sandbox) for DEL without
// ipamd, as the VPC CNI's dummy interface does.
const tableInterface = "dummy"

// errPluginNotAvailable is CNI 1.1's STATUS code 50: "the plugin is not available".
const errPluginNotAvailable uint = 50

func logger(conf *NetConf) *slog.Logger {
	if conf.PluginLogFile == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// stderr is the runtime's to log; stdout carries the result.
	var w io.Writer = os.Stderr
	if conf.PluginLogFile != "stderr" {
		f, err := os.OpenFile(conf.PluginLogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		w = f
	}
	var level slog.Level // the VPC CNI's level names, any case; info otherwise
	if err := level.UnmarshalText([]byte(conf.PluginLogLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", "berth-cni")
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, cniVersion, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := badNetns(args.Netns); err != nil {
		return err
	}
	k8s, err := loadArgs(args.Args)
	if err != nil {
		return err
	}
	if k8s.K8S_POD_NAMESPACE == "" || k8s.K8S_POD_NAME == "" {
		// The host veth is named after the pod: without its name every
		// such pod would share one.
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", "K8S_POD_NAMESPACE and K8S_POD_NAME are required")
	}
	// ipamd assigns the address and wires the pod in its own, warm process
	// (package podwire); the namespace goes to it as a descriptor.
	podNS, err := unix.Open(args.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "invalid netns", fmt.Sprintf("open %s: %v", args.Netns, err))
	}
	req := datapathAdd{ClientVersion: version.Version, ContainerID: args.ContainerID, IfName: args.IfName, NetworkName: conf.Name,
		PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME), PodInfraContainerID: string(k8s.K8S_POD_INFRA_CONTAINER_ID),
		Netns: args.Netns, VethPrefix: conf.VethPrefix, MTU: int32(conf.MTU), PolicyAgent: agentPresent(conf)}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	c, err := podwire.Dial(ctx, conf.DatapathSocket)
	if err != nil {
		unix.Close(podNS)
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", "ipamd is not reachable: "+err.Error())
	}
	defer c.Close()
	err = c.Send(req.marshal(), podNS)
	unix.Close(podNS)
	reply, err := receiveReply(c, err)
	if err == nil && reply.Phase == podwire.PhaseLinks {
		// The pod's veth is up without an address: the policy agent
		// attaches to it now, before any packet can pass.
		var agentErr string
		if perr := enforcePolicy(conf, req.PodName, req.PodNamespace, reply.NetworkPolicyMode); perr != nil {
			agentErr = perr.Error()
		}
		reply, err = receiveReply(c, c.Send(datapathContinue(agentErr)))
	}
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", err.Error())
	}
	log := logger(conf)
	if e := reply.Error; e != nil {
		log.Error("ADD failed", "container", args.ContainerID, "code", e.Code, "msg", e.Msg, "details", e.Details)
		return types.NewError(uint(e.Code), e.Msg, e.Details)
	}
	ip := net.ParseIP(reply.IPv4Addr).To4()
	if reply.Phase != podwire.PhaseDone || ip == nil || !strings.HasPrefix(reply.HostVeth, conf.VethPrefix) {
		return types.NewError(types.ErrInternal, "ipamd answered without an address", fmt.Sprintf("%+v", reply))
	}
	result := &addResult{hostVeth: reply.HostVeth, hostMAC: reply.HostMAC, ifName: args.IfName, podMAC: reply.PodMAC, netns: args.Netns,
		tableIface: tableInterface + reply.HostVeth[len(conf.VethPrefix):], table: int(reply.RouteTableID), device: int(reply.DeviceNumber), ip: ip}
	// ipamd keeps the pod's wiring only once told: a plugin that fails
	// after ipamd's answer, or is killed, leaves nothing behind.
	if err := c.Send(datapathContinue("")); err != nil {
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", "commit the ADD: "+err.Error())
	}
	log.Debug("ADD", "container", args.ContainerID, "ip", reply.IPv4Addr, "table", reply.RouteTableID, "veth", reply.HostVeth)
	return result.print(os.Stdout, cniVersion)
}

// receiveReply reads ipamd's next reply, unless sending failed.
func receiveReply(c *podwire.Conn, sendErr error) (*datapathReply, error) {
	if sendErr != nil {
		return nil, sendErr
	}
	b, err := c.Recv()
	if err != nil {
		return nil, err
	}
	r, err := unmarshalDatapathReply(b)
	if err != nil {
		return nil, fmt.Errorf("decode ipamd's reply: %w", err)
	}
	return r, nil
}

// agentPresent reports whether the policy agent's socket exists.
func agentPresent(conf *NetConf) bool {
	// access(2), not os.Stat: nothing to allocate or convert, on every ADD.
	return unix.Access(conf.NPASocket, unix.F_OK) == nil
}

// enforcePolicy asks the policy agent to apply the pod's policies before
// the pod starts.
func enforcePolicy(conf *NetConf, podName, podNamespace, mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := enforceNpToPod(ctx, conf.NPASocket, podName, podNamespace, mode, 1)
	if err != nil {
		return fmt.Errorf("EnforceNpToPod: %w", err)
	}
	if !ok {
		return errors.New("the policy agent refused EnforceNpToPod")
	}
	return nil
}

// prevState is what DEL and CHECK read from prevResult.
type prevState struct {
	hostName, ifName string
	hostMAC          string
	ip               net.IP
	table            int
}

func fromPrev(conf *NetConf) (*prevState, error) {
	if conf.PrevResult == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("read prevResult: %w", err)
	}
	st := &prevState{table: podnet.MainTable}
	for i, itf := range res.Interfaces {
		switch {
		case itf == nil:
		case strings.HasPrefix(itf.Name, tableInterface) && itf.Sandbox != "" && i >= 2:
			if t, err := strconv.Atoi(itf.Mac); err == nil {
				st.table = t
			}
		case itf.Sandbox == "" && st.hostName == "":
			st.hostName, st.hostMAC = itf.Name, itf.Mac
		case itf.Sandbox != "" && st.ifName == "":
			st.ifName = itf.Name
		}
	}
	for _, c := range res.IPs {
		if c != nil {
			st.ip = c.Address.IP.To4()
			break
		}
	}
	return st, nil
}

func cmdDel(args *skel.CmdArgs) error {
	early.GrowStack()
	conf, _, err := loadNetConfForDel(args.StdinData)
	if err != nil {
		return err
	}
	k8s, err := loadArgs(args.Args)
	if err != nil {
		return err
	}
	log := logger(conf)
	prev, err := fromPrev(conf)
	if err != nil {
		log.Warn("DEL without a usable prevResult", "err", err)
	}
	// The host veth is prevResult's; without it, whichever veth routes the
	// address (the plugin does not hash pod names: see internal/vethprefix).
	hostName := ""
	var ip net.IP
	table := podnet.MainTable
	if prev != nil {
		ip, table = prev.ip, prev.table
		if prev.hostName != "" {
			hostName = prev.hostName
		}
	}
	// The pod's veth, found while the address is still the pod's: ipamd
	// removes its host route before it releases the address, and then the
	// route can no longer tell which veth was the pod's.
	prevIP := ip
	veth, route, verr := podnet.HostRoute(hostName, ip)
	if verr != nil {
		log.Warn("find the pod's veth", "err", verr)
	}
	if route == nil {
		// A veth of prevResult's name that does not route the address is
		// a newer sandbox's, of the same pod.
		veth = nil
	}
	// Ask ipamd to release; it tells which address it was, and removes the
	// pod's rules and host route before it releases it (after, they may be
	// another pod's). Only when ipamd is down does prevResult tell what to
	// tear down: an address ipamd no longer holds for this attachment may
	// be another pod's by now.
	answered := false
	{
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reply, rerr := delNetwork(ctx, conf.IPAMDSocket, &delNetworkRequest{ClientVersion: version.Version,
			PodName: string(k8s.K8S_POD_NAME), PodNamespace: string(k8s.K8S_POD_NAMESPACE),
			PodInfraContainerID: string(k8s.K8S_POD_INFRA_CONTAINER_ID), PodUID: string(k8s.K8S_POD_UID),
			ContainerID: args.ContainerID, IfName: args.IfName, NetworkName: conf.Name, Reason: "PodDeleted"})
		cancel()
		if rerr != nil {
			log.Warn("ipamd DelNetwork failed; tearing down from prevResult", "err", rerr)
		} else {
			answered = true
			ip, table = released(reply)
		}
	}
	// The agent forgets the pod's policy state; DEL must succeed without it.
	if _, err := os.Stat(conf.NPASocket); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := deletePodNp(ctx, conf.NPASocket, string(k8s.K8S_POD_NAME), string(k8s.K8S_POD_NAMESPACE)); err != nil {
			log.Warn("policy agent DeletePodNp failed", "err", err)
		}
		cancel()
	}
	// Keep the veth when the pod's namespace is still there: the runtime
	// deletes the namespace next, and the pair with it.
	// With ipamd down the rules go too, unless ipamd's checkpoint says the
	// address is another attachment's now (a DEL retried after ipamd had
	// released it, and the address given to a new pod since).
	var terr error
	switch {
	case answered:
		// Only the veth of the address ipamd released for this attachment:
		// prevResult's may be a newer sandbox's, of the same pod.
		if ip != nil && ip.Equal(prevIP) && !netnsExists(args.Netns) {
			terr = podnet.DeleteLink(veth)
		}
	case heldByAnother(conf, args, ip):
		// The address, its rules and its route are another attachment's
		// now, maybe a newer sandbox of the same pod behind a veth of the
		// same name: nothing here is this DEL's to remove.
	default:
		terr = podnet.TeardownHost(hostName, ip, table, !netnsExists(args.Netns))
	}
	if terr != nil {
		log.Warn("teardown", "err", terr)
	}
	return nil
}

// heldByAnother reports whether ipamd's checkpoint gives ip to an
// attachment other than this one.
func heldByAnother(conf *NetConf, args *skel.CmdArgs, ip net.IP) bool {
	if ip == nil {
		return false
	}
	cp, err := readCheckpoint(conf.IPAMStateFile)
	if err != nil {
		return false
	}
	for _, a := range cp.Allocations {
		if net.ParseIP(a.IPv4).Equal(ip) && (a.NetworkName != conf.Name || a.ContainerID != args.ContainerID || a.IfName != args.IfName) {
			return true
		}
	}
	return false
}

// released is the address ipamd released (nil when it held none for the
// attachment) and its route table.
func released(reply *networkReply) (net.IP, int) {
	for _, m := range reply.Allocations {
		if a := net.ParseIP(m.IPv4Addr).To4(); a != nil {
			return a, int(m.RouteTableID)
		}
	}
	return nil, podnet.MainTable
}

func netnsExists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}

func cmdCheck(args *skel.CmdArgs) error {
	early.GrowStack()
	conf, _, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := fromPrev(conf)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "invalid prevResult", err.Error())
	}
	if prev == nil || prev.ip == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult with the pod's address", "")
	}
	fail := func(format string, a ...any) error {
		return types.NewError(types.ErrInternal, "CHECK failed", fmt.Sprintf(format, a...))
	}
	host, err := netlink.LinkByName(prev.hostName)
	if err != nil {
		return fail("host veth %s: %v", prev.hostName, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: podnet.HostNet(prev.ip), Table: podnet.MainTable}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil || len(routes) == 0 || routes[0].LinkIndex != host.Attrs().Index {
		return fail("no host route %s dev %s", prev.ip, prev.hostName)
	}
	rules, err := netlink.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fail("list rules: %v", err)
	}
	found := false
	for _, r := range rules {
		if r.Priority == podnet.ToPodPriority && r.Dst != nil && r.Dst.IP.Equal(prev.ip) {
			found = true
		}
	}
	if !found {
		return fail("no rule 'to %s lookup main' (priority %d)", prev.ip, podnet.ToPodPriority)
	}
	if prev.table != podnet.MainTable {
		found = false
		for _, r := range rules {
			found = found || (r.Priority == podnet.FromPodPriority && r.Src != nil && r.Src.IP.Equal(prev.ip) && r.Table == prev.table)
		}
		if !found {
			return fail("no rule 'from %s lookup %d' (priority %d)", prev.ip, prev.table, podnet.FromPodPriority)
		}
	}
	// The address must still be the attachment's in ipamd.
	cp, err := readCheckpoint(conf.IPAMStateFile)
	if err != nil {
		return fail("%v", err)
	}
	if a := cp.find(conf.Name, args.ContainerID, args.IfName); a == nil || !net.ParseIP(a.IPv4).Equal(prev.ip) {
		return fail("ipamd holds no %s for container %s, interface %s", prev.ip, args.ContainerID, args.IfName)
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "invalid netns", fmt.Sprintf("%s: %v", args.Netns, err))
	}
	defer podNS.Close()
	return podNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fail("pod interface %s: %v", args.IfName, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fail("pod addresses: %v", err)
		}
		ok := false
		for _, a := range addrs {
			ok = ok || (a.IP.Equal(prev.ip) && a.Mask.String() == net.CIDRMask(32, 32).String())
		}
		if !ok {
			return fail("pod %s has no %s/32", args.IfName, prev.ip)
		}
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return fail("pod routes: %v", err)
		}
		def := false
		for _, r := range rs {
			def = def || ((r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(podnet.Gateway))
		}
		if !def {
			return fail("pod has no default route via %s", podnet.Gateway)
		}
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return fail("pod neighbours: %v", err)
		}
		for _, n := range ns {
			if n.IP.Equal(podnet.Gateway) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == host.Attrs().HardwareAddr.String() {
				return nil
			}
		}
		return fail("pod has no permanent neighbour %s -> %s", podnet.Gateway, host.Attrs().HardwareAddr)
	})
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, _, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	serving, err := healthServing(ctx, conf.IPAMDSocket)
	if err != nil || !serving {
		msg := "not serving"
		if err != nil {
			msg = err.Error()
		}
		return types.NewError(errPluginNotAvailable, "ipamd is not ready", msg)
	}
	// ADD goes to the datapath socket: a conflist that names one ipamd
	// does not serve cannot add a pod.
	if err := unix.Access(conf.DatapathSocket, unix.F_OK); err != nil {
		return types.NewError(errPluginNotAvailable, "ipamd is not ready", fmt.Sprintf("datapath socket %s: %v", conf.DatapathSocket, err))
	}
	return nil
}

// checkpoint is what GC and CHECK read of ipamd's checkpoint.
type checkpoint struct {
	Version     string             `json:"version"`
	Allocations []checkpointRecord `json:"allocations"`
}

type checkpointRecord struct {
	NetworkName string `json:"networkName"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	IPv4        string `json:"ipv4"`
	Metadata    struct {
		PodNamespace string `json:"k8sPodNamespace"`
		PodName      string `json:"k8sPodName"`
	} `json:"metadata"`
}

// readCheckpoint reads ipamd's checkpoint; a missing one is empty (no
// allocation yet).
func readCheckpoint(path string) (*checkpoint, error) {
	cp := &checkpoint{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cp, nil
	}
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, "read the ipamd checkpoint", err.Error())
	}
	if err := json.Unmarshal(b, cp); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode the ipamd checkpoint", err.Error())
	}
	return cp, nil
}

// find is the attachment's record, or nil.
func (cp *checkpoint) find(network, containerID, ifName string) *checkpointRecord {
	for i := range cp.Allocations {
		if a := &cp.Allocations[i]; a.NetworkName == network && a.ContainerID == containerID && a.IfName == ifName {
			return a
		}
	}
	return nil
}

// cmdGC releases allocations of this network that the runtime no longer
// knows (not in cni.dev/valid-attachments).
func cmdGC(args *skel.CmdArgs) error {
	early.GrowStack()
	conf, _, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	cp, err := readCheckpoint(conf.IPAMStateFile)
	if err != nil {
		return err
	}
	valid := map[[2]string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
	}
	var errs []error
	for _, a := range cp.Allocations {
		if a.NetworkName != conf.Name || valid[[2]string{a.ContainerID, a.IfName}] {
			continue
		}
		// The veth that routes the address now, looked up before the
		// release (ipamd then removes the rules and host route, and the
		// route can no longer tell), and deleted only if ipamd released
		// that very address for the attachment: the checkpoint read above
		// may be older than ipamd's state.
		ip := net.ParseIP(a.IPv4)
		veth, _, err := podnet.HostRoute("", ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reply, err := delNetwork(ctx, conf.IPAMDSocket, &delNetworkRequest{ClientVersion: version.Version, ContainerID: a.ContainerID,
			IfName: a.IfName, NetworkName: a.NetworkName, PodName: a.Metadata.PodName, PodNamespace: a.Metadata.PodNamespace, Reason: "GC"})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", a.IPv4, err))
			continue
		}
		if got, _ := released(reply); got == nil || !got.Equal(ip) {
			continue
		}
		if err := podnet.DeleteLink(veth); err != nil {
			errs = append(errs, fmt.Errorf("delete the veth of %s: %w", a.IPv4, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrTryAgainLater, "GC incomplete", err.Error())
	}
	return nil
}
