package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/berth-io/berth/internal/podnet"
	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/internal/vethprefix"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/hostnet"
	"github.com/berth-io/berth/proto/datapath"
)

// CNI error codes of the datapath replies (the CNI library's, as the
// plugin prints them).
const (
	cniErrInvalidNetNS     = uint32(types.ErrInvalidNetNS) // 8
	cniErrInvalidEnv       = uint32(types.ErrInvalidEnvironmentVariables)
	cniErrDecodingFailure  = uint32(types.ErrDecodingFailure)
	cniErrInvalidConfig    = uint32(types.ErrInvalidNetworkConfig)
	cniErrTryAgainLater    = uint32(types.ErrTryAgainLater)
	cniErrUnsupportedField = uint32(types.ErrUnsupportedField)
	cniErrInternal         = uint32(types.ErrInternal)
)

// requestTimeout bounds the wait for the request after a connection.
const requestTimeout = 10 * time.Second

// turnTimeout bounds the wait for the plugin's word after a reply (the
// policy agent's outcome, the commit). A plugin that is gone hangs up
// sooner; this is for one that is stuck.
const turnTimeout = 2 * time.Minute

// ServeDatapath answers berth-cni's commands on ln (see package podwire) until
// ln is closed, and returns once the commands in flight have ended (ADD's undo
// and checkpoint included); ctx ending cancels those. hostNS is the node's
// namespace, where host veths go.
func (s *Server) ServeDatapath(ctx context.Context, ln *net.UnixListener, hostNS netns.NsHandle) error {
	// ipamd's own namespace, where a thread that opened a socket in a pod's
	// namespace goes back to (hostNS in ipamd; not in the tests).
	home, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open ipamd's network namespace: %w", err)
	}
	defer home.Close()
	handles := &handlePool{ns: hostNS, home: home, free: make(chan *netlink.Handle, 8)}
	defer handles.close()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !transientAccept(err) {
				return fmt.Errorf("accept on the datapath socket: %w", err)
			}
			// Out of descriptors or memory for a moment: the socket must
			// not stop serving for good.
			s.log.Warn("accept on the datapath socket", "err", err, "retry", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		inflight.Go(func() { s.handleConn(ctx, c, handles) })
	}
}

// transientAccept reports an accept error that passes: descriptors or
// memory short, a connection aborted before it was accepted.
func transientAccept(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handleConn serves one command of berth-cni.
func (s *Server) handleConn(ctx context.Context, c *net.UnixConn, handles *handlePool) {
	defer c.Close()
	req, podNS, rerr := readRequest(c)
	if podNS >= 0 {
		defer unix.Close(podNS)
	}
	if rerr == errHungUp {
		return
	}
	if rerr != nil {
		s.log.Warn("bad request on the datapath socket", "err", rerr)
		_ = sendMsg(c, &datapath.Reply{Error: rerr})
		return
	}
	if add, ok := req.Command.(*datapath.Request_Add); ok {
		s.handleAdd(ctx, c, add.Add, podNS, handles)
		return
	}
	// The other commands send nothing after the request. A plugin that
	// hangs up has given up (and reported a failure the runtime retries):
	// its command must not wait for an attachment's lock and then run after
	// a later ADD of that attachment. Once the lock is held it runs to the
	// end.
	waiting, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer stop()
		var b [1]byte
		_, _ = c.Read(b[:])
	}()
	var reply *datapath.Reply
	switch cmd := req.Command.(type) {
	case *datapath.Request_Del:
		reply = s.delPod(ctx, waiting, cmd.Del)
	case *datapath.Request_Check:
		reply = s.checkPod(waiting, cmd.Check, netns.NsHandle(podNS), handles)
	case *datapath.Request_Gc:
		reply = s.gcPods(ctx, waiting, cmd.Gc)
	}
	_ = sendMsg(c, reply)
}

// handleAdd serves one ADD. The connection's end cancels the work: a
// plugin that is gone (killed at the runtime's timeout, or failed after
// ipamd's answer, before its commit) gets nothing wired and holds no
// address.
func (s *Server) handleAdd(parent context.Context, c *net.UnixConn, req *datapath.AddRequest, podNS int, handles *handlePool) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// The plugin sends only Continues next, one per reply that is not an
	// error, and then hangs up. The channel closes after the last of them,
	// so a commit that arrives with the hang-up is still read as a commit.
	cont := make(chan *datapath.Continue, 2)
	go func() {
		defer cancel()
		defer close(cont)
		buf := make([]byte, podwire.MaxMessage)
		for {
			n, err := c.Read(buf)
			if err != nil || n == 0 {
				return
			}
			m := &datapath.Continue{}
			if err := proto.Unmarshal(buf[:n], m); err != nil {
				m.Error = "undecodable Continue: " + err.Error()
			}
			select {
			case cont <- m:
			default: // more than the exchange has turns: not read
			}
		}
	}()
	s.addPod(ctx, req, netns.NsHandle(podNS), handles, func(r *datapath.Reply) (*datapath.Continue, error) {
		if err := sendMsg(c, r); err != nil {
			return nil, err
		}
		m, err := nextWord(parent, cont, turnTimeout)
		if err != nil {
			// ipamd gives up on the plugin (it stops, or no word came in
			// time) and will undo the ADD. The plugin must not take the
			// commit it may be sending now for a success: shut its sends
			// off first (they fail with EPIPE from here on), then read
			// what it sent before, which still counts.
			_ = c.CloseRead()
			if late, ok := <-cont; ok {
				return late, nil
			}
		}
		return m, err
	}, func(r *datapath.Reply) error { return sendMsg(c, r) })
}

// nextWord waits for the plugin's next Continue; a closed cont is the
// plugin's hang-up, once every message before it has been read. ctx is
// ipamd's shutdown: a Continue already there is still taken.
func nextWord(ctx context.Context, cont <-chan *datapath.Continue, timeout time.Duration) (*datapath.Continue, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	word := func(m *datapath.Continue, ok bool) (*datapath.Continue, error) {
		if !ok {
			return nil, errors.New("berth-cni hung up")
		}
		return m, nil
	}
	select {
	case m, ok := <-cont:
		return word(m, ok)
	case <-t.C:
		return nil, fmt.Errorf("berth-cni did not answer in %s", timeout)
	case <-ctx.Done():
		select {
		case m, ok := <-cont:
			return word(m, ok)
		default:
			return nil, fmt.Errorf("ipamd is stopping: %w", ctx.Err())
		}
	}
}

// errHungUp is readRequest's answer to a plugin that hung up without a
// request.
var errHungUp = &datapath.Error{Code: cniErrInternal, Msg: "the plugin hung up before its request"}

// readRequest reads the request and its namespace descriptor (-1 when
// none), and checks what the command needs.
func readRequest(c *net.UnixConn) (*datapath.Request, int, *datapath.Error) {
	req := &datapath.Request{}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	// Most requests are small, GC's can be large: its size first (MSG_TRUNC
	// on a peek gives a SOCK_SEQPACKET packet's real length).
	size, err := peekSize(c)
	if err != nil {
		return req, -1, &datapath.Error{Code: cniErrInternal, Msg: "read the request", Details: err.Error()}
	}
	buf := make([]byte, min(max(size, 1), podwire.MaxRequest+1))
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds := rights(oob[:oobn])
	nsfd := -1
	for i, fd := range fds {
		if i == 0 {
			nsfd = fd
		} else {
			unix.Close(fd)
		}
	}
	invalid := func(code uint32, format string, a ...any) *datapath.Error {
		return &datapath.Error{Code: code, Msg: "invalid request", Details: fmt.Sprintf(format, a...)}
	}
	if n == 0 && len(fds) == 0 && (err == nil || errors.Is(err, io.EOF)) {
		// berth-cni connects before it has put its request together, and
		// hangs up if that fails (its netns went away): nothing to answer.
		return req, nsfd, errHungUp
	}
	if err != nil {
		return req, nsfd, &datapath.Error{Code: cniErrInternal, Msg: "read the request", Details: err.Error()}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return req, nsfd, invalid(cniErrDecodingFailure, "larger than %d bytes or more than 4 descriptors", podwire.MaxRequest)
	}
	if n > podwire.MaxRequest {
		return req, nsfd, invalid(cniErrDecodingFailure, "%d bytes, larger than %d", n, podwire.MaxRequest)
	}
	if err := proto.Unmarshal(buf[:n], req); err != nil {
		return req, nsfd, invalid(cniErrDecodingFailure, "%v (a berth-cni of another release?)", err)
	}
	if req.Command == nil || unknownFields(req) {
		// A plugin of another release: say so rather than drop what it asked.
		return req, nsfd, invalid(cniErrDecodingFailure, "no command, or fields this ipamd does not know (a berth-cni of another release?)")
	}
	var e *datapath.Error
	switch c := req.Command.(type) {
	case *datapath.Request_Add:
		e = checkAdd(c.Add, nsfd)
	case *datapath.Request_Del:
		e = checkAttachment(c.Del.ContainerId, c.Del.IfName, c.Del.NetworkName)
	case *datapath.Request_Check:
		e = checkAttachment(c.Check.ContainerId, c.Check.IfName, c.Check.NetworkName)
		if e == nil && net.ParseIP(c.Check.Ipv4Addr).To4() == nil {
			e = invalid(cniErrInvalidConfig, "CHECK needs prevResult's IPv4 address, not %q", c.Check.Ipv4Addr)
		}
		if e == nil && c.Check.HostVeth == "" {
			e = invalid(cniErrInvalidConfig, "CHECK needs prevResult's host interface")
		}
		if e == nil {
			e = checkNetNS(nsfd, c.Check.Netns)
		}
	case *datapath.Request_Gc:
		if c.Gc.NetworkName == "" {
			e = invalid(cniErrInvalidConfig, "GC needs the network's name")
		}
	}
	return req, nsfd, e
}

// unknownFields reports fields of m, or of a message in it, that this
// ipamd does not know.
func unknownFields(m proto.Message) bool {
	unknown := false
	_ = protorange.Range(m.ProtoReflect(), func(v protopath.Values) error {
		if msg, ok := v.Index(-1).Value.Interface().(protoreflect.Message); ok && len(msg.GetUnknown()) > 0 {
			unknown = true
			return protorange.Terminate
		}
		return nil
	})
	return unknown
}

func checkAttachment(containerID, ifName, network string) *datapath.Error {
	if containerID == "" || ifName == "" || network == "" {
		return &datapath.Error{Code: cniErrInvalidConfig, Msg: "invalid request", Details: "containerID, ifName and networkName are required"}
	}
	return nil
}

// checkAdd checks an ADD request and its namespace descriptor.
func checkAdd(req *datapath.AddRequest, nsfd int) *datapath.Error {
	invalid := func(code uint32, format string, a ...any) *datapath.Error {
		return &datapath.Error{Code: code, Msg: "invalid ADD request", Details: fmt.Sprintf(format, a...)}
	}
	switch {
	case req.ContainerId == "" || req.IfName == "" || req.NetworkName == "":
		return invalid(cniErrInvalidConfig, "containerID, ifName and networkName are required")
	case req.PodNamespace == "" || req.PodName == "":
		// The host veth is named after the pod: without its name every
		// such pod would share one.
		return invalid(cniErrInvalidEnv, "K8S_POD_NAMESPACE and K8S_POD_NAME are required in CNI_ARGS")
	case len(req.IfName) > 15:
		return invalid(cniErrInvalidConfig, "ifName %q is longer than 15 bytes", req.IfName)
	case req.VethPrefix == "" || len(req.VethPrefix) > vethprefix.MaxLen:
		return invalid(cniErrInvalidConfig, "vethPrefix %q: 1 to %d characters", req.VethPrefix, vethprefix.MaxLen)
	case req.Mtu < 576 || req.Mtu > 9001:
		return invalid(cniErrInvalidConfig, "mtu %d: must be between 576 and 9001", req.Mtu)
	}
	return checkNetNS(nsfd, req.Netns)
}

// checkNetNS checks that the request came with a network namespace.
func checkNetNS(nsfd int, path string) *datapath.Error {
	if nsfd < 0 {
		return &datapath.Error{Code: cniErrInvalidNetNS, Msg: "invalid request", Details: "no network namespace descriptor attached"}
	}
	if t, err := unix.IoctlRetInt(nsfd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		return &datapath.Error{Code: cniErrInvalidNetNS, Msg: "invalid request", Details: fmt.Sprintf("the descriptor for %s is not a network namespace", path)}
	}
	return nil
}

// peekSize waits for the connection's next packet and returns its length
// without reading it.
func peekSize(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func sendMsg(c *net.UnixConn, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

// addPod assigns the pod an address and wires it: the veth while the
// checkpoint is written, then (when the plugin calls the policy agent)
// the agent's turn, then the address, host route and rules. The plugin
// then commits (turn returns its Continue). Whatever fails before the
// commit, nothing stays: no links, no rules, no address held.
func (s *Server) addPod(ctx context.Context, r *datapath.AddRequest, podNS netns.NsHandle, handles *handlePool,
	turn func(*datapath.Reply) (*datapath.Continue, error), fail func(*datapath.Reply) error) {
	start := time.Now()
	s.m.AddReq.Inc()
	answered := func() { s.m.AddSeconds.Observe(time.Since(start).Seconds()) }
	failed := func(code uint32, msg string, err error) {
		_ = fail(&datapath.Reply{Error: &datapath.Error{Code: code, Msg: msg, Details: err.Error()}})
		answered()
	}
	pod := r.PodNamespace + "/" + r.PodName
	if e := s.compatiblePlugin(r.ClientVersion); e != nil {
		_ = fail(e)
		answered()
		return
	}
	if r.RequiresMultiNicAttachment && !s.multiNIC() {
		s.log.Warn("ADD refused", "pod", pod, "err", ErrMultiNIC)
		failed(cniErrUnsupportedField, "failed to assign an IP address to the pod", ErrMultiNIC)
		return
	}
	key := datastore.Key{NetworkName: r.NetworkName, ContainerID: r.ContainerId, IfName: r.IfName}
	// One ADD or DEL of a pod at a time: a retried ADD waits for the undo of
	// the one before.
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		failed(cniErrTryAgainLater, "failed to assign an IP address to the pod", fmt.Errorf("waiting for the pod's previous ADD or DEL: %w", err))
		return
	}
	defer unlock()
	host, err := handles.get()
	if err != nil {
		failed(cniErrInternal, "pod network setup failed", err)
		return
	}
	defer handles.put(host)
	// Addresses the pod already held (ADD without DEL) are not this ADD's
	// to give back when it fails (undo knows).
	as, u, err := s.assignAll(ctx, key, s.meta(r.PodNamespace, r.PodName, r.RequiresMultiNicAttachment))
	if err != nil {
		s.countNoIP(err)
		s.log.Warn("ADD failed", "pod", pod, "err", err)
		failed(cniErrTryAgainLater, "failed to assign an IP address to the pod", err)
		return
	}
	// The checkpoint's fsync and the links run side by side: the reply
	// waits for both, so no address leaves ipamd before it is on disk.
	var syncErr, annotateErr error
	annotating := false // ANNOTATE_POD_IP's patch was sent
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		if syncErr = s.sync(ctx); syncErr == nil {
			// ANNOTATE_POD_IP: also before the reply, beside the links.
			annotating = true
			annotateErr = s.annotate(ctx, as[0].Meta, as[0].IP)
		}
	}()
	// One interface per address: eth0 (card 0), then a multi-NIC pod's
	// mNicIf<n> for card n, named and routed as the VPC CNI does.
	ifs := make([]podIf, len(as))
	for i, a := range as {
		ifs[i] = podIf{ip: net.IP(a.IP.AsSlice()), table: hostnet.RouteTable(a.Device, a.Card), ifName: r.IfName,
			hostVeth: vethname.For(r.VethPrefix, r.PodNamespace, vethname.Interface(r.PodName, i))}
		if i > 0 {
			ifs[i].ifName = fmt.Sprintf("mNicIf%d", i)
		}
	}
	committed := false
	defer func() {
		for _, f := range ifs {
			if f.l == nil {
				continue
			}
			if !committed {
				f.l.Undo(f.ip, f.table)
			}
			f.l.Close()
		}
		<-synced
		if committed {
			return
		}
		if annotating && u.first {
			// Even a patch that failed (a timeout) may have been applied.
			s.unannotate(as[0])
		}
		if u.run() && syncErr == nil {
			// The addresses were on disk: take them back there too.
			if err := s.sync(context.Background()); err != nil {
				s.log.Error("checkpoint after a failed ADD", "pod", pod, "err", err)
			}
		}
	}()
	for i := range ifs {
		f := &ifs[i]
		if f.l, err = podnet.CreateIndexed(host, handles.home, podNS, f.ifName, f.hostVeth, int(r.Mtu), i); err != nil {
			s.log.Error("pod network setup failed", "pod", pod, "netns", r.Netns, "interface", f.ifName, "err", err)
			failed(cniErrInternal, "pod network setup failed", err)
			return
		}
	}
	// The policy agent attaches to the host veths before the pod has its
	// addresses or the host a route to them: no packet to or from the pod
	// can pass before its policy is in place.
	if r.PolicyAgent && s.node.NetworkPolicyMode != "" {
		links := &datapath.Reply{Phase: podwire.PhaseLinks, HostVeth: ifs[0].hostVeth, NetworkPolicyMode: s.node.NetworkPolicyMode}
		for _, f := range ifs[1:] {
			links.MoreInterfaces = append(links.MoreInterfaces, &datapath.Interface{PodIfName: f.ifName, HostVeth: f.hostVeth})
		}
		m, err := turn(links)
		if err != nil {
			failed(cniErrInternal, "network policy setup failed", err)
			return
		}
		if err := continueErr(m); err != nil {
			failed(cniErrInternal, "network policy setup failed", err)
			return
		}
	}
	for _, f := range ifs {
		if err := f.l.Assign(f.ip, f.table); err != nil {
			s.log.Error("pod network setup failed", "pod", pod, "interface", f.ifName, "err", err)
			failed(cniErrInternal, "pod network setup failed", err)
			return
		}
	}
	<-synced
	if syncErr != nil {
		failed(cniErrInternal, "failed to assign an IP address to the pod", fmt.Errorf("persist the allocation of %s: %w", as[0].IP, syncErr))
		return
	}
	if annotateErr != nil {
		failed(cniErrTryAgainLater, "failed to annotate the pod with its address", annotateErr)
		return
	}
	a, f0 := as[0], ifs[0]
	reply := &datapath.Reply{Phase: podwire.PhaseDone, Ipv4Addr: a.IP.String(), DeviceNumber: int32(a.Device), RouteTableId: int32(f0.table),
		HostVeth: f0.hostVeth, HostMac: f0.l.HostMAC.String(), PodMac: f0.l.PodMAC.String(), NetworkPolicyMode: s.node.NetworkPolicyMode}
	for i, f := range ifs[1:] {
		reply.MoreInterfaces = append(reply.MoreInterfaces, &datapath.Interface{PodIfName: f.ifName, Ipv4Addr: as[i+1].IP.String(),
			DeviceNumber: int32(as[i+1].Device), RouteTableId: int32(f.table), HostVeth: f.hostVeth, HostMac: f.l.HostMAC.String(), PodMac: f.l.PodMAC.String()})
	}
	answered()
	m, err := turn(reply)
	if err == nil {
		err = continueErr(m)
	}
	if err != nil {
		// The plugin failed after ipamd's answer, sent an error instead of
		// the commit, or is gone: the runtime will not use this pod's
		// network.
		s.log.Warn("berth-cni did not commit the ADD; undoing", "pod", pod, "err", err)
		return
	}
	committed = true
	s.log.Debug("ADD", "pod", pod, "ip", a.IP, "eni", a.ENI, "veth", f0.hostVeth, "interfaces", len(ifs), "took", time.Since(start))
}

// podIf is one of the pod's interfaces while ADD wires it.
type podIf struct {
	ip               net.IP
	table            int
	ifName, hostVeth string
	l                *podnet.Links
}

// continueErr is the plugin's Continue as an error: nil when it says applied.
func continueErr(m *datapath.Continue) error {
	switch {
	case m.Error != "":
		return errors.New(m.Error)
	case !m.Applied:
		return errors.New("berth-cni's Continue says neither applied nor why not")
	}
	return nil
}

// keyLocks serialises the ADDs and DELs of one pod attachment.
type keyLocks struct {
	mu   sync.Mutex
	held map[datastore.Key]chan struct{}
}

// busy reports whether a call holds k now.
func (l *keyLocks) busy(k datastore.Key) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.held[k]
	return ok
}

// lock waits until no other call holds k, then holds it until unlock.
func (l *keyLocks) lock(ctx context.Context, k datastore.Key) (unlock func(), err error) {
	for {
		l.mu.Lock()
		busy, ok := l.held[k]
		if !ok {
			if l.held == nil {
				l.held = map[datastore.Key]chan struct{}{}
			}
			ch := make(chan struct{})
			l.held[k] = ch
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				delete(l.held, k)
				l.mu.Unlock()
				close(ch)
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// handlePool keeps netlink handles in the node's namespace for the ADDs
// in flight, one each: opening one costs two setns and a socket.
type handlePool struct {
	ns, home netns.NsHandle
	free     chan *netlink.Handle
}

func (p *handlePool) get() (*netlink.Handle, error) {
	select {
	case h := <-p.free:
		return h, nil
	default:
	}
	h, err := netlink.NewHandleAt(p.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in the node's namespace: %w", err)
	}
	return h, nil
}

func (p *handlePool) put(h *netlink.Handle) {
	select {
	case p.free <- h:
	default:
		h.Close()
	}
}

func (p *handlePool) close() {
	for {
		select {
		case h := <-p.free:
			h.Close()
		default:
			return
		}
	}
}
