package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
)

// fakeCloud is a unit-test stand-in for the domain interface: it hands
// out sequential addresses and counts calls. The real proof runs against
// localcloud in the integration suite.
type fakeCloud struct {
	mu      sync.Mutex
	inst    cloud.Instance
	next    int
	calls   map[string]int
	enis    []cloud.ENI
	exhaust bool
	// subnets is what CNISubnets lists; CreateENI fails in full ones and
	// records where each ENI was asked for.
	subnets []cloud.Subnet
	full    map[string]bool
	tried   []string
	groups  [][]string // each CreateENI's security groups
	// unassigned are the addresses given back, in order; like EC2 for a
	// while, the listings above still show them.
	unassigned []netip.Addr
	// unassignErr fails UnassignIPs; fullENIs fail AssignIPs with EC2's
	// per-ENI address limit.
	unassignErr error
	fullENIs    map[string]bool
}

func newFake(typ string) *fakeCloud {
	info, _ := instancetypes.Lookup(typ)
	f := &fakeCloud{calls: map[string]int{}, inst: cloud.Instance{ID: "i-1", Type: typ, PrimaryENI: "eni-0", SubnetID: "subnet-1",
		SubnetCIDR: netip.MustParsePrefix("10.0.0.0/16"), PrimaryIP: netip.MustParseAddr("10.0.0.10"), Info: info}}
	f.enis = []cloud.ENI{{ID: "eni-0", Device: 0, MAC: "02:00:00:00:00:00", PrimaryIP: f.inst.PrimaryIP, SubnetCIDR: f.inst.SubnetCIDR, Attached: true}}
	f.next = 100
	return f
}

func (f *fakeCloud) ip() netip.Addr {
	f.next++
	return netip.AddrFrom4([4]byte{10, 0, byte(f.next >> 8), byte(f.next)})
}

func (f *fakeCloud) prefix() netip.Prefix {
	f.next += 16
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte((f.next + 4096) >> 8), byte(f.next & 0xf0)}), 28)
}

func (f *fakeCloud) count(op string) { f.mu.Lock(); f.calls[op]++; f.mu.Unlock() }

func (f *fakeCloud) Instance() cloud.Instance                          { return f.inst }
func (f *fakeCloud) AttachedENIs(context.Context) ([]cloud.ENI, error) { return f.enis, nil }

// MetadataENIs is what IMDS shows of the ENIs: no tags and no interface
// type (the network card it does show).
func (f *fakeCloud) MetadataENIs(context.Context) ([]cloud.ENI, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]cloud.ENI, len(f.enis))
	for i, e := range f.enis {
		e.Tags, e.InterfaceType = nil, ""
		e.Secondary = slices.Clone(e.Secondary)
		out[i] = e
	}
	return out, nil
}
func (f *fakeCloud) CNISubnets(context.Context) ([]cloud.Subnet, error) { return f.subnets, nil }
func (f *fakeCloud) FreeENI(_ context.Context, id string) error {
	f.count("FreeENI")
	f.count("FreeENI:" + id)
	return nil
}
func (f *fakeCloud) UnassignIPs(_ context.Context, _ string, ips []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Unassign"]++
	if f.unassignErr != nil {
		return f.unassignErr
	}
	f.unassigned = append(f.unassigned, ips...)
	return nil
}
func (f *fakeCloud) UnassignPrefixes(context.Context, string, []netip.Prefix) error {
	f.count("Unassign")
	return nil
}

func (f *fakeCloud) CreateENI(_ context.Context, r cloud.CreateENIRequest) (cloud.ENI, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["CreateENI"]++
	f.tried = append(f.tried, r.SubnetID)
	f.groups = append(f.groups, r.SecurityGroups)
	if f.exhaust || f.full[r.SubnetID] {
		return cloud.ENI{}, fmt.Errorf("create: %w", cloud.ErrSubnetExhausted)
	}
	e := cloud.ENI{ID: fmt.Sprintf("eni-%d", r.Device), Device: r.Device, Card: r.Card, MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", r.Card, r.Device), PrimaryIP: f.ip(), SubnetCIDR: f.inst.SubnetCIDR}
	if r.Card > 0 {
		e.ID = fmt.Sprintf("eni-c%d-%d", r.Card, r.Device)
	}
	for i := 0; i < r.IPs; i++ {
		e.Secondary = append(e.Secondary, f.ip())
	}
	for i := 0; i < r.Prefixes; i++ {
		e.Prefixes = append(e.Prefixes, f.prefix())
	}
	return e, nil
}

func (f *fakeCloud) AssignIPs(_ context.Context, eni string, n int) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["AssignIPs"]++
	if f.exhaust {
		return nil, cloud.ErrSubnetExhausted
	}
	if f.fullENIs[eni] {
		return nil, fmt.Errorf("assign: Number of private addresses will exceed limit: %w", cloud.ErrLimitExceeded)
	}
	var out []netip.Addr
	for i := 0; i < n; i++ {
		out = append(out, f.ip())
	}
	if eni == "eni-0" {
		f.enis[0].Secondary = append(f.enis[0].Secondary, out...)
	}
	return out, nil
}

func (f *fakeCloud) AssignPrefixes(_ context.Context, _ string, n int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["AssignPrefixes"]++
	var out []netip.Prefix
	for i := 0; i < n; i++ {
		out = append(out, f.prefix())
	}
	return out, nil
}

type nopHost struct{}

func (nopHost) SetupENI(context.Context, net.HardwareAddr, int, int, netip.Addr, netip.Prefix) error {
	return nil
}

func newPool(t *testing.T, typ string, env map[string]string) (*Pool, *fakeCloud, *datastore.Store) {
	t.Helper()
	return newPoolWith(t, newFake(typ), nopHost{}, env)
}

func newPoolWith(t *testing.T, f *fakeCloud, host HostNet, env map[string]string) (*Pool, *fakeCloud, *datastore.Store) {
	t.Helper()
	cfg, err := config.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ds := datastore.New(cfg.IPCooldown, nil)
	p := New(cfg, f, ds, host, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := p.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p, f, ds
}

// recordingHost records which ENIs were configured on the host.
type recordingHost struct {
	mu   sync.Mutex
	macs map[string]int
}

func (h *recordingHost) SetupENI(_ context.Context, mac net.HardwareAddr, dev, _ int, _ netip.Addr, _ netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.macs == nil {
		h.macs = map[string]int{}
	}
	h.macs[mac.String()] = dev
	return nil
}

func podKey(i int) datastore.Key {
	return datastore.Key{NetworkName: "n", ContainerID: fmt.Sprint(i), IfName: "eth0"}
}

// later moves the pool's clock past the young-ENI and shrink intervals.
func later(p *Pool, d time.Duration) {
	t := time.Now().Add(d)
	p.mu.Lock()
	p.now = func() time.Time { return t }
	p.lastShrink = time.Time{}
	p.mu.Unlock()
}

func TestMaxPods(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		env  map[string]string
		want int
	}{
		{"m5.large", nil, 29},
		{"t3.nano", nil, 4},
		{"m5.large", map[string]string{"ENABLE_PREFIX_DELEGATION": "true"}, 110},
		{"c5n.18xlarge", map[string]string{"ENABLE_PREFIX_DELEGATION": "true"}, 250},
		{"m5.large", map[string]string{"MAX_ENI": "2"}, 20},
		{"m5.large", map[string]string{"MAX_PODS": "7"}, 7},
	} {
		cfg, _ := config.FromEnv(func(k string) string { return tc.env[k] })
		info, _ := instancetypes.Lookup(tc.typ)
		if got := MaxPods(cfg, cloud.Instance{Info: info}); got != tc.want {
			t.Errorf("%s %v: max pods %d, want %d", tc.typ, tc.env, got, tc.want)
		}
	}
}

func TestWarmENITargetFillsOneENIInOneCall(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	p.reconcile(context.Background())
	st := ds.Stats()
	// WARM_ENI_TARGET=1 on m5.large: 9 free addresses, all on the primary ENI, one call.
	if st.Total != 9 || f.calls["AssignIPs"] != 1 || f.calls["CreateENI"] != 0 {
		t.Fatalf("stats %+v calls %v", st, f.calls)
	}
	p.reconcile(context.Background())
	if f.calls["AssignIPs"] != 1 {
		t.Fatalf("a full pool made EC2 calls: %v", f.calls)
	}
}

func TestSurgeSizesOneRequest(t *testing.T) {
	p, f, ds := newPool(t, "m5.4xlarge", map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1"})
	p.reconcile(context.Background())
	for i := 0; i < 20; i++ {
		if _, err := ds.Assign(datastore.Key{NetworkName: "n", ContainerID: fmt.Sprint(i), IfName: "eth0"}, datastore.Meta{}); err != nil && i == 0 {
			t.Fatal(err)
		}
	}
	// 20 ADDs are waiting: the next reconcile asks for them in one call
	// (m5.4xlarge has room for 29 secondary addresses per ENI).
	var dones []func()
	for i := 0; i < 20; i++ {
		dones = append(dones, p.Wait())
	}
	before := f.calls["AssignIPs"]
	p.reconcile(context.Background())
	if f.calls["AssignIPs"]-before != 1 || ds.Stats().Free-ds.Stats().Cooling < 20 {
		t.Fatalf("surge: %d calls, stats %+v", f.calls["AssignIPs"]-before, ds.Stats())
	}
	for _, d := range dones {
		d()
	}
}

func TestPrefixModeAndMaxPods(t *testing.T) {
	p, f, ds := newPool(t, "t3.nano", map[string]string{"ENABLE_PREFIX_DELEGATION": "true"})
	p.reconcile(context.Background())
	if ds.Stats().Prefixes != 1 || f.calls["AssignPrefixes"] != 1 {
		t.Fatalf("prefix mode: %+v %v", ds.Stats(), f.calls)
	}
	// t3.nano, prefix mode: 2*(2-1)*16+2 = 34 pods.
	if p.MaxPodsLimit() != 34 {
		t.Fatalf("max pods %d", p.MaxPodsLimit())
	}
}

// WARM_PREFIX_TARGET counts whole free prefixes, as in the VPC CNI: after
// a burst the pool goes back to exactly that many, and addresses freed
// inside prefixes pods still use do not make a warm prefix go.
func TestWarmPrefixTargetCountsFreePrefixes(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1", "IP_COOLDOWN_PERIOD": "0"})
	p.reconcile(context.Background())
	for i := range 20 {
		if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
			p.reconcile(context.Background())
			if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		p.reconcile(context.Background())
	}
	if st := ds.Stats(); st.Prefixes != 3 {
		t.Fatalf("20 pods: %+v, want 3 prefixes (2 used, 1 warm)", st)
	}
	// Half the pods go: their addresses are inside used prefixes.
	for i := range 10 {
		ds.Release(podKey(i))
	}
	calls := f.mutating()
	later(p, time.Minute)
	p.reconcile(context.Background())
	if st := ds.Stats(); st.Prefixes != 3 || f.mutating() != calls {
		t.Fatalf("10 of 20 pods gone: %+v after %d EC2 calls, want the 3 prefixes kept", st, f.mutating()-calls)
	}
	for i := 10; i < 20; i++ {
		ds.Release(podKey(i))
	}
	later(p, 2*time.Minute)
	p.reconcile(context.Background())
	if st := ds.Stats(); st.Prefixes != 1 {
		t.Fatalf("all pods gone: %+v, want the 1 warm prefix", st)
	}
}

// With every warm target at 0 a new node still gets one free address (a
// whole ENI's or a prefix, as the pool grows), as the VPC CNI keeps one:
// ipamd writes the conflist only once an address is free.
func TestZeroWarmTargetKeepsOneAddress(t *testing.T) {
	for _, env := range []map[string]string{{"WARM_ENI_TARGET": "0"}, {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "0"}} {
		p, f, ds := newPool(t, "m5.large", env)
		p.reconcile(context.Background())
		if st := ds.Stats(); st.Free == 0 {
			t.Errorf("%v: no free address on a new node: %+v", env, st)
		}
		// and keeps it: no shrink and grow again every 30 s.
		calls := f.mutating()
		later(p, 2*time.Minute)
		p.reconcile(context.Background())
		if st := ds.Stats(); st.Free == 0 || f.mutating() != calls {
			t.Errorf("%v: after a shrink's turn %+v, %d EC2 calls", env, st, f.mutating()-calls)
		}
	}
}

func TestBlockedAtMaxPodsAndOnExhaustion(t *testing.T) {
	p, f, ds := newPool(t, "t3.nano", map[string]string{"MAX_PODS": "1"})
	p.reconcile(context.Background())
	if _, err := ds.Assign(datastore.Key{NetworkName: "n", ContainerID: "a", IfName: "eth0"}, datastore.Meta{}); err != nil {
		t.Fatal(err)
	}
	if reason, _ := p.Blocked(); reason == nil {
		t.Fatal("not blocked at max pods")
	}
	p2, f2, _ := newPool(t, "m5.large", nil)
	f2.exhaust = true
	p2.reconcile(context.Background())
	if reason, _ := p2.Blocked(); reason == nil {
		t.Fatal("subnet exhaustion does not block")
	}
	_ = f
}

// Pods retried against a full subnet do not turn into EC2 calls: the
// backoff holds while ADDs wait (they get the reason meanwhile), and
// growth is tried again once it ends.
func TestBackoffHoldsWhileADDsWait(t *testing.T) {
	p, f, _ := newPool(t, "m5.large", nil)
	f.exhaust = true
	done := p.Wait()
	defer done()
	p.reconcile(context.Background())
	calls := f.mutating()
	if calls == 0 {
		t.Fatal("no growth tried")
	}
	for range 5 { // a retried pod's ADDs, each kicking the pool
		release := p.Wait()
		p.reconcile(context.Background())
		release()
	}
	if n := f.mutating() - calls; n != 0 {
		t.Fatalf("%d more EC2 calls during the backoff of an exhausted subnet", n)
	}
	if reason, _ := p.Blocked(); !errors.Is(reason, cloud.ErrSubnetExhausted) {
		t.Fatalf("waiting ADDs are told %v", reason)
	}
	later(p, 121*time.Second)
	p.reconcile(context.Background())
	if f.mutating() == calls {
		t.Fatal("growth not tried again after the backoff")
	}
}

// EC2's per-ENI address limit on one ENI (it holds addresses the pool
// does not count, after an unassign that failed) is not a full node: the
// pool grows on a new ENI and waiting ADDs are not told "node at its
// limit". And a failed unassign puts the addresses back, so the pool
// does not undercount the ENI in the first place.
func TestENIAddressLimitIsNotANodeLimit(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", map[string]string{"WARM_IP_TARGET": "2"})
	p.reconcile(context.Background())
	if st := ds.Stats(); st.Total != 2 {
		t.Fatalf("pool %+v, want 2", st)
	}
	// Shrink with an unassign that fails: the addresses stay counted.
	f.unassignErr = errors.New("UnassignPrivateIpAddresses: InternalError")
	p.cfg.WarmIPTarget = 0
	p.cfg.MinimumIPTarget = 1
	later(p, time.Minute)
	p.reconcile(context.Background())
	if st := ds.Stats(); st.Total != 2 {
		t.Fatalf("after a failed unassign the pool has %d addresses, want the 2 the ENI still has", st.Total)
	}
	f.unassignErr = nil
	f.fullENIs = map[string]bool{"eni-0": true}
	p.cfg.MinimumIPTarget = 6
	done := p.Wait()
	defer done()
	p.reconcile(context.Background())
	if f.calls["CreateENI"] != 1 {
		t.Fatalf("%d ENIs created after the primary ENI's address limit, want 1", f.calls["CreateENI"])
	}
	if reason, _ := p.Blocked(); reason != nil {
		t.Fatalf("blocked: %v", reason)
	}
}

func TestShrinkFreesYoungENIsOnlyLater(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", map[string]string{"WARM_IP_TARGET": "30", "MAX_PODS": "100"})
	p.reconcile(context.Background())
	if ds.Stats().ENIs < 2 {
		t.Fatalf("WARM_IP_TARGET=30 on m5.large needs more ENIs: %+v", ds.Stats())
	}
	p.cfg.WarmIPTarget = 2
	p.lastShrink = time.Time{}
	p.reconcile(context.Background())
	if f.calls["FreeENI"] != 0 {
		t.Fatal("freed an ENI younger than a minute")
	}
	if f.calls["Unassign"] == 0 {
		t.Fatal("surplus addresses were not returned")
	}
	now := time.Now().Add(2 * time.Minute)
	p.now = func() time.Time { return now }
	p.reconcile(context.Background())
	if f.calls["FreeENI"] == 0 && ds.Stats().ENIs > 1 {
		t.Fatalf("surplus ENI kept: %+v %v", ds.Stats(), f.calls)
	}
}

func TestReconcileAdoptsAndDrops(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	p.reconcile(context.Background())
	p.RegisterMetrics(prometheus.NewRegistry())
	counted := func(fn string) int { return int(testutil.ToFloat64(p.reconciled.WithLabelValues(fn))) }
	before := ds.Stats().Total
	// Someone assigned an address out of band; EC2 and IMDS show it.
	extra := netip.MustParseAddr("10.0.9.9")
	f.mu.Lock()
	f.enis[0].Secondary = append(f.enis[0].Secondary, extra)
	f.mu.Unlock()
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ds.Stats().Total != before+1 {
		t.Fatalf("adopted nothing: %+v", ds.Stats())
	}
	if n := counted("eniDataStorePoolReconcileAdd"); n != 1 {
		t.Fatalf("awscni_reconcile_count{fn=eniDataStorePoolReconcileAdd} %d, want 1", n)
	}
	// EC2 drops them all; only once they are older than IMDS's lag does
	// their absence from IMDS count.
	f.mu.Lock()
	f.enis[0].Secondary = nil
	f.mu.Unlock()
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ds.Stats().Total != before+1 {
		t.Fatalf("dropped addresses younger than the IMDS lag: %+v", ds.Stats())
	}
	later := time.Now().Add(2 * time.Minute)
	p.now = func() time.Time { return later }
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ds.Stats().Total != 0 {
		t.Fatalf("addresses EC2 no longer has were kept: %+v", ds.Stats())
	}
	if n := counted("eniIPPoolReconcileDel"); n != before+1 {
		t.Fatalf("awscni_reconcile_count{fn=eniIPPoolReconcileDel} %d, want %d", n, before+1)
	}
}

// An ENI ipamd attached within the minute, with its addresses, survives a
// reconcile whose EC2 listing does not show it yet (EC2 is eventually
// consistent); a minute later its absence counts.
func TestReconcileKeepsWhatGrowAddedWithinTheMinute(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	p.reconcile(context.Background())
	for i := range 9 {
		if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	p.reconcile(context.Background()) // a new ENI, which f's listings lack
	if f.calls["CreateENI"] != 1 || len(ds.ENIs()) != 2 {
		t.Fatalf("no second ENI: %v, %d ENIs", f.calls, len(ds.ENIs()))
	}
	total := ds.Stats().Total
	// Something else makes IMDS differ, so EC2 is asked.
	f.mu.Lock()
	f.enis[0].Secondary = append(f.enis[0].Secondary, netip.MustParseAddr("10.0.9.9"))
	f.mu.Unlock()
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(ds.ENIs()) != 2 || ds.Stats().Total != total+1 {
		t.Fatalf("a listing that lags dropped the new ENI: %d ENIs, %+v", len(ds.ENIs()), ds.Stats())
	}
	later(p, 2*time.Minute)
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(ds.ENIs()) != 1 {
		t.Fatalf("an ENI EC2 does not attach a minute on is kept: %d ENIs", len(ds.ENIs()))
	}
}

func (f *fakeCloud) LeakedENIs(context.Context) ([]string, error) {
	return []string{"eni-leaked-1", "eni-0", "eni-leaked-2"}, nil
}

func (f *fakeCloud) DeleteENI(_ context.Context, id string) error {
	f.count("DeleteENI:" + id)
	return nil
}

func TestLeakedENICleanupSparesENIsInUse(t *testing.T) {
	p, f, _ := newPool(t, "m5.large", nil)
	if n := p.cleanupLeakedOnce(context.Background()); n != 2 {
		t.Fatalf("deleted %d leaked ENIs, want 2", n)
	}
	if f.calls["DeleteENI:eni-0"] != 0 {
		t.Fatal("deleted the primary ENI, which the datastore uses")
	}
}

// An ENI someone else attached and tagged no_manage=true, an EFA-only ENI
// on network card 1 and a trunk ENI are never configured, never give pods
// addresses, never freed, and their device indexes and ENI slots are
// respected.
func TestUnmanagedENIsAreLeftAlone(t *testing.T) {
	f := newFake("m5.large")
	noManage := cloud.ENI{ID: "eni-user", Device: 1, MAC: "02:00:00:00:00:77", PrimaryIP: netip.MustParseAddr("10.0.5.5"),
		Secondary:  []netip.Addr{netip.MustParseAddr("10.0.5.6"), netip.MustParseAddr("10.0.5.7")},
		SubnetCIDR: f.inst.SubnetCIDR, Attached: true, Tags: map[string]string{NoManageTag: "true"}}
	efa := cloud.ENI{ID: "eni-efa", Device: 1, Card: 1, MAC: "02:00:00:00:00:88", Attached: true, InterfaceType: "efa-only"}
	emptyNoManage := cloud.ENI{ID: "eni-empty", Device: 2, MAC: "02:00:00:00:00:99", PrimaryIP: netip.MustParseAddr("10.0.5.9"),
		SubnetCIDR: f.inst.SubnetCIDR, Attached: true, Tags: map[string]string{NoManageTag: "true"}}
	f.enis = append(f.enis, noManage, efa, emptyNoManage)
	host := &recordingHost{}
	p, f, ds := newPoolWith(t, f, host, map[string]string{"IP_COOLDOWN_PERIOD": "0"})
	if len(host.macs) != 0 {
		t.Fatalf("configured ENIs ipamd does not manage: %v", host.macs)
	}
	p.reconcile(context.Background())
	// Hand out every address the pool can get: m5.large has 3 ENIs, two of
	// them taken by the no_manage ENIs, so only the primary's 9.
	for i := 0; ; i++ {
		a, err := ds.Assign(podKey(i), datastore.Meta{})
		if err != nil {
			break
		}
		if a.ENI != f.inst.PrimaryENI {
			t.Fatalf("pod %d got %s from %s", i, a.IP, a.ENI)
		}
	}
	done := p.Wait()
	p.reconcile(context.Background())
	done()
	if f.calls["CreateENI"] != 0 {
		t.Fatalf("created an ENI past the limit the unmanaged ENIs take: %v", f.calls)
	}
	if reason, _ := p.Blocked(); !errors.Is(reason, ErrNodeCapacity) {
		t.Fatalf("a full node is not blocked: %v", reason)
	}
	for _, a := range ds.Allocations() {
		ds.Release(a.Key)
	}
	later(p, 5*time.Minute)
	p.reconcile(context.Background())
	if f.calls["FreeENI"] != 0 {
		t.Fatalf("freed ENIs ipamd does not manage: %v", f.calls)
	}
	if _, err := ds.Assign(podKey(100), datastore.Meta{}); err != nil {
		t.Fatal(err)
	}
	// IMDS and EC2 still list them: reconciling adopts none.
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, e := range ds.ENIs() {
		if e.ID != f.inst.PrimaryENI {
			t.Fatalf("the pool draws from %s", e.ID)
		}
	}
}

// A new ENI takes a device index no unmanaged ENI uses.
func TestNewENISkipsUnmanagedDevices(t *testing.T) {
	f := newFake("m5.large")
	f.enis = append(f.enis, cloud.ENI{ID: "eni-trunk", Device: 1, MAC: "02:00:00:00:00:77", PrimaryIP: netip.MustParseAddr("10.0.5.5"),
		SubnetCIDR: f.inst.SubnetCIDR, Attached: true, InterfaceType: "trunk"})
	p, f, ds := newPoolWith(t, f, nopHost{}, map[string]string{"WARM_IP_TARGET": "12"})
	p.reconcile(context.Background())
	if f.calls["CreateENI"] != 1 {
		t.Fatalf("calls %v", f.calls)
	}
	for _, e := range ds.ENIs() {
		if e.ID == "eni-trunk" || (!e.IsPrimary && e.DeviceIndex != 2) {
			t.Fatalf("ENI %s at device %d", e.ID, e.DeviceIndex)
		}
	}
}

// fill assigns addresses to new pods until the pool cannot grow, and
// returns how many pods got one.
func fill(t *testing.T, p *Pool, ds *datastore.Store) int {
	t.Helper()
	n := 0
	for ; n < 100; n++ {
		if _, err := ds.Assign(podKey(n), datastore.Meta{}); err == nil {
			continue
		}
		done := p.Wait()
		p.reconcile(context.Background())
		done()
		if _, err := ds.Assign(podKey(n), datastore.Meta{}); err != nil {
			break
		}
	}
	return n
}

// Once ipamd gives an ENI back, the node is no longer at its ENI limit:
// the old reason must not fail the next ADD.
func TestBlockedClearsWhenTheNodeHasRoomAgain(t *testing.T) {
	p, f, ds := newPool(t, "t3.nano", map[string]string{"WARM_IP_TARGET": "1", "IP_COOLDOWN_PERIOD": "0"})
	// t3.nano: 2 ENIs with one secondary address each.
	if n := fill(t, p, ds); n != 2 {
		t.Fatalf("%d pods fit, want 2", n)
	}
	if reason, _ := p.Blocked(); !errors.Is(reason, ErrNodeCapacity) {
		t.Fatalf("full node: reason %v", reason)
	}
	for _, a := range ds.Allocations() {
		ds.Release(a.Key)
	}
	later(p, 5*time.Minute)
	p.reconcile(context.Background()) // shrinks to one address: frees the secondary ENI
	if f.calls["FreeENI"] != 1 {
		t.Fatalf("shrink: %+v %v", ds.Stats(), f.calls)
	}
	if _, err := ds.Assign(podKey(0), datastore.Meta{}); err != nil {
		t.Fatal(err)
	}
	if reason, _ := p.Blocked(); reason != nil {
		t.Fatalf("a node with a free ENI slot reports %v", reason)
	}
	done := p.Wait()
	p.reconcile(context.Background())
	done()
	if _, err := ds.Assign(podKey(1), datastore.Meta{}); err != nil {
		t.Fatalf("second pod after the shrink: %v (%v)", err, f.calls)
	}
}

// A node at its limit with an address in its cooldown is not blocked: the
// address comes back.
func TestNotBlockedWhileAnAddressCools(t *testing.T) {
	p, _, ds := newPool(t, "t3.nano", map[string]string{"WARM_IP_TARGET": "1"})
	if n := fill(t, p, ds); n != 2 {
		t.Fatalf("%d pods fit, want 2", n)
	}
	ds.Release(podKey(0))
	if reason, _ := p.Blocked(); reason != nil {
		t.Fatalf("an address is cooling, yet the pool reports %v", reason)
	}
}

// mutating counts the EC2 calls that change something.
func (f *fakeCloud) mutating() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls["AssignIPs"] + f.calls["AssignPrefixes"] + f.calls["CreateENI"] + f.calls["Unassign"] + f.calls["FreeENI"]
}

// In WARM_ENI_TARGET mode a new ENI comes with all its addresses, as in
// the VPC CNI: pods started one at a time cost no call each.
func TestWarmENITargetAsksForWholeENIs(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	for i := 0; i < 8; i++ {
		p.reconcile(context.Background())
		if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
	}
	p.reconcile(context.Background())
	// m5.large: 9 secondary addresses per ENI; the primary's in one call,
	// the second ENI's (for the warm ENI) in another.
	if n := f.mutating(); n > 2 {
		t.Fatalf("%d mutating EC2 calls for 8 pods: %v", n, f.calls)
	}
	if st := ds.Stats(); st.Total != 18 {
		t.Fatalf("pool %+v, want two full ENIs", st)
	}
}

// Addresses ipamd just gave back may still be listed by EC2 and IMDS for a
// while; reconcile must not take them back into the pool.
func TestReconcileIgnoresJustReleasedAddresses(t *testing.T) {
	p, f, ds := newPool(t, "m5.4xlarge", map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "20"})
	p.reconcile(context.Background())
	if ds.Stats().Total != 20 {
		t.Fatalf("grow: %+v", ds.Stats())
	}
	p.cfg.WarmIPTarget = 2
	p.lastShrink = time.Time{}
	p.reconcile(context.Background())
	if ds.Stats().Total != 2 || f.calls["Unassign"] != 1 {
		t.Fatalf("shrink: %+v %v", ds.Stats(), f.calls)
	}
	// The fake EC2 and IMDS still list all 20 on the primary ENI.
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := ds.Stats(); st.Total != 2 {
		t.Fatalf("reconcile took back released addresses: %+v", st)
	}
}

// With ENABLE_SUBNET_DISCOVERY a new ENI goes to the candidate subnet with
// the most free addresses: the node's own subnet unless tagged
// kubernetes.io/role/cni=0, others only when tagged with another value;
// an exhausted subnet hands over to the next.
func TestNewENISubnetChoice(t *testing.T) {
	role := func(v string) map[string]string { return map[string]string{SubnetRoleTag: v} }
	for _, tc := range []struct {
		name    string
		subnets []cloud.Subnet
		full    []string
		tried   []string
		err     error
	}{
		{name: "tagged subnets by free addresses, exhausted ones skipped", subnets: []cloud.Subnet{
			{ID: "subnet-1", Available: 100},
			{ID: "subnet-untagged", Available: 5000},
			{ID: "subnet-out", Available: 4000, Tags: role("0")},
			{ID: "subnet-b", Available: 300, Tags: role("shared")},
			{ID: "subnet-a", Available: 500, Tags: role("1")},
		}, full: []string{"subnet-a"}, tried: []string{"subnet-a", "subnet-b"}},
		{name: "the node's subnet when it has the most", subnets: []cloud.Subnet{
			{ID: "subnet-a", Available: 50, Tags: role("1")},
			{ID: "subnet-1", Available: 100},
		}, tried: []string{"subnet-1"}},
		{name: "every candidate exhausted", subnets: []cloud.Subnet{
			{ID: "subnet-1", Available: 100},
			{ID: "subnet-a", Available: 50, Tags: role("1")},
		}, full: []string{"subnet-1", "subnet-a"}, tried: []string{"subnet-1", "subnet-a"}, err: cloud.ErrSubnetExhausted},
		{name: "the node's subnet opted out", subnets: []cloud.Subnet{
			{ID: "subnet-1", Available: 100, Tags: role("0")},
		}, err: ErrNoSubnet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake("m5.large")
			f.subnets, f.full = tc.subnets, map[string]bool{}
			for _, id := range tc.full {
				f.full[id] = true
			}
			// WARM_IP_TARGET=12: the primary ENI holds 9, so a new ENI is needed.
			p, f, _ := newPoolWith(t, f, nopHost{}, map[string]string{"WARM_IP_TARGET": "12"})
			p.reconcile(context.Background())
			if !slices.Equal(f.tried, tc.tried) {
				t.Errorf("CreateENI in %v, want %v", f.tried, tc.tried)
			}
			reason, _ := p.Blocked()
			if tc.err == nil && reason != nil || tc.err != nil && !errors.Is(reason, tc.err) {
				t.Errorf("reason %v, want %v", reason, tc.err)
			}
		})
	}
}

// A pod that comes and goes while shrink picks the surplus leaves its
// address cooling; shrink must not give that address back to EC2.
func TestShrinkKeepsAddressesFreedMeanwhile(t *testing.T) {
	p, f, ds := newPool(t, "m5.4xlarge", map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "20"})
	p.reconcile(context.Background())
	if st := ds.Stats(); st.Total != 20 {
		t.Fatalf("grow: %+v", st)
	}
	now, calls := time.Now(), 0
	var churned []netip.Addr
	p.now = func() time.Time {
		// The second call is shrink's age check of the ENI, after it read
		// the ENI's addresses: a burst of short-lived pods runs then.
		if calls++; calls == 2 {
			for i := range 20 {
				a, err := ds.Assign(podKey(i), datastore.Meta{})
				if err != nil {
					t.Fatalf("pod %d: %v", i, err)
				}
				churned = append(churned, a.IP)
			}
			for i := range 20 {
				ds.Release(podKey(i))
			}
		}
		return now
	}
	p.shrink(context.Background(), 18)
	if len(churned) != 20 {
		t.Fatalf("the pods ran %d times, want 20", len(churned))
	}
	for _, a := range f.unassigned {
		if slices.Contains(churned, a) {
			t.Fatalf("%s given back to EC2 during its cooldown (%d addresses given back)", a, len(f.unassigned))
		}
	}
	if st := ds.Stats(); st.Total != 20 || st.Cooling != 20 {
		t.Fatalf("pool after the shrink %+v, want all 20 addresses cooling", st)
	}
}

// An address EC2 took back leaves the pool at the next reconcile even
// during its cooldown: it may be another ENI's by now.
func TestReconcileDropsCoolingAddressEC2TookBack(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	p.reconcile(context.Background())
	a, err := ds.Assign(podKey(0), datastore.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	ds.Release(podKey(0))
	before := ds.Stats()
	f.mu.Lock()
	f.enis[0].Secondary = slices.DeleteFunc(f.enis[0].Secondary, func(ip netip.Addr) bool { return ip == a.IP })
	f.mu.Unlock()
	later(p, 2*time.Minute) // settled: past the IMDS lag
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := ds.Stats(); st.Total != before.Total-1 || st.Cooling != 0 {
		t.Fatalf("pool %+v after EC2 took back cooling %s (before %+v)", st, a.IP, before)
	}
}

// staleEC2 answers AttachedENIs with EC2's view at the moment of the call,
// but only once the test lets the answer through: whatever the pool does
// meanwhile is missing from it.
type staleEC2 struct {
	*fakeCloud
	once   sync.Once
	calls  int
	listed chan struct{} // closed when the first listing is taken
	answer chan struct{} // close to let it return
}

func (s *staleEC2) AttachedENIs(context.Context) ([]cloud.ENI, error) {
	s.fakeCloud.mu.Lock()
	l := slices.Clone(s.fakeCloud.enis)
	for i := range l {
		l[i].Secondary = slices.Clone(l[i].Secondary)
	}
	s.calls++
	s.fakeCloud.mu.Unlock()
	s.once.Do(func() { close(s.listed) })
	<-s.answer
	return l, nil
}

// reconcileInFlight starts a ReconcileOnce that stops in its EC2 listing
// (answer releases it; its result comes on the channel). An address
// assigned out of band makes IMDS differ, so reconcile asks EC2.
func reconcileInFlight(ctx context.Context, p *Pool, f *fakeCloud) (*staleEC2, chan error) {
	f.mu.Lock()
	f.enis[0].Secondary = append(f.enis[0].Secondary, netip.MustParseAddr("10.0.9.9"))
	f.mu.Unlock()
	ec2 := &staleEC2{fakeCloud: f, listed: make(chan struct{}), answer: make(chan struct{})}
	p.cloud = ec2
	reconciled := make(chan error)
	go func() { reconciled <- p.ReconcileOnce(ctx) }()
	<-ec2.listed
	return ec2, reconciled
}

// Reconcile's EC2 listing may be older than a shrink that runs while it is
// in flight: the addresses shrink gave back must not come back into the
// pool, where the next ADD could take one EC2 has given to another ENI.
// The shrink does not wait for the listing; the listing is taken again.
func TestReconcileDoesNotRetakeWhatShrinkGaveBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFake("m5.4xlarge")
		p, _, ds := newPoolWith(t, f, nopHost{}, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "20"})
		p.reconcile(ctx)
		if st := ds.Stats(); st.Total != 20 {
			t.Fatalf("grow: %+v", st)
		}
		ec2, reconciled := reconcileInFlight(ctx, p, f)
		// The pods are gone: WARM_IP_TARGET=2 leaves 19 addresses surplus.
		p.mu.Lock()
		p.cfg.WarmIPTarget, p.lastShrink = 2, time.Time{}
		p.mu.Unlock()
		shrunk := make(chan struct{})
		go func() { p.reconcile(ctx); close(shrunk) }()
		synctest.Wait()
		select {
		case <-shrunk: // it does not wait for EC2's answer to reconcile
		default:
			t.Fatal("the shrink waits for reconcile's EC2 listing")
		}
		close(ec2.answer)
		if err := <-reconciled; err != nil {
			t.Fatal(err)
		}
		if ec2.calls != 2 {
			t.Fatalf("%d EC2 listings, want 2: the one the shrink ran beside is thrown away", ec2.calls)
		}
		given := map[netip.Addr]bool{}
		for _, a := range f.unassigned {
			given[a] = true
		}
		// 18 given back; the address assigned out of band is adopted.
		if st := ds.Stats(); st.Total != 3 || len(given) != 18 {
			t.Fatalf("pool %+v with %d addresses given back, want 3 addresses and 18 given back", st, len(given))
		}
		for _, e := range ds.ENIs() {
			for _, c := range ds.CIDRs(e.ID) {
				if given[c.Prefix.Addr()] {
					t.Errorf("%s is in the pool and was given back to EC2", c.Prefix)
				}
			}
		}
		for i := range 3 {
			a, err := ds.Assign(podKey(i), datastore.Meta{})
			if err != nil {
				t.Fatalf("ADD %d: %v", i, err)
			}
			if given[a.IP] {
				t.Fatalf("ADD %d got %s, which EC2 was given back", i, a.IP)
			}
		}
	})
}

// An ADD never waits for reconcile's EC2 listing: the pool's EC2 lock is
// not on its path.
func TestADDDoesNotWaitForReconcile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFake("m5.large")
		p, _, ds := newPoolWith(t, f, nopHost{}, nil)
		p.reconcile(ctx)
		ec2, reconciled := reconcileInFlight(ctx, p, f)
		// What the server does for an ADD; a deadlock here fails the test.
		done := p.Wait()
		if reason, _ := p.Blocked(); reason != nil {
			t.Errorf("blocked: %v", reason)
		}
		if _, err := ds.Assign(podKey(0), datastore.Meta{}); err != nil {
			t.Errorf("ADD during reconcile: %v", err)
		}
		done()
		close(ec2.answer)
		if err := <-reconciled; err != nil {
			t.Fatal(err)
		}
	})
}

// A grow, and the ADDs waiting for it, do not wait for reconcile's EC2
// listing either (seconds when EC2 throttles); the listing, older than the
// grow, is taken again, so the grow's new addresses stay in the pool.
func TestGrowDoesNotWaitForReconcileListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFake("m5.4xlarge")
		p, _, ds := newPoolWith(t, f, nopHost{}, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "2"})
		p.reconcile(ctx)
		before := ds.Stats().Total
		ec2, reconciled := reconcileInFlight(ctx, p, f)
		p.mu.Lock()
		p.cfg.WarmIPTarget = 12
		p.mu.Unlock()
		grown := make(chan struct{})
		go func() { p.reconcile(ctx); close(grown) }()
		synctest.Wait()
		select {
		case <-grown:
		default:
			t.Fatal("the grow waits for reconcile's EC2 listing")
		}
		after := ds.Stats().Total
		if after < 12 {
			t.Fatalf("pool grew from %d to %d, want at least 12", before, after)
		}
		close(ec2.answer)
		if err := <-reconciled; err != nil {
			t.Fatal(err)
		}
		if st := ds.Stats(); st.Total != after+1 { // + the address assigned out of band
			t.Fatalf("pool after reconcile %+v, want %d addresses: the stale listing dropped the grow's", st, after+1)
		}
		if ec2.calls != 2 {
			t.Fatalf("%d EC2 listings, want 2", ec2.calls)
		}
	})
}

// eniConfigs is the node's ENIConfig as the Kubernetes API would give it.
type eniConfigs struct {
	ec  ENIConfig
	err error
}

func (e *eniConfigs) ENIConfig(context.Context) (ENIConfig, error) { return e.ec, e.err }

// Custom networking: pods get addresses only from ENIs in the ENIConfig's
// subnet, with its security groups (the node's when it names none), never
// from the primary ENI; max pods leaves the primary ENI out; without an
// ENIConfig the pool does not grow and says why.
func TestCustomNetworking(t *testing.T) {
	env := map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n1", "ENABLE_SUBNET_DISCOVERY": "true"}
	cfg, err := config.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	f := newFake("m5.large") // 3 ENIs × 10 addresses
	f.inst.SecurityGroups = []string{"sg-node"}
	f.subnets = []cloud.Subnet{{ID: "subnet-tagged", Available: 1000, Tags: map[string]string{SubnetRoleTag: "1"}}}
	ds := datastore.New(cfg.IPCooldown, nil)
	p := New(cfg, f, ds, nopHost{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	src := &eniConfigs{err: errors.New(`eniconfigs "default" not found`)}
	p.UseENIConfigs(src)
	if err := p.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.MaxPodsLimit(); got != 2*9+2 {
		t.Fatalf("max pods %d, want %d: the primary ENI carries no pods", got, 2*9+2)
	}
	p.reconcile(context.Background())
	if reason, _ := p.Blocked(); !errors.Is(reason, ErrNoENIConfig) || !strings.Contains(reason.Error(), "not found") {
		t.Fatalf("blocked %v, want the missing ENIConfig", reason)
	}
	if st := ds.Stats(); st.Total != 0 || len(f.tried) != 0 {
		t.Fatalf("grew without an ENIConfig: %+v, ENIs asked in %v", st, f.tried)
	}

	src.ec, src.err = ENIConfig{Name: "us-west-2a", Subnet: "subnet-pods", SecurityGroups: []string{"sg-pods"}}, nil
	later(p, time.Minute) // past the backoff
	p.reconcile(context.Background())
	if len(f.tried) != 1 || f.tried[0] != "subnet-pods" || fmt.Sprint(f.groups[0]) != "[sg-pods]" {
		t.Fatalf("new ENI asked in %v with groups %v, want subnet-pods with sg-pods", f.tried, f.groups)
	}
	for _, e := range ds.ENIs() {
		if e.IsPrimary && len(ds.CIDRs(e.ID)) != 0 {
			t.Fatalf("the primary ENI got pod addresses: %v", ds.CIDRs(e.ID))
		}
	}
	if st := ds.Stats(); st.Total != 9 {
		t.Fatalf("pool %+v, want one whole ENI (WARM_ENI_TARGET=1) of 9 addresses", st)
	}
	// The ENIConfig names no groups: the node's.
	src.ec = ENIConfig{Name: "default", Subnet: "subnet-pods"}
	for i := range 9 {
		if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	p.reconcile(context.Background())
	if len(f.groups) != 2 || fmt.Sprint(f.groups[1]) != "[sg-node]" {
		t.Fatalf("second ENI's groups %v, want the node's", f.groups)
	}
}

// In prefix mode a new ENI's slots are prefixes: with custom networking
// (the primary ENI carries no pods) and MINIMUM_IP_TARGET=64, one ENI with
// four /28s, not ENIs of as many prefixes as the ENI has address slots
// divided by 16.
func TestPrefixModeNewENISizedInPrefixes(t *testing.T) {
	env := map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n1", "ENABLE_PREFIX_DELEGATION": "true",
		"MINIMUM_IP_TARGET": "64", "WARM_IP_TARGET": "1"}
	cfg, err := config.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	f := newFake("m5.4xlarge") // 8 ENIs × 30 slots
	ds := datastore.New(cfg.IPCooldown, nil)
	p := New(cfg, f, ds, nopHost{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.UseENIConfigs(&eniConfigs{ec: ENIConfig{Name: "default", Subnet: "subnet-pods"}})
	if err := p.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.reconcile(context.Background())
	if n := f.calls["CreateENI"]; n != 1 {
		t.Fatalf("%d ENIs created for 64 addresses, want 1", n)
	}
	if st := ds.Stats(); st.Total != 64 {
		t.Fatalf("pool %+v, want 64 addresses (four /28s)", st)
	}
}

// MANAGE_UNTAGGED_ENI=false: an attached ENI is ipamd's only if ipamd made
// it for this instance (its instance_id tag) or it is tagged no_manage=false;
// by default every ENI without no_manage=true is.
func TestManageUntaggedENI(t *testing.T) {
	enis := func(f *fakeCloud) []cloud.ENI {
		mk := func(id string, dev int, tags map[string]string) cloud.ENI {
			return cloud.ENI{ID: id, Device: dev, MAC: fmt.Sprintf("02:00:00:00:01:%02x", dev), PrimaryIP: netip.AddrFrom4([4]byte{10, 0, 7, byte(dev)}),
				SubnetCIDR: f.inst.SubnetCIDR, Attached: true, Tags: tags}
		}
		return []cloud.ENI{
			mk("eni-operator", 1, nil),
			mk("eni-mine", 2, map[string]string{cloud.InstanceIDTag: "i-1"}),
			mk("eni-moved", 3, map[string]string{cloud.InstanceIDTag: "i-9"}),
			mk("eni-optin", 4, map[string]string{NoManageTag: "false"}),
		}
	}
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "[eni-0 eni-mine eni-moved eni-operator eni-optin]"},
		{map[string]string{"MANAGE_UNTAGGED_ENI": "false"}, "[eni-0 eni-mine eni-optin]"},
	} {
		f := newFake("m5.4xlarge")
		f.enis = append(f.enis, enis(f)...)
		_, _, ds := newPoolWith(t, f, nopHost{}, c.env)
		var got []string
		for _, e := range ds.ENIs() {
			got = append(got, e.ID)
		}
		slices.Sort(got)
		if fmt.Sprint(got) != c.want {
			t.Errorf("%v: the pool manages %v, want %s", c.env, got, c.want)
		}
	}
}

// DISABLE_NETWORK_RESOURCE_PROVISIONING=true: no EC2 change at all; the
// addresses already attached are used, ones assigned later by someone else
// are adopted by reconcile, and an ADD that finds none learns why.
func TestNoProvisioning(t *testing.T) {
	f := newFake("m5.large")
	f.enis[0].Secondary = []netip.Addr{netip.MustParseAddr("10.0.0.20")}
	p, f, ds := newPoolWith(t, f, nopHost{}, map[string]string{"DISABLE_NETWORK_RESOURCE_PROVISIONING": "true"})
	if !p.cfg.DisableLeakedENICleanup {
		t.Error("leaked-ENI cleanup still on")
	}
	p.reconcile(context.Background())
	if _, err := ds.Assign(podKey(0), datastore.Meta{}); err != nil {
		t.Fatalf("the attached address: %v", err)
	}
	done := p.Wait()
	p.reconcile(context.Background())
	reason, _ := p.Blocked()
	done()
	if !errors.Is(reason, ErrNoProvisioning) {
		t.Fatalf("blocked %v, want ErrNoProvisioning", reason)
	}
	for op, n := range f.calls {
		if n > 0 {
			t.Errorf("EC2 call %s ×%d", op, n)
		}
	}
	// Someone else assigns an address: IMDS and EC2 list it.
	f.mu.Lock()
	f.enis[0].Secondary = append(f.enis[0].Secondary, netip.MustParseAddr("10.0.0.21"))
	f.mu.Unlock()
	later(p, 2*time.Minute)
	if err := p.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, err := ds.Assign(podKey(1), datastore.Meta{}); err != nil || a.IP != netip.MustParseAddr("10.0.0.21") {
		t.Fatalf("the address assigned later: %+v %v", a, err)
	}
}

// imdsOnly is a node whose EC2 API ipamd must not call.
type imdsOnly struct {
	*fakeCloud
	t *testing.T
}

func (c imdsOnly) AttachedENIs(context.Context) ([]cloud.ENI, error) {
	c.t.Error("EC2 listed in IMDS-only mode")
	return nil, errors.New("no EC2 here")
}

// ENABLE_IMDS_ONLY_MODE: the ENIs come from IMDS at start and in
// reconcile, and no EC2 call is made. IMDS shows no tags, so every ENI of
// network card 0 is managed, also with MANAGE_UNTAGGED_ENI=false (as the
// VPC CNI); one on another card is not. A pool that runs dry asks
// reconcile to look at IMDS at once, not at its next minute.
func TestIMDSOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake("m5.large")
		f.enis[0].Secondary = []netip.Addr{netip.MustParseAddr("10.0.0.20")}
		f.enis = append(f.enis,
			cloud.ENI{ID: "eni-op", Device: 1, MAC: "02:00:00:00:02:01", PrimaryIP: netip.MustParseAddr("10.0.8.1"), SubnetCIDR: f.inst.SubnetCIDR,
				Attached: true, Secondary: []netip.Addr{netip.MustParseAddr("10.0.8.2")}},
			cloud.ENI{ID: "eni-card1", Device: 1, Card: 1, MAC: "02:00:00:00:02:02", PrimaryIP: netip.MustParseAddr("10.0.9.1"), SubnetCIDR: f.inst.SubnetCIDR,
				Attached: true, Secondary: []netip.Addr{netip.MustParseAddr("10.0.9.2")}})
		env := map[string]string{"ENABLE_IMDS_ONLY_MODE": "true", "MANAGE_UNTAGGED_ENI": "false"}
		cfg, err := config.FromEnv(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.NoProvisioning || !cfg.DisableLeakedENICleanup {
			t.Fatalf("IMDS-only mode provisions or cleans up: %+v", cfg)
		}
		ds := datastore.New(cfg.IPCooldown, nil)
		p := New(cfg, imdsOnly{f, t}, ds, nopHost{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err := p.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range ds.ENIs() {
			ids = append(ids, e.ID)
		}
		slices.Sort(ids)
		if fmt.Sprint(ids) != "[eni-0 eni-op]" || ds.Stats().Total != 2 {
			t.Fatalf("pool from IMDS: ENIs %v, %+v; want eni-0 and eni-op, 2 addresses", ids, ds.Stats())
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.ReconcileLoop(ctx, time.Hour)
		for i := range 2 {
			if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		// Someone else assigns an address; the dry pool asks for a look.
		f.mu.Lock()
		f.enis[0].Secondary = append(f.enis[0].Secondary, netip.MustParseAddr("10.0.0.21"))
		f.mu.Unlock()
		later(p, 2*time.Minute)
		p.reconcile(context.Background())
		synctest.Wait()
		if a, err := ds.Assign(podKey(2), datastore.Meta{}); err != nil || a.IP != netip.MustParseAddr("10.0.0.21") {
			t.Fatalf("the address assigned later: %+v %v", a, err)
		}
		for op, n := range f.calls {
			if n > 0 {
				t.Errorf("EC2 call %s ×%d", op, n)
			}
		}
	})
}

type fakeCordon struct{ on atomic.Bool }

func (c *fakeCordon) Cordoned() bool { return c.on.Load() }

// AWS_MANAGE_ENIS_NON_SCHEDULABLE=false (the default): on a cordoned node
// the pool neither attaches ENIs or addresses nor frees ENIs, and a waiting
// ADD learns why; uncordoned, it does both again.
func TestCordonedNodeHoldsItsENIs(t *testing.T) {
	p, f, ds := newPool(t, "m5.large", nil)
	cordon := &fakeCordon{}
	cordon.on.Store(true)
	p.UseCordon(cordon)
	done := p.Wait()
	p.reconcile(context.Background())
	reason, _ := p.Blocked()
	done()
	if !errors.Is(reason, ErrCordoned) || f.calls["AssignIPs"]+f.calls["CreateENI"] != 0 {
		t.Fatalf("cordoned: blocked %v, EC2 calls %v", reason, f.calls)
	}
	cordon.on.Store(false)
	p.reconcile(context.Background())
	if reason, _ := p.Blocked(); reason != nil || ds.Stats().Total != 9 {
		t.Fatalf("uncordoned: blocked %v, pool %+v", reason, ds.Stats())
	}
	// Fill the primary ENI so a second one comes, then free every pod: the
	// second ENI is surplus.
	for i := range 9 {
		if _, err := ds.Assign(podKey(i), datastore.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	p.reconcile(context.Background())
	if f.calls["CreateENI"] != 1 {
		t.Fatalf("no second ENI: %v", f.calls)
	}
	for i := range 9 {
		ds.Release(podKey(i))
	}
	later(p, 10*time.Minute) // past the cooldown, the young-ENI minute and the shrink interval
	cordon.on.Store(true)
	p.reconcile(context.Background())
	if f.calls["FreeENI"] != 0 {
		t.Fatalf("freed an ENI on a cordoned node: %v", f.calls)
	}
	cordon.on.Store(false)
	later(p, 20*time.Minute)
	p.reconcile(context.Background())
	if f.calls["FreeENI"] != 1 {
		t.Fatalf("surplus ENI not freed once uncordoned: %v", f.calls)
	}
}

// multiNICNode is a c6in.32xlarge (two network cards) with ENABLE_MULTI_NIC.
func multiNICNode(t *testing.T) (*fakeCloud, config.Config, *slog.Logger) {
	t.Helper()
	cfg, err := config.FromEnv(func(k string) string { return map[string]string{"ENABLE_MULTI_NIC": "true"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	return newFake("c6in.32xlarge"), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestCardPool: with ENABLE_MULTI_NIC, network card 1 has its own pool. It
// attaches its ENIs to card 1 from device 0, keeps the VPC CNI's targets
// for such a card (one address free, WARM_IP_TARGET=1 whatever the node's
// WARM_ENI_TARGET), and neither pool takes the other's ENIs.
func TestCardPool(t *testing.T) {
	f, cfg, log := multiNICNode(t)
	ctx := context.Background()
	ds1 := datastore.New(cfg.IPCooldown, nil)
	p1 := NewOnCard(1, cfg, f, ds1, nopHost{}, log)
	if err := p1.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ds1.ENIs()); n != 0 {
		t.Fatalf("card 1's pool took %d ENIs of card 0", n)
	}
	p1.reconcile(ctx)
	enis := ds1.ENIs()
	if len(enis) != 1 || enis[0].Card != 1 || enis[0].DeviceIndex != 0 || enis[0].IsPrimary {
		t.Fatalf("card 1's ENIs: %+v, want one on card 1, device 0", enis)
	}
	if st := ds1.Stats(); st.Total != 1 {
		t.Fatalf("card 1 holds %d addresses, want 1 (WARM_IP_TARGET=1)", st.Total)
	}
	a, err := ds1.Assign(datastore.Key{NetworkName: "n", ContainerID: "c", IfName: "eth0"}, datastore.Meta{InterfacesCount: 2})
	if err != nil || a.Card != 1 || a.Device != 0 {
		t.Fatalf("assign on card 1: %+v, %v", a, err)
	}
	p1.reconcile(ctx)
	if st := ds1.Stats(); st.Total != 2 || f.calls["AssignIPs"] != 1 {
		t.Fatalf("after one pod, card 1 holds %d addresses after %d AssignIPs; want 2 after 1", st.Total, f.calls["AssignIPs"])
	}
	if p1.MaxPodsLimit() != 394 {
		t.Errorf("max pods %d, want 394 (card 0's 8 ENIs × 49 + 2, as EKS)", p1.MaxPodsLimit())
	}

	// Card 0's pool, with card 1's ENI attached: only its own.
	f.enis = append(f.enis, cloud.ENI{ID: enis[0].ID, Card: 1, Device: 0, MAC: "02:00:00:00:01:00", PrimaryIP: enis[0].PrimaryIP, SubnetCIDR: f.inst.SubnetCIDR, Attached: true})
	ds0 := datastore.New(cfg.IPCooldown, nil)
	p0 := New(cfg, f, ds0, nopHost{}, log)
	if err := p0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ds0.ENIs(); len(got) != 1 || got[0].ID != "eni-0" {
		t.Fatalf("card 0's pool adopted %+v, want eni-0 only", got)
	}
	if p0.UnmanagedENIs() != 0 {
		t.Errorf("card 1's ENI takes one of card 0's slots: %d unmanaged", p0.UnmanagedENIs())
	}
	if d := p0.nextDevice(); d != 1 {
		t.Errorf("card 0's next device %d, want 1 (card 1's device 0 is no conflict)", d)
	}
}

// TestCardPoolCountsReconcilesOnTheNodesCounter: what card 1's pool
// reconciles shows in the one awscni_reconcile_count card 0's pool
// registered (registering a second would panic on the name).
func TestCardPoolCountsReconcilesOnTheNodesCounter(t *testing.T) {
	f, cfg, log := multiNICNode(t)
	ctx := context.Background()
	p0 := New(cfg, f, datastore.New(cfg.IPCooldown, nil), nopHost{}, log)
	p0.RegisterMetrics(prometheus.NewRegistry())
	ds1 := datastore.New(cfg.IPCooldown, nil)
	p1 := NewOnCard(1, cfg, f, ds1, nopHost{}, log)
	p1.CountReconcilesWith(p0)
	if err := p1.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// An ENI attached to card 1 that the pool did not attach: reconcile adopts it.
	f.mu.Lock()
	f.enis = append(f.enis, cloud.ENI{ID: "eni-c1-0", Card: 1, Device: 0, MAC: "02:00:00:00:01:00", PrimaryIP: f.ip(),
		Secondary: []netip.Addr{f.ip()}, SubnetCIDR: f.inst.SubnetCIDR, Attached: true})
	f.mu.Unlock()
	if err := p1.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ds1.ENIs()) != 1 {
		t.Fatalf("card 1's pool did not adopt its ENI: %+v", ds1.ENIs())
	}
	if n := testutil.ToFloat64(p0.reconciled.WithLabelValues("eniReconcileAdd")); n != 1 {
		t.Fatalf("awscni_reconcile_count{fn=eniReconcileAdd} = %v, want 1 (card 1's adoption)", n)
	}
}
