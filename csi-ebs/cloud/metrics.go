package cloud

import (
	"context"
	"time"

	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the EC2 API calls, named as the AWS EBS CSI driver names them.
type Metrics struct {
	duration  *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	throttles *prometheus.CounterVec
}

// NewMetrics registers the API metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "aws_ebs_csi_api_request_duration_seconds",
			Help:    "Duration of EC2 API requests, retries included, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"request"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aws_ebs_csi_api_request_errors_total",
			Help: "EC2 API requests that failed after retries, by operation and AWS error code.",
		}, []string{"request", "code"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aws_ebs_csi_api_request_throttles_total",
			Help: "EC2 API attempts answered with a throttling error, by operation.",
		}, []string{"request"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.errors, m.throttles)
	}
	return m
}

// apiOptions adds two middlewares: one around the whole operation (duration,
// final error) and one around each attempt (throttles that were retried).
func (m *Metrics) apiOptions(stack *middleware.Stack) error {
	op := middleware.InitializeMiddlewareFunc("berthAPIMetrics", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		name := middleware.GetOperationName(ctx)
		start := time.Now()
		out, md, err := next.HandleInitialize(ctx, in)
		m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if err != nil {
			code := errorCode(err)
			if code == "" {
				code = "unknown"
			}
			m.errors.WithLabelValues(name, code).Inc()
		}
		return out, md, err
	})
	attempt := middleware.FinalizeMiddlewareFunc("berthAPIAttemptMetrics", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		out, md, err := next.HandleFinalize(ctx, in)
		if err != nil {
			if _, ok := codeSentinel[errorCode(err)]; ok && isThrottle(errorCode(err)) {
				m.throttles.WithLabelValues(middleware.GetOperationName(ctx)).Inc()
			}
		}
		return out, md, err
	})
	if err := stack.Initialize.Add(op, middleware.Before); err != nil {
		return err
	}
	return stack.Finalize.Add(attempt, middleware.After)
}

func isThrottle(code string) bool {
	return codeSentinel[code] == ErrThrottled
}
