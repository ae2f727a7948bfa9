package introspect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-io/berth/ipamd/cloud"
)

// fakeCloud answers the pool's calls with the errors a test sets; with
// entered set, CreateENI waits for release.
type fakeCloud struct {
	cloud.Cloud
	createErr, assignErr, freeErr, mdErr error
	entered, release                     chan struct{}
}

func (f *fakeCloud) CreateENI(context.Context, cloud.CreateENIRequest) (cloud.ENI, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
		<-f.release
	}
	return cloud.ENI{ID: "eni-2"}, f.createErr
}

func (f *fakeCloud) AssignIPs(context.Context, string, int) ([]netip.Addr, error) {
	return nil, f.assignErr
}

func (f *fakeCloud) FreeENI(context.Context, string) error { return f.freeErr }

func (f *fakeCloud) MetadataENIs(context.Context) ([]cloud.ENI, error) { return nil, f.mdErr }

func TestIpamdErrorCount(t *testing.T) {
	f := &fakeCloud{}
	reg := prometheus.NewRegistry()
	c := InstrumentCloud(f, reg)
	ctx := context.Background()
	// Successes count nothing.
	_, _ = c.CreateENI(ctx, cloud.CreateENIRequest{})
	_, _ = c.AssignIPs(ctx, "eni-1", 1)
	_ = c.FreeENI(ctx, "eni-1")
	_, _ = c.MetadataENIs(ctx)

	f.createErr = fmt.Errorf("create: %w", cloud.ErrSubnetExhausted)
	f.assignErr = errors.New("AssignPrivateIpAddresses: InternalError")
	f.freeErr = errors.New("DeleteNetworkInterface: UnauthorizedOperation")
	f.mdErr = errors.New("imds: timeout")
	_, _ = c.CreateENI(ctx, cloud.CreateENIRequest{})
	_, _ = c.AssignIPs(ctx, "eni-1", 1)
	_ = c.FreeENI(ctx, "eni-1")
	_, _ = c.MetadataENIs(ctx)
	// A full ENI is not an error, as upstream.
	f.assignErr = fmt.Errorf("assign: %w", cloud.ErrLimitExceeded)
	_, _ = c.AssignIPs(ctx, "eni-1", 1)

	exp := `# HELP awscni_ipamd_error_count The number of errors encountered in ipamd
# TYPE awscni_ipamd_error_count counter
awscni_ipamd_error_count{fn="decreaseIPPoolFreeENIFailed"} 1
awscni_ipamd_error_count{fn="increaseIPPoolAllocENI"} 1
awscni_ipamd_error_count{fn="increaseIPPoolAllocIPAddressesFailed"} 2
awscni_ipamd_error_count{fn="reconcileFailedGetENIs"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_ipamd_error_count"); err != nil {
		t.Fatal(err)
	}
}

func TestIpamdActionInProgress(t *testing.T) {
	f := &fakeCloud{entered: make(chan struct{}), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c := InstrumentCloud(f, reg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.CreateENI(context.Background(), cloud.CreateENIRequest{})
	}()
	<-f.entered
	g := c.(*instrumentedCloud).inProgress
	if v := testutil.ToFloat64(g.WithLabelValues("increaseDatastorePool")); v != 1 {
		t.Errorf("while an ENI is being created: %v, want 1", v)
	}
	close(f.release)
	<-done
	if v := testutil.ToFloat64(g.WithLabelValues("increaseDatastorePool")); v != 0 {
		t.Errorf("after: %v, want 0", v)
	}
	_ = c.FreeENI(context.Background(), "eni-2")
	if v := testutil.ToFloat64(g.WithLabelValues("decreaseDatastorePool")); v != 0 {
		t.Errorf("after freeing an ENI: %v, want 0", v)
	}
}
