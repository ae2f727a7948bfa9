// Package podwire carries berth-cni's commands to berth-ipamd on ipamd's
// datapath socket: the messages of
// proto/datapath.proto, one per SOCK_SEQPACKET packet, the pod's network
// namespace passed as a descriptor (SCM_RIGHTS) with the request. ipamd
// assigns the address and wires the pod in its own, warm process, so a
// pod's ADD costs one short-lived process that only relays; and the
// namespace arrives as an open descriptor, which ipamd can use whatever its
// mount namespace and which cannot be swapped under it.
//
// The plugin's side (Conn, also its connection for the gRPC calls to
// ipamd and the policy agent) uses blocking system calls only: it runs
// once per pod and its start-up is the pod's latency. The plugin encodes the
// messages by hand (cni-plugin/messages.go), ipamd with the generated code.
package podwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where ipamd listens and berth-cni dials by default.
const DefaultSocket = "/var/run/aws-node/berth-datapath.sock"

// MaxMessage bounds a reply or a Continue; they are a few hundred bytes.
const MaxMessage = 16 << 10

// MaxRequest bounds a request. Most are a few hundred bytes, but GC's
// lists every valid attachment (~75 bytes each): this allows ~2,500, more
// than a node has pods, and fits the default socket send buffer
// (net.core.wmem_default, 208 KiB), past which a packet cannot be sent.
const MaxRequest = 192 << 10

// Phases of a reply (datapath.Reply.phase).
const (
	PhaseLinks = "links" // the veth is up, no address yet: call the policy agent
	PhaseDone  = "done"
)

// ErrTimeout is a send or receive past the deadline.
var ErrTimeout = errors.New("i/o timeout")

// Conn is the plugin's end of a unix socket to ipamd or the policy agent:
// a blocking socket whose send and receive timeouts are the context's
// deadline, and which the context's cancellation shuts down. The plugin
// makes its calls one at a time on its only goroutine, so the net
// package's poller would buy nothing and cost every exec ~0.5 ms (a dial
// that fetches both addresses, poller registration, a reply handed from
// the poller's thread to the main one); here the kernel wakes the reading
// thread itself.
type Conn struct {
	fd   int
	stop func() bool
	shut chan struct{}
}

// Dial connects to ipamd's datapath socket (SOCK_SEQPACKET: Send, Recv).
func Dial(ctx context.Context, path string) (*Conn, error) {
	return dial(ctx, path, unix.SOCK_SEQPACKET)
}

// DialStream connects to a SOCK_STREAM socket (Read, Write), such as a
// gRPC server's.
func DialStream(ctx context.Context, path string) (*Conn, error) {
	return dial(ctx, path, unix.SOCK_STREAM)
}

func dial(ctx context.Context, path string, sotype int) (*Conn, error) {
	dl, ok := ctx.Deadline()
	fd, err := connect(path, sotype, dl, ok)
	if err != nil {
		return nil, err
	}
	c := &Conn{fd: fd, shut: make(chan struct{})}
	// Shutting the socket down ends a blocked call; Close waits for that to
	// finish, so a descriptor is never shut down after it is closed.
	c.stop = context.AfterFunc(ctx, func() {
		defer close(c.shut)
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	})
	return c, nil
}

// connect returns a blocking unix socket of type sotype connected to path.
// With a deadline, the time left is the socket's send and receive timeout,
// which also bounds a connect to a full listen queue.
func connect(path string, sotype int, deadline time.Time, hasDeadline bool) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if hasDeadline {
		left := time.Until(deadline)
		if left <= 0 {
			unix.Close(fd)
			return -1, fmt.Errorf("dial %s: %w", path, context.DeadlineExceeded)
		}
		tv := unix.NsecToTimeval(max(left, time.Microsecond).Nanoseconds()) // zero would mean no timeout
		for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("set socket timeout: %w", err)
			}
		}
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EAGAIN) {
			err = ErrTimeout // the listen queue stayed full past the deadline
		}
		return -1, fmt.Errorf("dial unix %s: %w", path, err)
	}
	return fd, nil
}

// ioErr sorts a blocking socket call's error: EINTR is tried again, EAGAIN
// is the socket's timeout, others are wrapped with op (when not empty).
func ioErr(op string, err error) (again bool, _ error) {
	switch {
	case errors.Is(err, unix.EINTR):
		return true, nil
	case errors.Is(err, unix.EAGAIN):
		return false, ErrTimeout
	case err != nil && op != "":
		return false, fmt.Errorf("%s: %w", op, err)
	}
	return false, err
}

// Send writes b as one message, with fds attached.
func (c *Conn) Send(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		again, err := ioErr("send", unix.Sendmsg(c.fd, b, oob, nil, 0))
		if !again {
			return err
		}
	}
}

// Recv reads one message.
func (c *Conn) Recv() ([]byte, error) {
	// From the heap: fresh memory needs no zeroing, and only the bytes
	// received are touched (a stack array would be zeroed whole).
	buf := make([]byte, MaxMessage)
	var n, flags int
	for again := true; again; {
		var err error
		n, _, flags, _, err = unix.Recvmsg(c.fd, buf, nil, 0)
		if again, err = ioErr("receive", err); err != nil {
			return nil, err
		}
	}
	switch {
	case n == 0:
		return nil, errors.New("receive: ipamd closed the connection")
	case flags&unix.MSG_TRUNC != 0:
		return nil, fmt.Errorf("receive: message larger than %d bytes", MaxMessage)
	}
	return buf[:n], nil
}

// Read reads from a stream connection; the peer's end is io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		if again, err := ioErr("", err); again {
			continue
		} else if err != nil {
			return 0, err
		}
		if n == 0 && len(b) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of b to a stream connection.
func (c *Conn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n, err := unix.Write(c.fd, b[written:])
		if again, err := ioErr("", err); again {
			continue
		} else if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// Close closes the connection; closing it again does nothing.
func (c *Conn) Close() error {
	if c.fd < 0 {
		return nil
	}
	if !c.stop() {
		<-c.shut
	}
	fd := c.fd
	c.fd = -1
	return unix.Close(fd)
}
