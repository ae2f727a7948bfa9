package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/cni-plugin/internal/rtnl"
	"github.com/berth-io/berth/internal/podroute"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/version"
)

// rpcTimeout bounds a call to ipamd, which itself waits up to 30 s for a
// warm address.
const rpcTimeout = 60 * time.Second

// delTimeout bounds a DEL's call to ipamd: the release waits for the
// attachment's ADD in flight and clears ANNOTATE_POD_IP's annotation (up to
// 10 s).
const delTimeout = 30 * time.Second

// tableInterface is the name prefix of the result's pseudo-interface that
// carries the VLAN (Mac, 0) and the ENI's device (Sandbox) for DEL without
// ipamd, as the VPC CNI's dummy interface does.
const tableInterface = "dummy"

// errPluginNotAvailable is CNI 1.1's STATUS code 50: "the plugin is not available".
const errPluginNotAvailable uint = 50

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
	multiNIC, err := conf.wantsMultiNIC()
	if err != nil {
		return err
	}
	// ipamd assigns the address and wires the pod in its own, warm process
	// (package podwire); the namespace goes to it as a descriptor.
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	// Connected first: ipamd accepts while the request is put together.
	c, err := podwire.Dial(ctx, conf.DatapathSocket)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", "ipamd is not reachable: "+err.Error())
	}
	defer c.Close()
	podNS, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	req := datapathAdd{ClientVersion: version.Version, ContainerID: args.ContainerID, IfName: args.IfName, NetworkName: conf.Name,
		PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME), PodInfraContainerID: string(k8s.K8S_POD_INFRA_CONTAINER_ID),
		Netns: args.Netns, VethPrefix: conf.VethPrefix, MTU: int32(conf.MTU), PolicyAgent: agentPresent(conf), MultiNIC: multiNIC}
	err = c.Send(datapathRequest(commandAdd, req.marshal()), podNS)
	unix.Close(podNS)
	// The log is opened while ipamd works.
	log := logger(conf)
	reply, err := receiveReply(c, err)
	if err == nil && reply.Phase == podwire.PhaseLinks {
		// The pod's veth is up without an address: the policy agent
		// attaches to it now, before any packet can pass.
		var agentErr string
		if perr := enforcePolicy(conf, req.PodName, req.PodNamespace, reply.NetworkPolicyMode, int32(1+len(reply.More))); perr != nil {
			agentErr = perr.Error()
		}
		reply, err = receiveReply(c, c.Send(datapathContinue(agentErr)))
	}
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", err.Error())
	}
	if e := reply.Error; e != nil {
		log.Error("ADD failed", "container", args.ContainerID, "code", e.Code, "msg", e.Msg, "details", e.Details)
		return types.NewError(uint(e.Code), e.Msg, e.Details)
	}
	ip := net.ParseIP(reply.IPv4Addr).To4()
	if reply.Phase != podwire.PhaseDone || ip == nil || !strings.HasPrefix(reply.HostVeth, conf.VethPrefix) {
		return types.NewError(types.ErrInternal, "ipamd answered without an address", fmt.Sprintf("%+v", reply))
	}
	result := &addResult{hostVeth: reply.HostVeth, hostMAC: reply.HostMAC, ifName: args.IfName, netns: args.Netns,
		tableIface: tableInterface + reply.HostVeth[len(conf.VethPrefix):], table: int(reply.RouteTableID), device: int(reply.DeviceNumber), ip: ip}
	for _, f := range reply.More {
		fip := net.ParseIP(f.IPv4Addr).To4()
		if fip == nil || !strings.HasPrefix(f.HostVeth, conf.VethPrefix) || f.PodIfName == "" {
			return types.NewError(types.ErrInternal, "ipamd answered without an address for a multi-NIC pod's interface", fmt.Sprintf("%+v", f))
		}
		result.more = append(result.more, moreIf{hostVeth: f.HostVeth, hostMAC: f.HostMAC, ifName: f.PodIfName, table: int(f.RouteTableID), ip: fip})
	}
	// ipamd keeps the pod's wiring only once told: a plugin that fails
	// after ipamd's answer, or is killed, leaves nothing behind.
	if err := c.Send(datapathContinue("")); err != nil {
		return types.NewError(types.ErrTryAgainLater, "failed to assign an IP address to the pod", "commit the ADD: "+err.Error())
	}
	log.Debug("ADD", "container", args.ContainerID, "ip", reply.IPv4Addr, "table", reply.RouteTableID, "veth", reply.HostVeth)
	return result.print(os.Stdout, cniVersion)
}

// openNetns opens the pod's network namespace, to pass to ipamd.
func openNetns(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, types.NewError(types.ErrInvalidNetNS, "invalid netns", fmt.Sprintf("open %s: %v", path, err))
	}
	return fd, nil
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
func enforcePolicy(conf *NetConf, podName, podNamespace, mode string, interfaces int32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := enforceNpToPod(ctx, conf.NPASocket, podName, podNamespace, mode, interfaces)
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
	hostName string
	ip       net.IP
	table    int
	more     []prevIf // a multi-NIC pod's other interfaces
}

// prevIf is one of a multi-NIC pod's interfaces besides the first, as
// prevResult has it: the pod's interface with the route table as its
// "mac", the host veth just before it.
type prevIf struct {
	hostName, podIf string
	ip              net.IP
	table           int
}

func fromPrev(conf *NetConf) (*prevState, error) {
	if conf.PrevResult == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("read prevResult: %w", err)
	}
	// The route table: the pod interface's "mac" (the VPC CNI's layout,
	// which berth writes too); else the dummy's, when it is not a VLAN's
	// 0 (berth before it took that layout); else from the dummy's device
	// number, as the VPC CNI derives it.
	st := &prevState{table: podroute.MainTable}
	podTable, dummyMac, device := -1, -1, -1
	for i, itf := range res.Interfaces {
		switch {
		case itf == nil:
		case strings.HasPrefix(itf.Name, tableInterface) && itf.Sandbox != "" && i >= 2:
			if n, err := strconv.Atoi(itf.Mac); err == nil {
				dummyMac = n
			}
			if n, err := strconv.Atoi(itf.Sandbox); err == nil {
				device = n
			}
		case itf.Sandbox == "" && st.hostName == "":
			st.hostName = itf.Name
		case itf.Sandbox != "" && podTable < 0:
			if n, err := strconv.Atoi(itf.Mac); err == nil {
				podTable = n
			}
		}
	}
	switch {
	case podTable > 0:
		st.table = podTable
	case dummyMac > 0:
		st.table = dummyMac
	case device > 0:
		st.table = device + 1
	}
	first := true
	for _, c := range res.IPs {
		if c == nil {
			continue
		}
		if first {
			st.ip, first = c.Address.IP.To4(), false
			continue
		}
		// Further addresses are a multi-NIC pod's, each naming its pod
		// interface, which follows its host veth.
		if c.Interface == nil || *c.Interface < 1 || *c.Interface >= len(res.Interfaces) {
			continue
		}
		pod, host := res.Interfaces[*c.Interface], res.Interfaces[*c.Interface-1]
		if pod == nil || host == nil {
			continue
		}
		table, err := strconv.Atoi(pod.Mac)
		if err != nil {
			continue
		}
		st.more = append(st.more, prevIf{hostName: host.Name, podIf: pod.Name, ip: c.Address.IP.To4(), table: table})
	}
	return st, nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, _, err := loadNetConfForDel(args.StdinData)
	if err != nil {
		return err
	}
	k8s, err := loadArgs(args.Args)
	if err != nil {
		return err
	}
	log := logger(conf)
	// ipamd releases the address and, under the attachment's lock, removes
	// the pod's rules and host route before (after, they may be another
	// pod's), and the veth that routed it when the namespace is gone. With
	// the namespace still there the runtime's deletion of it destroys the
	// pair: deleting it here would make every DEL wait ~16 ms on the kernel
	// for nothing.
	gone := !netnsExists(args.Netns)
	req := datapathDel{ClientVersion: version.Version, ContainerID: args.ContainerID, IfName: args.IfName, NetworkName: conf.Name,
		PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME),
		PodInfraContainerID: string(k8s.K8S_POD_INFRA_CONTAINER_ID), PodUID: string(k8s.K8S_POD_UID), NetnsGone: gone, Reason: "PodDeleted"}
	ctx, cancel := context.WithTimeout(context.Background(), delTimeout)
	reply, derr := callDatapath(ctx, conf.DatapathSocket, datapathRequest(commandDel, req.marshal()), -1)
	cancel()
	// The agent forgets the pod's policy state; DEL must succeed without it.
	if unix.Access(conf.NPASocket, unix.F_OK) == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := deletePodNp(ctx, conf.NPASocket, string(k8s.K8S_POD_NAME), string(k8s.K8S_POD_NAMESPACE)); err != nil {
			log.Warn("policy agent DeletePodNp failed", "err", err)
		}
		cancel()
	}
	switch {
	case derr == nil && reply.Error == nil:
		log.Debug("DEL", "container", args.ContainerID, "ip", reply.IPv4Addr, "netnsGone", gone)
		return nil
	case derr == nil || !ipamdDown(derr):
		// ipamd runs but did not release (or did not say so in time). What
		// prevResult names may be another pod's by now, so nothing is
		// touched here; ipamd releases the address, with its rules and
		// route, once the pod's veth is gone (its sweep of orphans). As the
		// VPC CNI does, the DEL succeeds: an error could keep the runtime
		// from cleaning the sandbox up.
		if derr == nil {
			derr = fmt.Errorf("%s: %s (code %d)", reply.Error.Msg, reply.Error.Details, reply.Error.Code)
		}
		log.Error("ipamd did not release the address; it will once the pod's veth is gone", "container", args.ContainerID, "err", derr)
		return nil
	}
	// ipamd is not running: prevResult says what to tear down, but not
	// when ipamd's checkpoint gives the address to another attachment (a
	// DEL retried after ipamd had released it, and the address given to a
	// new pod since, maybe a newer sandbox of this pod behind a veth of the
	// same name).
	log.Warn("ipamd is not running; tearing down from prevResult", "err", derr)
	prev, err := fromPrev(conf)
	if err != nil {
		log.Warn("DEL without a usable prevResult", "err", err)
	}
	if prev == nil || prev.ip == nil || heldByAnother(conf, args, prev.ip) {
		return nil
	}
	if err := rtnl.TeardownHost(prev.hostName, prev.ip, prev.table, gone); err != nil {
		log.Warn("teardown", "err", err)
	}
	for _, f := range prev.more {
		if err := rtnl.TeardownHost(f.hostName, f.ip, f.table, gone); err != nil {
			log.Warn("teardown", "interface", f.podIf, "err", err)
		}
	}
	return nil
}

// ipamdDown reports a dial error that means no ipamd is listening: no
// socket, or nobody accepting on it. A full listen queue is a busy ipamd.
func ipamdDown(err error) bool {
	return errors.Is(err, errNotDialed) && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED))
}

// errNotDialed marks a call that did not reach ipamd at all.
var errNotDialed = errors.New("ipamd is not reachable")

// callDatapath sends one command to ipamd's datapath socket, with the
// namespace descriptor fd unless it is negative, and reads the reply.
func callDatapath(ctx context.Context, socket string, req []byte, fd int) (*datapathReply, error) {
	c, err := podwire.Dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotDialed, err)
	}
	defer c.Close()
	var fds []int
	if fd >= 0 {
		fds = []int{fd}
	}
	return receiveReply(c, c.Send(req, fds...))
}

// heldByAnother reports whether ipamd's checkpoint gives ip to an
// attachment other than this one, or cannot tell (a checkpoint that cannot
// be read): then the address may be another pod's, and nothing is torn
// down. A missing checkpoint gives it to no one.
func heldByAnother(conf *NetConf, args *skel.CmdArgs, ip net.IP) bool {
	cp, err := readCheckpoint(conf.IPAMStateFile)
	if err != nil {
		return true
	}
	for _, a := range cp.Allocations {
		if net.ParseIP(a.IPv4).Equal(ip) && (a.NetworkName != conf.Name || a.ContainerID != args.ContainerID || a.IfName != args.IfName) {
			return true
		}
	}
	return false
}

func netnsExists(p string) bool {
	return p != "" && unix.Access(p, unix.F_OK) == nil
}

// cmdCheck has ipamd verify the pod's wiring against prevResult.
func cmdCheck(args *skel.CmdArgs) error {
	conf, _, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := fromPrev(conf)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "invalid prevResult", err.Error())
	}
	if prev == nil || prev.ip == nil || prev.hostName == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult with the pod's address and host interface", "")
	}
	podNS, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer unix.Close(podNS)
	req := datapathCheck{ClientVersion: version.Version, ContainerID: args.ContainerID, IfName: args.IfName, NetworkName: conf.Name,
		Netns: args.Netns, IPv4Addr: prev.ip.String(), HostVeth: prev.hostName, RouteTableID: int32(prev.table)}
	for _, f := range prev.more {
		req.More = append(req.More, datapathInterface{PodIfName: f.podIf, IPv4Addr: f.ip.String(), HostVeth: f.hostName, RouteTableID: int32(f.table)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := callDatapath(ctx, conf.DatapathSocket, datapathRequest(commandCheck, req.marshal()), podNS)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "CHECK failed", err.Error())
	}
	if e := reply.Error; e != nil {
		return types.NewError(uint(e.Code), e.Msg, e.Details)
	}
	return nil
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

// checkpoint is what DEL reads of ipamd's checkpoint when ipamd is down.
type checkpoint struct {
	Allocations []struct {
		NetworkName string `json:"networkName"`
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifName"`
		IPv4        string `json:"ipv4"`
	} `json:"allocations"`
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

// cmdGC has ipamd release the network's allocations the runtime no
// longer knows (not in cni.dev/valid-attachments), with their host side.
func cmdGC(args *skel.CmdArgs) error {
	conf, _, err := loadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	// The list is cni.dev/valid-attachments; the text of spec 1.1.0 also
	// names it cni.dev/attachments, which a runtime may send instead. With
	// neither there is no list: releasing everything would take every
	// pod's network.
	if conf.ValidAttachments == nil && conf.Attachments == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "GC needs the valid attachments",
			`neither "cni.dev/valid-attachments" nor "cni.dev/attachments" is set; nothing was released`)
	}
	req := datapathGC{ClientVersion: version.Version, NetworkName: conf.Name}
	for _, a := range append(conf.ValidAttachments, conf.Attachments...) {
		req.Valid = append(req.Valid, [2]string{a.ContainerID, a.IfName})
	}
	b := datapathRequest(commandGC, req.marshal())
	if len(b) > podwire.MaxRequest {
		return types.NewError(types.ErrInvalidNetworkConfig, "GC incomplete", fmt.Sprintf("%d valid attachments make a request of %d bytes, more than ipamd reads (%d)",
			len(req.Valid), len(b), podwire.MaxRequest))
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	reply, err := callDatapath(ctx, conf.DatapathSocket, b, -1)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "GC incomplete", err.Error())
	}
	if e := reply.Error; e != nil {
		return types.NewError(uint(e.Code), e.Msg, e.Details)
	}
	return nil
}
