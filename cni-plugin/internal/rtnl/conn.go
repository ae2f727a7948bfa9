package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ne is the kernel's byte order, netlink's.
var ne = binary.NativeEndian

// timeout bounds a reply: the kernel answers at once, but a DEL must end.
const timeout = 10 * time.Second

// conn is a route netlink socket in the calling thread's namespace, used
// from one goroutine.
type conn struct {
	fd  int
	seq uint32
	buf []byte
}

func dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	// The buffer on the heap: on the stack it would grow the plugin's
	// goroutine stack by copies.
	return &conn{fd: fd, buf: make([]byte, 32<<10)}, nil
}

func (c *conn) close() { unix.Close(c.fd) }

// dump sends a dump request and returns the bodies of its messages. A
// dump the kernel marks interrupted (the table changed meanwhile) is
// asked for again.
func (c *conn) dump(typ uint16, body []byte) ([][]byte, error) {
	for try := 1; ; try++ {
		msgs, err := c.call(typ, unix.NLM_F_DUMP, body)
		if !errors.Is(err, unix.EINTR) || try == 3 {
			return msgs, err
		}
	}
}

// call sends one request and reads its answer: the messages of a dump up
// to NLMSG_DONE, or those before the kernel's NLMSG_ERROR (its error, or
// with NLM_F_ACK its acknowledgement). The bodies are copies.
func (c *conn) call(typ, flags uint16, body []byte) ([][]byte, error) {
	c.seq++
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	ne.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST)
	ne.PutUint32(msg[8:], c.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var out [][]byte
	for {
		n, _, rflags, _, err := unix.Recvmsg(c.fd, c.buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("netlink receive: a message larger than %d bytes", len(c.buf))
		}
		var done bool
		if out, done, err = parseAnswer(c.buf[:n], c.seq, flags&(unix.NLM_F_DUMP|unix.NLM_F_ACK) == 0, out); err != nil || done {
			return out, err
		}
	}
}

// parseAnswer appends to out copies of the bodies of the messages in b that
// answer request seq, and reports whether the answer is complete: at
// NLMSG_DONE, at NLMSG_ERROR (an errno, or 0 for an acknowledgement), or,
// for a get (single), at its one message. Messages of other requests are
// skipped.
func parseAnswer(b []byte, seq uint32, single bool, out [][]byte) ([][]byte, bool, error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, true, errors.New("netlink: truncated message")
		}
		mtyp, mflags, mseq, data := ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:]), b[unix.NLMSG_HDRLEN:l]
		b = b[min(align(l), len(b)):]
		if mseq != seq {
			continue // an answer to an earlier request
		}
		if mflags&unix.NLM_F_DUMP_INTR != 0 {
			// The table changed during the dump: it may be incomplete.
			return nil, true, fmt.Errorf("netlink dump: %w", unix.EINTR)
		}
		switch mtyp {
		case unix.NLMSG_DONE:
			if len(data) >= 4 {
				if errno := -int32(ne.Uint32(data)); errno > 0 {
					return nil, true, fmt.Errorf("netlink dump: %w", unix.Errno(errno))
				}
			}
			return out, true, nil
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return nil, true, errors.New("netlink: truncated error")
			}
			if errno := -int32(ne.Uint32(data)); errno != 0 {
				return nil, true, unix.Errno(errno)
			}
			return out, true, nil
		}
		out = append(out, append([]byte(nil), data...))
		if single {
			return out, true, nil
		}
	}
	return out, false, nil
}

func align(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// attr appends a route attribute.
func attr(b []byte, typ uint16, v []byte) []byte {
	var h [unix.SizeofRtAttr]byte
	ne.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(v)))
	ne.PutUint16(h[2:], typ)
	b = append(append(b, h[:]...), v...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// forAttrs calls f for each route attribute in b (nested ones with the
// nesting flag cleared).
func forAttrs(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(ne.Uint16(b[0:]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(ne.Uint16(b[2:])&^unix.NLA_F_NESTED, b[unix.SizeofRtAttr:l])
		b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
	}
}

func u32(v uint32) []byte { return ne.AppendUint32(nil, v) }
