package csiebs_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// setFaults injects localcloud faults ({"ec2:Op": {...}}).
func (cl *cluster) setFaults(tb testing.TB, body string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPut, cl.lc.Endpoint+"/_localcloud/faults", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		tb.Fatalf("set faults: %s", resp.Status)
	}
}

// TestDuplicateInflight sends the same ControllerPublish twice while the
// first is still attaching (AttachVolume slowed to 1 s): the duplicate is
// Aborted, the first succeeds, and a retry afterwards succeeds too. Then
// throttled attaches are retried and counted in the throttle metric.
func TestDuplicateInflight(t *testing.T) {
	cl := newCluster(t)
	a := cl.startNode(t, "m5.large", "--metrics-addr", "127.0.0.1:9809")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := blockCap()
	vol, err := a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-dup", VolumeCapabilities: []*csi.VolumeCapability{c},
		CapacityRange: &csi.CapacityRange{RequiredBytes: gib}})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	cl.setFaults(t, `{"ec2:AttachVolume":{"latencyMs":1000}}`)
	req := &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID, VolumeCapability: c}
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, firstErr = a.ctrl.ControllerPublishVolume(ctx, req)
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := a.ctrl.ControllerPublishVolume(ctx, req); status.Code(err) != codes.Aborted {
		t.Errorf("duplicate in-flight publish: %v, want Aborted", err)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("first publish: %v", firstErr)
	}
	if _, err := a.ctrl.ControllerPublishVolume(ctx, req); err != nil {
		t.Errorf("publish again once done: %v", err)
	}

	// Two throttled AttachVolume attempts: the SDK retries, the RPC succeeds.
	if _, err := a.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.inst.ID}); err != nil {
		t.Fatal(err)
	}
	cl.setFaults(t, `{"ec2:AttachVolume":{"errorRate":1,"errorCode":"RequestLimitExceeded","count":2}}`)
	if _, err := a.ctrl.ControllerPublishVolume(ctx, req); err != nil {
		t.Fatalf("publish through throttling: %v", err)
	}
	checkMetricsContain(t, a, `aws_ebs_csi_api_request_throttles_total{request="AttachVolume"} 2`)
}
