package introspect

import (
	"context"
	"errors"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/ipamd/cloud"
)

// InstrumentCloud wraps the Cloud the pool manager uses with the VPC CNI's
// ipamd activity metrics, labelled with upstream's fn names
// (pkg/ipamd/ipamd.go ipamdErrInc and IpamdActionsInprogress):
//
//   - awscni_ipamd_action_inprogress{fn}: 1 while the pool's EC2 calls to
//     grow (increaseDatastorePool) or shrink (decreaseDatastorePool) are in
//     flight;
//   - awscni_ipamd_error_count{fn}: a new ENI failed
//     (increaseIPPoolAllocENI), addresses could not be added
//     (increaseIPPoolAllocIPAddressesFailed, also counted with the former
//     when the subnet is full, as upstream does), a surplus ENI could not
//     be freed (decreaseIPPoolFreeENIFailed), reconcile could not list the
//     node's ENIs from IMDS (reconcileFailedGetENIs).
//
// Only the pool's own calls pass through it, so these count the pool's
// decisions and nothing else.
func InstrumentCloud(c cloud.Cloud, reg prometheus.Registerer) cloud.Cloud {
	ic := &instrumentedCloud{Cloud: c,
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ipamd_error_count",
			Help: "The number of errors encountered in ipamd"}, []string{"fn"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_ipamd_action_inprogress",
			Help: "The number of ipamd actions in progress"}, []string{"fn"}),
	}
	reg.MustRegister(ic.errs, ic.inProgress)
	return ic
}

type instrumentedCloud struct {
	cloud.Cloud
	errs       *prometheus.CounterVec
	inProgress *prometheus.GaugeVec
}

var _ cloud.Cloud = (*instrumentedCloud)(nil)

const (
	growing   = "increaseDatastorePool"
	shrinking = "decreaseDatastorePool"
)

// action marks fn in progress until the returned func runs.
func (c *instrumentedCloud) action(fn string) func() {
	g := c.inProgress.WithLabelValues(fn)
	g.Inc()
	return g.Dec
}

func (c *instrumentedCloud) failed(err error, fns ...string) {
	if err == nil {
		return
	}
	for _, fn := range fns {
		c.errs.WithLabelValues(fn).Inc()
	}
}

func (c *instrumentedCloud) CreateENI(ctx context.Context, req cloud.CreateENIRequest) (cloud.ENI, error) {
	defer c.action(growing)()
	e, err := c.Cloud.CreateENI(ctx, req)
	if errors.Is(err, cloud.ErrSubnetExhausted) {
		c.failed(err, "increaseIPPoolAllocENI", "increaseIPPoolAllocIPAddressesFailed")
	} else {
		c.failed(err, "increaseIPPoolAllocENI")
	}
	return e, err
}

// allocFailed counts a failed assignment; the ENI being full is not an
// error upstream (it re-reads the ENI instead).
func (c *instrumentedCloud) allocFailed(err error) {
	if err != nil && !errors.Is(err, cloud.ErrLimitExceeded) {
		c.failed(err, "increaseIPPoolAllocIPAddressesFailed")
	}
}

func (c *instrumentedCloud) AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error) {
	defer c.action(growing)()
	ips, err := c.Cloud.AssignIPs(ctx, eniID, n)
	c.allocFailed(err)
	return ips, err
}

func (c *instrumentedCloud) AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error) {
	defer c.action(growing)()
	ps, err := c.Cloud.AssignPrefixes(ctx, eniID, n)
	c.allocFailed(err)
	return ps, err
}

func (c *instrumentedCloud) UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error {
	defer c.action(shrinking)()
	return c.Cloud.UnassignIPs(ctx, eniID, ips)
}

func (c *instrumentedCloud) UnassignPrefixes(ctx context.Context, eniID string, ps []netip.Prefix) error {
	defer c.action(shrinking)()
	return c.Cloud.UnassignPrefixes(ctx, eniID, ps)
}

func (c *instrumentedCloud) FreeENI(ctx context.Context, eniID string) error {
	defer c.action(shrinking)()
	err := c.Cloud.FreeENI(ctx, eniID)
	c.failed(err, "decreaseIPPoolFreeENIFailed")
	return err
}

func (c *instrumentedCloud) MetadataENIs(ctx context.Context) ([]cloud.ENI, error) {
	enis, err := c.Cloud.MetadataENIs(ctx)
	c.failed(err, "reconcileFailedGetENIs")
	return enis, err
}
