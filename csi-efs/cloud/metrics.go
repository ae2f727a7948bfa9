package cloud

import (
	"context"
	"errors"
	"time"

	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the EFS API calls. The AWS EFS driver exports none, so the
// names are berth's own.
type Metrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

// NewMetrics registers the API metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_csi_efs_api_request_duration_seconds",
			Help:    "Duration of EFS API requests, retries included, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"request"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_efs_api_request_errors_total",
			Help: "EFS API requests that failed after retries, by operation and AWS error code.",
		}, []string{"request", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.errors)
	}
	return m
}

// apiOption times each operation (retries included) and counts its final
// error by AWS code.
func (m *Metrics) apiOption(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("berthEFSMetrics",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			name := middleware.GetOperationName(ctx)
			start := time.Now()
			out, md, err := next.HandleInitialize(ctx, in)
			m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
			if err != nil {
				code := "unknown"
				var api smithy.APIError
				if errors.As(err, &api) {
					code = api.ErrorCode()
				}
				m.errors.WithLabelValues(name, code).Inc()
			}
			return out, md, err
		}), middleware.Before)
}
