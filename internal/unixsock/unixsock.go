// Package unixsock listens on the node daemons' gRPC sockets and serves them.
package unixsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
)

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
