package imds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Endpoints runs one loopback listener per instance, so that a process on
// the host can play an instance: point AWS_EC2_METADATA_SERVICE_ENDPOINT at
// Endpoint(id). Inside the VPC-in-a-box datapath, instances reach IMDS at
// 169.254.169.254 in their own namespace instead.
type Endpoints struct {
	srv *Server
	log *slog.Logger
	mu  sync.Mutex
	eps map[string]*endpoint
}

type endpoint struct {
	url string
	srv *http.Server
}

// NewEndpoints returns an empty set of host listeners.
func NewEndpoints(srv *Server, log *slog.Logger) *Endpoints {
	return &Endpoints{srv: srv, log: log, eps: map[string]*endpoint{}}
}

// ErrNoInstance is returned for an instance that is unknown or not running.
var ErrNoInstance = errors.New("no such running instance")

// Endpoint returns the URL of the instance's IMDS listener, starting it on
// first use.
func (e *Endpoints) Endpoint(ctx context.Context, instanceID string) (string, error) {
	if e.srv.current(ctx, instanceID) == nil {
		return "", fmt.Errorf("imds endpoint for %s: %w", instanceID, ErrNoInstance)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ep, ok := e.eps[instanceID]; ok {
		return ep.url, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("imds listener for %s: %w", instanceID, err)
	}
	hs := &http.Server{Handler: e.srv.Handler(instanceID), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("imds listener", "instance", instanceID, "err", err)
		}
	}()
	ep := &endpoint{url: "http://" + ln.Addr().String(), srv: hs}
	e.eps[instanceID] = ep
	return ep.url, nil
}

// Close stops every listener.
func (e *Endpoints) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, ep := range e.eps {
		_ = ep.srv.Close()
		delete(e.eps, id)
	}
}
