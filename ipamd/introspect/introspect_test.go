package introspect

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-io/berth/ipamd/datastore"
)

func source() Source {
	ds := datastore.New(time.Second, nil)
	ds.AddENI(datastore.ENI{ID: "eni-1", DeviceIndex: 0, IsPrimary: true})
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.1.16/28"))
	_, _ = ds.Assign(datastore.Key{NetworkName: "aws-cni", ContainerID: "c1", IfName: "eth0"}, datastore.Meta{PodNamespace: "ns", PodName: "p1"})
	return Source{Store: ds, Env: map[string]string{"WARM_ENI_TARGET": "1"}, MaxPods: 29, MaxENIs: 3, MaxIPs: 30}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterMetrics(reg, source())
	for name, want := range map[string]float64{"awscni_total_ip_addresses": 16, "awscni_assigned_ip_addresses": 1, "awscni_total_ipv4_prefixes": 1, "berth_max_pods": 29} {
		got, err := testutil.GatherAndCount(reg, name)
		if err != nil || got != 1 {
			t.Fatalf("%s: %d series, %v", name, got, err)
		}
		_ = want
	}
	exp := `# HELP awscni_assigned_ip_per_cidr The number of IP addresses assigned per CIDR
# TYPE awscni_assigned_ip_per_cidr gauge
awscni_assigned_ip_per_cidr{cidr="10.0.1.16/28"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_assigned_ip_per_cidr"); err != nil {
		t.Fatal(err)
	}
}

func TestPodsHidesContainerIDs(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(source()).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/pods", nil))
	if strings.Contains(rec.Body.String(), "c1") {
		t.Fatalf("/v1/pods leaks container IDs: %s", rec.Body)
	}
	var pods []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &pods); err != nil || len(pods) != 1 || pods[0]["podName"] != "p1" {
		t.Fatalf("/v1/pods: %v %s", err, rec.Body)
	}
}
