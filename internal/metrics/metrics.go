// Package metrics gives each berth daemon its own Prometheus registry (no
// global default registry, so tests can run several daemons in one process)
// and the HTTP handler that serves it.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-io/berth/internal/buildinfo"
)

// NewRegistry returns a registry with the Go runtime and process collectors
// and berth_build_info{component,version,goversion} = 1.
func NewRegistry(component string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := buildinfo.Get()
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "berth_build_info",
		Help:        "Build information of the running berth component; always 1.",
		ConstLabels: prometheus.Labels{"component": component, "version": info.Version, "goversion": info.GoVersion},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	return reg
}

// Handler serves reg in the Prometheus exposition format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Serve listens on addr and serves /metrics until ctx ends. It returns once
// the listener is bound, so callers know the port is taken; serving errors
// after that are logged.
func Serve(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry) (net.Addr, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	return ln.Addr(), nil
}
