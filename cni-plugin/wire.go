package main

// A unary gRPC client over HTTP/2 on a unix socket, just what berth-cni
// needs, with the messages encoded by hand. It replaces grpc-go and the
// protobuf runtime in the plugin: their package initialisation and the
// client's connection set-up (resolver, balancer, the wait for the
// server's SETTINGS before the first stream) were a third of every exec.
// The request goes out in one write (preface, SETTINGS, HEADERS, DATA)
// and the answer is read from the same connection. The wire is plain
// gRPC, so ipamd serves berth-cni and the Amazon VPC CNI plugin alike.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/berth-io/berth/internal/podwire"
)

// gRPC method paths (proto/rpc.proto and grpc.health.v1).
const (
	methodEnforceNpToPod = "/rpc.NPBackend/EnforceNpToPod"
	methodDeletePodNp    = "/rpc.NPBackend/DeletePodNp"
	methodHealthCheck    = "/grpc.health.v1.Health/Check"
)

// HTTP/2 frame types and flags (RFC 9113).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingInitialWindowSize = 0x4
)

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxResponse bounds a reply (ipamd's are a few hundred bytes).
const maxResponse = 4 << 20

// codeUnavailable etc. are the gRPC status codes the plugin produces itself.
const (
	codeCanceled         = 1
	codeDeadlineExceeded = 4
	codeUnknown          = 2
	codeInternal         = 13
	codeUnavailable      = 14
)

var codeNames = []string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
	"PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
	"Unavailable", "DataLoss", "Unauthenticated"}

// rpcError is a non-OK gRPC status, printed as grpc-go prints one.
type rpcError struct {
	Code    int
	Message string
}

func (e *rpcError) Error() string {
	name := "Code(" + strconv.Itoa(e.Code) + ")"
	if e.Code >= 0 && e.Code < len(codeNames) {
		name = codeNames[e.Code]
	}
	return "rpc error: code = " + name + " desc = " + e.Message
}

// unaryCall sends one request on a fresh connection to socket and returns
// the reply message.
func unaryCall(ctx context.Context, socket, method string, req []byte) ([]byte, error) {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return nil, &rpcError{Code: codeDeadlineExceeded, Message: context.DeadlineExceeded.Error()}
	}
	c, err := podwire.DialStream(ctx, socket)
	if err != nil {
		return nil, &rpcError{Code: codeUnavailable, Message: "connection error: " + err.Error()}
	}
	defer c.Close()
	var reply []byte
	if err = writeRequest(c, method, req, ctx); err == nil {
		reply, err = readReply(c)
	}
	var re *rpcError
	if dl, ok := ctx.Deadline(); ok && errors.As(err, &re) && re.Code == codeCanceled && time.Until(dl) < 100*time.Millisecond {
		// The server's copy of the deadline (grpc-timeout) ran out first.
		return nil, &rpcError{Code: codeDeadlineExceeded, Message: context.DeadlineExceeded.Error()}
	}
	if err != nil {
		// The connection's deadline is the context's, and the read can time
		// out a moment before the context's own timer marks it done: a
		// passed deadline is DeadlineExceeded either way, as in grpc-go.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return nil, &rpcError{Code: codeDeadlineExceeded, Message: context.DeadlineExceeded.Error()}
		}
		if ctx.Err() != nil {
			code := codeDeadlineExceeded
			if errors.Is(ctx.Err(), context.Canceled) {
				code = codeCanceled
			}
			return nil, &rpcError{Code: code, Message: ctx.Err().Error()}
		}
	}
	return reply, err
}

// writeRequest writes the connection preface, settings and the request
// stream in one write, without waiting for the server's SETTINGS.
func writeRequest(c io.Writer, method string, req []byte, ctx context.Context) error {
	// Request headers, HPACK literals without indexing (no Huffman).
	var hb []byte
	lit := func(name, value string) {
		hb = append(hb, 0x00)
		hb = hpackString(hb, name)
		hb = hpackString(hb, value)
	}
	lit(":method", "POST")
	lit(":scheme", "http")
	lit(":path", method)
	lit(":authority", "localhost")
	lit("content-type", "application/grpc")
	lit("te", "trailers")
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms < 1 {
			ms = 1
		}
		if ms > 99999999 {
			ms = 99999999
		}
		lit("grpc-timeout", strconv.FormatInt(ms, 10)+"m")
	}

	out := make([]byte, 0, len(clientPreface)+9+6+9+4+9+len(hb)+9+5+len(req))
	out = append(out, clientPreface...)
	// Room for the whole reply up front, for the stream and the
	// connection, so the server never waits for a WINDOW_UPDATE.
	var settings [6]byte
	var window [4]byte
	binary.BigEndian.PutUint16(settings[:], settingInitialWindowSize)
	binary.BigEndian.PutUint32(settings[2:], maxResponse+64)
	binary.BigEndian.PutUint32(window[:], maxResponse)
	out = appendFrame(out, frameSettings, 0, 0, settings[:])
	out = appendFrame(out, frameWindowUpdate, 0, 0, window[:])
	out = appendFrame(out, frameHeaders, flagEndHeaders, 1, hb)
	msg := make([]byte, 5, 5+len(req))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(req)))
	out = appendFrame(out, frameData, flagEndStream, 1, append(msg, req...))
	if _, err := c.Write(out); err != nil {
		return &rpcError{Code: codeUnavailable, Message: "write: " + err.Error()}
	}
	return nil
}

// readReply reads the reply to stream 1, acknowledging the server's
// SETTINGS and PINGs on the way.
func readReply(c io.ReadWriter) ([]byte, error) {
	r := bufio.NewReaderSize(c, 16<<10)
	dec := newHPACKDecoder()
	var (
		hdr       [9]byte
		block     []byte
		body      []byte
		status    = -1
		message   string
		httpCode  string
		inHeaders bool
	)
	decodeBlock := func() error {
		fields, err := dec.decode(block)
		block = block[:0]
		if err != nil {
			return &rpcError{Code: codeInternal, Message: err.Error()}
		}
		for _, f := range fields {
			switch f.name {
			case ":status":
				httpCode = f.value
			case "grpc-status":
				if n, err := strconv.Atoi(f.value); err == nil {
					status = n
				}
			case "grpc-message":
				message = percentDecode(f.value)
			}
		}
		return nil
	}
	finish := func() ([]byte, error) {
		if status < 0 {
			if httpCode != "" && httpCode != "200" {
				return nil, &rpcError{Code: codeUnknown, Message: "unexpected HTTP status code " + httpCode}
			}
			return nil, &rpcError{Code: codeInternal, Message: "server closed the stream without sending trailers"}
		}
		if status != 0 {
			return nil, &rpcError{Code: status, Message: message}
		}
		if len(body) < 5 {
			return nil, &rpcError{Code: codeInternal, Message: "no response message"}
		}
		if body[0] != 0 {
			return nil, &rpcError{Code: codeInternal, Message: "compressed response"}
		}
		n := binary.BigEndian.Uint32(body[1:5])
		if int(n) != len(body)-5 {
			return nil, &rpcError{Code: codeInternal, Message: "truncated response message"}
		}
		return body[5:], nil
	}
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, &rpcError{Code: codeUnavailable, Message: "read: " + err.Error()}
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		stream := binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff
		if length > 1<<20 {
			return nil, &rpcError{Code: codeInternal, Message: "frame too large"}
		}
		p := make([]byte, length)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, &rpcError{Code: codeUnavailable, Message: "read: " + err.Error()}
		}
		if inHeaders && typ != frameContinuation {
			return nil, &rpcError{Code: codeInternal, Message: "protocol error: header block interrupted"}
		}
		switch typ {
		case frameSettings:
			if flags&flagAck == 0 {
				if _, err := c.Write(appendFrame(nil, frameSettings, flagAck, 0, nil)); err != nil {
					return nil, &rpcError{Code: codeUnavailable, Message: "write: " + err.Error()}
				}
			}
		case framePing:
			if flags&flagAck == 0 {
				if _, err := c.Write(appendFrame(nil, framePing, flagAck, 0, p)); err != nil {
					return nil, &rpcError{Code: codeUnavailable, Message: "write: " + err.Error()}
				}
			}
		case frameGoAway:
			if len(p) >= 8 && binary.BigEndian.Uint32(p)&0x7fffffff < 1 {
				return nil, &rpcError{Code: codeUnavailable, Message: "the server went away before the call"}
			}
		case frameRSTStream:
			if stream == 1 {
				code := uint32(0)
				if len(p) >= 4 {
					code = binary.BigEndian.Uint32(p)
				}
				if code == 8 { // CANCEL: the server gave up, at its grpc-timeout
					return nil, &rpcError{Code: codeCanceled, Message: "the server cancelled the call"}
				}
				return nil, &rpcError{Code: codeInternal, Message: fmt.Sprintf("stream terminated by RST_STREAM with error code %d", code)}
			}
		case frameHeaders, frameContinuation, frameData:
			if stream != 1 {
				continue
			}
			if typ != frameContinuation && flags&flagPadded != 0 {
				if len(p) < 1 || int(p[0]) > len(p)-1 {
					return nil, &rpcError{Code: codeInternal, Message: "bad padding"}
				}
				p = p[1 : len(p)-int(p[0])]
			}
			if typ == frameData {
				if len(body)+len(p) > maxResponse {
					return nil, &rpcError{Code: 8, Message: "response larger than " + strconv.Itoa(maxResponse)}
				}
				body = append(body, p...)
				if flags&flagEndStream != 0 {
					return finish()
				}
				continue
			}
			if typ == frameHeaders {
				if flags&flagPriority != 0 {
					if len(p) < 5 {
						return nil, &rpcError{Code: codeInternal, Message: "bad priority"}
					}
					p = p[5:]
				}
			}
			block = append(block, p...)
			end := flags&flagEndHeaders != 0
			inHeaders = !end
			if end {
				if err := decodeBlock(); err != nil {
					return nil, err
				}
			}
			if typ == frameHeaders && flags&flagEndStream != 0 {
				// A header block may continue in CONTINUATION frames
				// before the stream really ends.
				for inHeaders {
					if _, err := io.ReadFull(r, hdr[:]); err != nil {
						return nil, &rpcError{Code: codeUnavailable, Message: "read: " + err.Error()}
					}
					n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
					if hdr[3] != frameContinuation || n > 1<<20 {
						return nil, &rpcError{Code: codeInternal, Message: "protocol error: expected CONTINUATION"}
					}
					q := make([]byte, n)
					if _, err := io.ReadFull(r, q); err != nil {
						return nil, &rpcError{Code: codeUnavailable, Message: "read: " + err.Error()}
					}
					block = append(block, q...)
					if hdr[4]&flagEndHeaders != 0 {
						inHeaders = false
						if err := decodeBlock(); err != nil {
							return nil, err
						}
					}
				}
				return finish()
			}
		}
	}
}

func appendFrame(b []byte, typ, flags byte, stream uint32, p []byte) []byte {
	n := len(p)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, p...)
}

// hpackString is a string literal with a 7-bit length prefix, no Huffman.
func hpackString(b []byte, s string) []byte {
	n := uint64(len(s))
	if n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		n -= 127
		for n >= 128 {
			b = append(b, byte(n)|0x80)
			n >>= 7
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

// percentDecode undoes gRPC's percent-encoding of grpc-message.
func percentDecode(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				if out == nil {
					out = append([]byte(nil), s[:i]...)
				}
				out = append(out, byte(v))
				i += 2
				continue
			}
		}
		if out != nil {
			out = append(out, s[i])
		}
	}
	if out == nil {
		return s
	}
	return string(out)
}
