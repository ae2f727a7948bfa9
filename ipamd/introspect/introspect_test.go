package introspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// source is a node with a /28 prefix on its primary ENI: pod p1 holds an
// address and pod p2 held one and released it.
func source(t *testing.T) Source {
	t.Helper()
	now := t0
	ds := datastore.New(30*time.Second, func() time.Time { return now })
	ds.AddENI(datastore.ENI{ID: "eni-1", DeviceIndex: 0, IsPrimary: true, Subnet: netip.MustParsePrefix("10.0.0.0/16")})
	if err := ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.1.16/28")); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "c1", IfName: "eth0"}, datastore.Meta{PodNamespace: "ns", PodName: "p1", InterfacesCount: 1}); err != nil {
		t.Fatal(err)
	}
	k2 := datastore.Key{NetworkName: "aws-cni", ContainerID: "c2", IfName: "eth0"}
	if _, err := ds.Assign(k2, datastore.Meta{PodNamespace: "ns", PodName: "p2", InterfacesCount: 1}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(time.Second)
	ds.Release(k2)
	info, _ := instancetypes.Lookup("m5.large")
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return Source{Store: ds, Config: cfg, MaxPods: 29,
		Instance: cloud.Instance{SubnetID: "subnet-1", SubnetCIDR: netip.MustParsePrefix("10.0.0.0/16"), Info: info}}
}

func get(t *testing.T, src Source, path string) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(src).ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != 200 {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// The VPC CNI v1.23.1 /v1/enis types (pkg/ipamd/introspect.go
// eniV1RequestHandler, pkg/ipamd/datastore/data_store.go ENIInfos, ENI,
// CidrInfo, AddressInfo, IPAMKey, IPAMMetadata), written out here as the
// golden shape.
type upstreamENIInfos struct {
	TotalIPs    int
	AssignedIPs int
	ENIs        map[string]upstreamENI
}

type upstreamENI struct {
	ID                  string
	IsPrimary           bool
	IsTrunk             bool
	IsEFA               bool
	DeviceNumber        int
	AvailableIPv4Cidrs  map[string]*upstreamCidrInfo
	IPv6Cidrs           map[string]*upstreamCidrInfo
	IsExcludedForPodIPs bool
	RouteTableID        int
	SubnetID            string
}

type upstreamCidrInfo struct {
	Cidr          net.IPNet
	IPAddresses   map[string]*upstreamAddressInfo
	IsPrefix      bool
	AddressFamily string
}

type upstreamAddressInfo struct {
	Address string
	IPAMKey struct {
		NetworkName string `json:"networkName"`
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifName"`
	}
	IPAMMetadata struct {
		K8SPodNamespace string `json:"k8sPodNamespace,omitempty"`
		K8SPodName      string `json:"k8sPodName,omitempty"`
		InterfacesCount int    `json:"interfacesCount,omitempty"`
	}
	AssignedTime   time.Time
	UnassignedTime time.Time
}

func decodeStrict(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("not the VPC CNI's shape: %v\n%s", err, body)
	}
}

// keys lists an object's keys, sorted.
func keys(t *testing.T, v any) string {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not an object", v)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func TestENIsUpstreamShape(t *testing.T) {
	body := get(t, source(t), "/v1/enis")
	var got map[string]upstreamENIInfos
	decodeStrict(t, body, &got)

	// Every field is there too (DisallowUnknownFields only catches extras).
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	card := raw["0"].(map[string]any)
	eni := card["ENIs"].(map[string]any)["eni-1"].(map[string]any)
	cidr := eni["AvailableIPv4Cidrs"].(map[string]any)["10.0.1.16/28"].(map[string]any)
	addr := cidr["IPAddresses"].(map[string]any)["10.0.1.31"].(map[string]any)
	for _, c := range []struct {
		obj  any
		want string
	}{
		{raw, "0"},
		{card, "AssignedIPs,ENIs,TotalIPs"},
		{eni, "AvailableIPv4Cidrs,DeviceNumber,ID,IPv6Cidrs,IsEFA,IsExcludedForPodIPs,IsPrimary,IsTrunk,RouteTableID,SubnetID"},
		{cidr, "AddressFamily,Cidr,IPAddresses,IsPrefix"},
		{cidr["Cidr"], "IP,Mask"},
		{addr, "Address,AssignedTime,IPAMKey,IPAMMetadata,UnassignedTime"},
		{addr["IPAMKey"], "containerID,ifName,networkName"},
		{addr["IPAMMetadata"], "interfacesCount,k8sPodName,k8sPodNamespace"},
	} {
		if got := keys(t, c.obj); got != c.want {
			t.Errorf("keys %s, want %s", got, c.want)
		}
	}

	pool := got["0"]
	if pool.TotalIPs != 16 || pool.AssignedIPs != 1 {
		t.Errorf("TotalIPs %d AssignedIPs %d, want 16 and 1", pool.TotalIPs, pool.AssignedIPs)
	}
	e := pool.ENIs["eni-1"]
	if e.ID != "eni-1" || !e.IsPrimary || e.DeviceNumber != 0 || e.RouteTableID != 254 || e.SubnetID != "subnet-1" || e.IPv6Cidrs == nil {
		t.Errorf("ENI %+v", e)
	}
	c := e.AvailableIPv4Cidrs["10.0.1.16/28"]
	if c == nil || !c.IsPrefix || c.Cidr.String() != "10.0.1.16/28" {
		t.Fatalf("CIDR %+v", c)
	}
	// Only addresses pods hold or held are listed (LIFO: p1 got .31, p2 .30).
	if len(c.IPAddresses) != 2 {
		t.Fatalf("IPAddresses %v, want the held and the released one", c.IPAddresses)
	}
	held, freed := c.IPAddresses["10.0.1.31"], c.IPAddresses["10.0.1.30"]
	if held == nil || freed == nil {
		t.Fatalf("IPAddresses %s", body)
	}
	if held.Address != "10.0.1.31" || held.IPAMKey.NetworkName != "aws-cni" || held.IPAMMetadata.K8SPodName != "p1" ||
		held.IPAMMetadata.K8SPodNamespace != "ns" || !held.AssignedTime.Equal(t0) || !held.UnassignedTime.IsZero() {
		t.Errorf("held address %+v", held)
	}
	if freed.IPAMKey.NetworkName != "" || freed.IPAMMetadata.K8SPodName != "" || !freed.UnassignedTime.Equal(t0.Add(time.Second)) {
		t.Errorf("released address %+v", freed)
	}
	// Scrubbed: no container ID or interface name to forge a DelNetwork with.
	if bytes.Contains(body, []byte(`"c1"`)) || bytes.Contains(body, []byte(`"eth0"`)) {
		t.Errorf("/v1/enis leaks the container ID or interface name: %s", body)
	}
}

func TestEnvSettingsTypes(t *testing.T) {
	var got map[string]any
	if err := json.Unmarshal(get(t, source(t), "/v1/ipamd-env-settings"), &got); err != nil {
		t.Fatal(err)
	}
	// The VPC CNI's keys (pkg/ipamd/ipamd.go GetConfigForDebug), its types.
	want := map[string]any{"WARM_IP_TARGET": 0.0, "WARM_ENI_TARGET": 1.0, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": false,
		"AWS_MANAGE_ENIS_NON_SCHEDULABLE": false, "ENABLE_SUBNET_DISCOVERY": true}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if got["AWS_VPC_ENI_MTU"] != 9001.0 || got["ENABLE_PREFIX_DELEGATION"] != false {
		t.Errorf("berth's settings are not typed: %v", got)
	}
	// Every knob the README says ipamd honours is shown.
	for _, k := range []string{"POD_MTU", "AWS_VPC_K8S_CNI_RANDOMIZESNAT", "AWS_VPC_K8S_CNI_CONNMARK", "AWS_VPC_CNI_NODE_PORT_SUPPORT",
		"AWS_EXTERNAL_SERVICE_CIDRS", "CLUSTER_NAME", "NETWORK_POLICY_ENFORCING_MODE"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from /v1/ipamd-env-settings", k)
		}
	}
}

func TestPodsLegacyShape(t *testing.T) {
	body := get(t, source(t), "/v1/pods")
	var got map[string]struct {
		IP           string
		DeviceNumber int
	}
	decodeStrict(t, body, &got)
	if len(got) != 1 || got["p1_ns_"].IP != "10.0.1.31" || got["p1_ns_"].DeviceNumber != 0 {
		t.Fatalf("/v1/pods: %s", body)
	}
	if bytes.Contains(body, []byte("c1")) {
		t.Fatalf("/v1/pods leaks container IDs: %s", body)
	}
}

func TestRootListsCommands(t *testing.T) {
	var got struct{ AvailableCommands []string }
	decodeStrict(t, get(t, source(t), "/"), &got)
	if strings.Join(got.AvailableCommands, " ") != "/v1/eni-configs /v1/enis /v1/ipamd-env-settings /v1/networkutils-env-settings /v1/pods" {
		t.Fatalf("AvailableCommands %v", got.AvailableCommands)
	}
}

// aws-node's datapath settings (pkg/networkutils/network.go
// GetConfigForDebug), its keys and types: the SNAT randomisation is its
// number, unset CIDR lists are null.
func TestNetworkutilsEnvSettings(t *testing.T) {
	src := source(t)
	src.Config.RandomizeSNAT = "hashrandom"
	src.Config.ExcludeSNATCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	var got map[string]any
	if err := json.Unmarshal(get(t, src, "/v1/networkutils-env-settings"), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"AWS_VPC_K8S_CNI_CONNMARK": 128.0, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": []any{"192.168.0.0/16"},
		"AWS_VPC_K8S_CNI_EXTERNALSNAT": false, "AWS_EXTERNAL_SERVICE_CIDRS": nil, "AWS_VPC_ENI_MTU": 9001.0,
		"AWS_VPC_K8S_CNI_VETHPREFIX": "eni", "AWS_VPC_CNI_NODE_PORT_SUPPORT": true, "AWS_VPC_K8S_CNI_RANDOMIZESNAT": 1.0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("/v1/networkutils-env-settings\n got %v\nwant %v", got, want)
	}
}

// /v1/eni-configs names the node's ENIConfig, and is 404 where it cannot
// (no custom networking here, or the Node unreadable), as on aws-node.
func TestENIConfigsEndpoint(t *testing.T) {
	src := source(t)
	code := func(src Source) int {
		rec := httptest.NewRecorder()
		Handler(src).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/eni-configs", nil))
		return rec.Code
	}
	if c := code(src); c != 404 {
		t.Fatalf("without custom networking: %d, want 404", c)
	}
	src.ENIConfigName = func(context.Context) (string, error) { return "", errors.New("nodes is forbidden") }
	if c := code(src); c != 404 {
		t.Fatalf("Node unreadable: %d, want 404", c)
	}
	src.ENIConfigName = func(context.Context) (string, error) { return "us-west-2a", nil }
	if body := get(t, src, "/v1/eni-configs"); string(body) != `"us-west-2a"` {
		t.Fatalf("/v1/eni-configs: %s", body)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterMetrics(reg, source(t))
	for name, want := range map[string]float64{"awscni_total_ip_addresses": 16, "awscni_assigned_ip_addresses": 1,
		"awscni_total_ipv4_prefixes": 1, "awscni_eni_allocated": 1, "berth_max_pods": 29} {
		if got := gauge(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	exp := `# HELP awscni_assigned_ip_per_cidr The total number of IP addresses assigned per cidr
# TYPE awscni_assigned_ip_per_cidr gauge
awscni_assigned_ip_per_cidr{cidr="10.0.1.16/28"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_assigned_ip_per_cidr"); err != nil {
		t.Fatal(err)
	}
}

// awscni_eni_max and awscni_ip_max as the VPC CNI sets them
// (pkg/ipamd/ipamd.go updateIPStats, getMaxENI, GetIPv4Limit).
func TestMaxGauges(t *testing.T) {
	for _, c := range []struct {
		name             string
		env              map[string]string
		unmanaged        int
		wantENIs, wantIP float64
	}{
		// m5.large: 3 ENIs of 10 addresses, the ENI's own primary not for pods.
		{"m5.large", nil, 0, 3, 27},
		{"MAX_ENI lowers the ENI count", map[string]string{"MAX_ENI": "2"}, 0, 2, 18},
		{"MAX_ENI above the limit is ignored", map[string]string{"MAX_ENI": "8"}, 0, 3, 27},
		{"prefix delegation: 16 per slot", map[string]string{"ENABLE_PREFIX_DELEGATION": "true"}, 0, 3, 432},
		{"unmanaged ENIs take slots", nil, 1, 2, 18},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := source(t)
			cfg, err := config.FromEnv(func(k string) string { return c.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			src.Config = cfg
			src.Unmanaged = func() int { return c.unmanaged }
			reg := prometheus.NewRegistry()
			RegisterMetrics(reg, src)
			if got := gauge(t, reg, "awscni_eni_max"); got != c.wantENIs {
				t.Errorf("awscni_eni_max = %v, want %v", got, c.wantENIs)
			}
			if got := gauge(t, reg, "awscni_ip_max"); got != c.wantIP {
				t.Errorf("awscni_ip_max = %v, want %v", got, c.wantIP)
			}
		})
	}
}

// With ENABLE_MULTI_NIC the node's gauges count network card 1's pool
// too, and its ENI and CIDR get their own per-ENI and per-CIDR series.
func TestMetricsCountEveryCard(t *testing.T) {
	src := source(t)
	ds1 := datastore.New(30*time.Second, nil)
	ds1.AddENI(datastore.ENI{ID: "eni-c1", DeviceIndex: 0, Card: 1, Subnet: netip.MustParsePrefix("10.0.0.0/16")})
	if err := ds1.AddCIDR("eni-c1", netip.MustParsePrefix("10.0.2.32/28")); err != nil {
		t.Fatal(err)
	}
	if _, err := ds1.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "c1", IfName: "eth0"}, datastore.Meta{PodNamespace: "ns", PodName: "p1", InterfacesCount: 2}); err != nil {
		t.Fatal(err)
	}
	src.Cards = map[int]*datastore.Store{1: ds1}
	reg := prometheus.NewRegistry()
	RegisterMetrics(reg, src)
	for name, want := range map[string]float64{"awscni_total_ip_addresses": 32, "awscni_assigned_ip_addresses": 2,
		"awscni_total_ipv4_prefixes": 2, "awscni_eni_allocated": 2} {
		if got := gauge(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	exp := `# HELP awscni_assigned_ip_per_eni The number of allocated ips partitioned by eni
# TYPE awscni_assigned_ip_per_eni gauge
awscni_assigned_ip_per_eni{eni="eni-1"} 1
awscni_assigned_ip_per_eni{eni="eni-c1"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_assigned_ip_per_eni"); err != nil {
		t.Fatal(err)
	}
}

// /v1/pods lists a pod's eth0 address: card 1's for a pod with one
// interface that got it there, card 0's for a multi-NIC pod.
func TestPodsOnEveryCard(t *testing.T) {
	src := source(t)
	ds1 := datastore.New(30*time.Second, nil)
	ds1.AddENI(datastore.ENI{ID: "eni-c1", DeviceIndex: 0, Card: 1})
	_ = ds1.AddCIDR("eni-c1", netip.MustParsePrefix("10.0.2.7/32"))
	_ = ds1.AddCIDR("eni-c1", netip.MustParsePrefix("10.0.2.8/32"))
	for _, p := range []struct {
		id, name string
		n        int
	}{{"c1", "p1", 2}, {"c3", "solo", 1}} {
		if _, err := ds1.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: p.id, IfName: "eth0"}, datastore.Meta{PodNamespace: "ns", PodName: p.name, InterfacesCount: p.n}); err != nil {
			t.Fatal(err)
		}
	}
	src.Cards = map[int]*datastore.Store{1: ds1}
	var got map[string]struct {
		IP           string
		DeviceNumber int
	}
	decodeStrict(t, get(t, src, "/v1/pods"), &got)
	solo, _ := ds1.Lookup(datastore.Key{NetworkName: "aws-cni", ContainerID: "c3", IfName: "eth0"})
	if len(got) != 2 || got["p1_ns_"].IP != "10.0.1.31" || got["solo_ns_"].IP != solo.IP.String() {
		t.Fatalf("/v1/pods: %v, want p1's eth0 10.0.1.31 and solo's %s", got, solo.IP)
	}
}
