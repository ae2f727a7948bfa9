package server

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/proto/rpc"
)

// awscni_del_ip_req_count carries the plugin's reason, as the VPC CNI's
// (utils/prometheusmetrics DelIPCnt{reason}, rpc_handler.go DelNetwork);
// a reason no plugin sends is "other", so a client cannot grow the metric
// without bound.
func TestDelReqCountByReason(t *testing.T) {
	ds := newDS()
	_ = ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.2.0/28"))
	reg := prometheus.NewRegistry()
	s := New(ds, &testPool{ds: ds}, datastore.NewCheckpointer(filepath.Join(t.TempDir(), "ipam.json"), ds), Node{},
		"v9.9.9", time.Second, NewMetrics(reg), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if _, err := s.AddNetwork(ctx, addReq("x", "v9.9.9")); err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"PodDeleted", "PodDeleted", "GC", "SetupNSFailed", "made-up-1", "made-up-2"} {
		if _, err := s.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: "v9.9.9", ContainerID: "x", IfName: "eth0", NetworkName: "aws-cni", Reason: reason}); err != nil {
			t.Fatal(err)
		}
	}
	exp := `# HELP awscni_del_ip_req_count The number of delete IP address requests
# TYPE awscni_del_ip_req_count counter
awscni_del_ip_req_count{reason="GC"} 1
awscni_del_ip_req_count{reason="PodDeleted"} 2
awscni_del_ip_req_count{reason="SetupNSFailed"} 1
awscni_del_ip_req_count{reason="other"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "awscni_del_ip_req_count"); err != nil {
		t.Fatal(err)
	}
}
