// Package csiserver is the gRPC plumbing the CSI drivers share: the
// --endpoint and --mode flags, a unix socket that appears with mode 0660,
// one logging interceptor, and the in-flight guard that answers a
// duplicate concurrent RPC with Aborted.
//
//	ln, err := csiserver.Listen(ctx, "unix:///run/csi/csi.sock")
//	err = csiserver.Serve(ctx, ln, log, func(s *grpc.Server) {
//		csi.RegisterIdentityServer(s, d)
//	})
package csiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Mode selects which services a driver binary serves.
type Mode string

// Modes.
const (
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	ModeAll        Mode = "all"
)

// ParseMode validates a --mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeController, ModeNode, ModeAll:
		return m, nil
	}
	return "", fmt.Errorf("invalid mode %q: want controller, node or all", s)
}

// Controller reports whether the mode serves the controller service.
func (m Mode) Controller() bool { return m == ModeController || m == ModeAll }

// Node reports whether the mode serves the node service.
func (m Mode) Node() bool { return m == ModeNode || m == ModeAll }

// Listen opens the endpoint: unix:///path (mode 0660, a stale socket
// removed) or tcp://host:port.
func Listen(ctx context.Context, endpoint string) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("parse endpoint %q: %w", endpoint, err)
	}
	var lc net.ListenConfig
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Host
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("socket directory: %w", err)
		}
		// Bind under a temporary name, chmod, then rename: the socket
		// appears at its path with mode 0660 already, so a client never
		// sees it with the umask's wider mode.
		tmp := path + ".tmp"
		if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", tmp, err)
		}
		ln, err := lc.Listen(ctx, "unix", tmp)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", tmp, err)
		}
		if err := os.Chmod(tmp, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chmod %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			ln.Close()
			return nil, fmt.Errorf("move socket to %s: %w", path, err)
		}
		return ln, nil
	case "tcp":
		ln, err := lc.Listen(ctx, "tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", u.Host, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
}

// Serve serves the services that register adds on ln until ctx ends, then
// stops gracefully.
func Serve(ctx context.Context, ln net.Listener, log *slog.Logger, register func(*grpc.Server)) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(LogRPC(log)))
	register(srv)
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			srv.GracefulStop()
		case <-stopped:
		}
	}()
	log.Info("serving", "endpoint", ln.Addr().String())
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serve csi: %w", err)
	}
	return nil
}

// LogRPC is the one logging interceptor. It logs the method, duration and
// code, never request bodies (which may carry secrets).
func LogRPC(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		attrs := []any{"method", info.FullMethod, "duration", time.Since(start).Round(time.Microsecond), "code", code.String()}
		if v, ok := req.(interface{ GetVolumeId() string }); ok && v.GetVolumeId() != "" {
			attrs = append(attrs, "volume", v.GetVolumeId())
		}
		switch code {
		case codes.OK:
			log.Debug("rpc", attrs...)
		case codes.Internal, codes.Unknown, codes.DeadlineExceeded:
			log.Error("rpc", append(attrs, "err", err)...)
		default:
			log.Info("rpc", append(attrs, "err", err)...)
		}
		return resp, err
	}
}

// Inflight guards keys (a volume, a volume on a node, a snapshot name)
// against duplicate concurrent RPCs: the CO retries while a slow call is
// still running, and the duplicate gets Aborted instead of racing it.
type Inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// NewInflight returns an empty guard.
func NewInflight() *Inflight { return &Inflight{keys: map[string]struct{}{}} }

// Acquire takes key or returns an Aborted status; call the returned
// release when done.
func (f *Inflight) Acquire(key string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.keys[key]; busy {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, nil
}
