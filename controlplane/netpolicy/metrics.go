package netpolicy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reconciles *prometheus.CounterVec
	duration   prometheus.Histogram
	writes     *prometheus.CounterVec
	invalid    prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netpol_controller_reconciles_total",
			Help: "NetworkPolicy reconciles by result (unchanged, written, deleted, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_netpol_controller_reconcile_seconds",
			Help:    "Time to resolve a NetworkPolicy and write its PolicyEndpoints.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netpol_controller_policyendpoint_writes_total",
			Help: "PolicyEndpoint objects created and deleted.",
		}, []string{"op"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_netpol_controller_invalid_policies_total",
			Help: "Reconciles of policies with selectors or CIDRs that do not parse (those peers match nothing).",
		}),
	}
}

// Register adds the controller's metrics to reg.
func (c *Controller) Register(reg prometheus.Registerer) error {
	for _, m := range []prometheus.Collector{c.m.reconciles, c.m.duration, c.m.writes, c.m.invalid} {
		if err := reg.Register(m); err != nil {
			return err
		}
	}
	return nil
}
