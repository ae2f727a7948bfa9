// Package unixsock listens on the node daemons' gRPC sockets, serves them
// and dials them.
package unixsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial makes a gRPC client of the daemon at path. Node daemons start side
// by side and serve within a fraction of a second, so a call made with
// grpc.WaitForReady retries a missing socket every 50 ms or so, rising to
// 1 s, not after gRPC's default first backoff of a whole second.
func Dial(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: time.Second,
			Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return conn, nil
}

// Listen replaces a stale socket at path (one a crashed daemon left) and
// listens there with mode 0660, so only root and the socket's group reach it.
func Listen(path string) (net.Listener, error) { return listen("unix", path) }

// ListenSeqpacket is Listen for a SOCK_SEQPACKET socket (message
// boundaries kept, descriptors passed with them).
func ListenSeqpacket(path string) (*net.UnixListener, error) {
	ln, err := listen("unixpacket", path)
	if err != nil {
		return nil, err
	}
	return ln.(*net.UnixListener), nil
}

func listen(network, path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen(network, path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// ServeGRPC listens on path as Listen does and serves gs there. stop
// stops gs gracefully, then removes the socket.
func ServeGRPC(path string, gs *grpc.Server, log *slog.Logger) (stop func(), err error) {
	ln, err := Listen(path)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := gs.Serve(ln); err != nil {
			log.Error("gRPC server stopped", "socket", path, "err", err)
		}
	}()
	return func() {
		gs.GracefulStop()
		_ = os.Remove(path)
	}, nil
}
