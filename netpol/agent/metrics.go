package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus series; a nil *Metrics records nothing.
type Metrics struct {
	enforce     prometheus.Histogram
	programming prometheus.Histogram
	invalid     prometheus.Counter
	pods        prometheus.Gauge
}

// NewMetrics registers the agent's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		enforce: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_netpol_enforce_seconds",
			Help: "Time EnforceNpToPod took, from berth-cni's call until the pod's programs and maps were in place.", Buckets: buckets}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_netpol_programming_seconds",
			Help: "Time from a PolicyEndpoint change reaching the agent until every affected local pod enforced it.", Buckets: buckets}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_netpol_invalid_rules_total",
			Help: "PolicyEndpoint rules skipped because the datapath cannot enforce them."}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_netpol_pods",
			Help: "Local pods whose veths carry the policy programs."}),
	}
	reg.MustRegister(m.enforce, m.programming, m.invalid, m.pods)
	return m
}

func (m *Metrics) observeEnforce(d time.Duration) {
	if m != nil {
		m.enforce.Observe(d.Seconds())
	}
}

func (m *Metrics) observeProgramming(d time.Duration) {
	if m != nil {
		m.programming.Observe(d.Seconds())
	}
}

func (m *Metrics) invalidRule() {
	if m != nil {
		m.invalid.Inc()
	}
}

func (m *Metrics) setPods(n int) {
	if m != nil {
		m.pods.Set(float64(n))
	}
}
