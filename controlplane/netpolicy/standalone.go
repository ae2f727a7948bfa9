package netpolicy

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
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// StandaloneConfig is the command line of the controller run on its own
// (berth-controlplane netpol-controller), e.g. as a Deployment.
type StandaloneConfig struct {
	// Kubeconfig is the cluster to work on; empty means in-cluster.
	Kubeconfig string
	// MetricsAddr serves Prometheus metrics and /healthz when set.
	MetricsAddr string
	// LeaderElect takes the Lease kube-system/berth-netpol-controller.
	LeaderElect bool
	// InstallCRD installs the PolicyEndpoint CRD first (needs the right to
	// write CRDs, which the controller's own ClusterRole does not grant).
	InstallCRD bool
	Options    Options
}

// RunStandalone runs the controller against a cluster until ctx ends.
func RunStandalone(ctx context.Context, cfg StandaloneConfig, log *slog.Logger) error {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "berth-netpol-controller"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	if cfg.InstallCRD {
		ext, err := apiextensionsclient.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("apiextensions client: %w", err)
		}
		if err := InstallCRD(ctx, ext); err != nil {
			return err
		}
	}
	cfg.Options.Log = log
	c := New(client, dyn, cfg.Options)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2) // the metrics server and the controller
	if cfg.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		if err := c.Register(reg); err != nil {
			return err
		}
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { <-ctx.Done(); srv.Close() }()
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	go func() {
		if cfg.LeaderElect {
			errc <- RunElected(ctx, client, log, c.Run)
			return
		}
		errc <- c.Run(ctx)
	}()
	err = <-errc
	cancel()
	return err
}
