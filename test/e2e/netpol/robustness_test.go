package netpol_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/test/e2e"
)

func (h *harness) reach(from, to *hpod, ps probeSpec) bool {
	return h.probe(from, to, ps.proto, ps.port)
}

// TestBadPolicyEndpoint: rules the datapath cannot enforce (a bad CIDR, an
// inverted port range, an unknown protocol) are reported with an event and
// a metric and skipped; the pod stays isolated and its valid rule works.
// The agent fails closed for the bad rules and never open for anyone.
func TestBadPolicyEndpoint(t *testing.T) {
	h := newHarness(t, "standard", "m5.large")
	h.addNamespacesNamed("x")
	a, b, c := h.addPod("x", "a", nil), h.addPod("x", "b", nil), h.addPod("x", "c", nil)
	tcp := func(port int64, end ...int64) map[string]any {
		m := map[string]any{"protocol": "TCP", "port": port}
		if len(end) > 0 {
			m["endPort"] = end[0]
		}
		return m
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": pe.Group + "/" + pe.Version, "kind": pe.Kind,
		"metadata": map[string]any{"name": "manual", "namespace": "x"},
		"spec": map[string]any{
			"policyRef":    map[string]any{"name": "manual", "namespace": "x"},
			"podSelector":  map[string]any{"matchLabels": map[string]any{"pod": "a"}},
			"podIsolation": []any{"Ingress"},
			"ingress": []any{
				map[string]any{"cidr": b.ip.String() + "/32", "ports": []any{tcp(80)}},
				map[string]any{"cidr": "10.0.0.300/32"},
				map[string]any{"cidr": c.ip.String() + "/32", "ports": []any{tcp(90, 80)}},
				map[string]any{"cidr": c.ip.String() + "/32", "ports": []any{map[string]any{"protocol": "ICMP", "port": int64(80)}}},
			},
		},
	}}
	before := h.metric("berth_netpol_invalid_rules_total")
	if _, err := h.dyn.Resource(pe.GroupVersionResource).Namespace("x").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create a PolicyEndpoint with bad rules: %v", err)
	}
	e2e.WaitFor(t, "x/a isolated", 20*time.Second, func() bool { return !h.reach(c, a, tcp80) })
	if !h.reach(b, a, tcp80) {
		t.Error("the valid rule (x/b → x/a TCP 80) is not enforced")
	}
	if h.reach(b, a, tcp81) || h.reach(c, a, udp80) {
		t.Error("x/a accepts traffic no valid rule allows")
	}
	if !h.reach(a, b, tcp80) || !h.reach(c, b, tcp80) {
		t.Error("pods the bad PolicyEndpoint does not select lost traffic")
	}
	if got := h.metric("berth_netpol_invalid_rules_total") - before; got < 3 {
		t.Errorf("berth_netpol_invalid_rules_total rose by %v, want at least 3 (one per bad rule)", got)
	}
	e2e.WaitFor(t, "InvalidRule events on the PolicyEndpoint", 20*time.Second, func() bool {
		l, err := h.kube.CoreV1().Events("x").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=manual,reason=InvalidRule"})
		return err == nil && len(l.Items) > 0
	})
}

// TestAgentRestart: the agent dies (SIGKILL) and comes back. The pinned
// programs keep enforcing while it is away, an established flow never
// notices, a pod created meanwhile is refused rather than left
// unenforced, and policy changes apply again once it is back.
func TestAgentRestart(t *testing.T) {
	h := newHarness(t, "standard", "m5.large")
	h.addNamespacesNamed("x")
	a, b, c := h.addPod("x", "a", nil), h.addPod("x", "b", nil), h.addPod("x", "c", nil)
	h.apply(policy("x", "to-b", sel("pod", "b"), ingressOnly, ingressRules(in(peers(podPeer(sel("pod", "a"))), portNum(corev1.ProtocolTCP, 80))), nil))
	e2e.WaitFor(t, "policy enforced", 20*time.Second, func() bool { return h.reach(a, b, tcp80) && !h.reach(c, b, tcp80) })

	_, conn := dialFrom(t, a.cni.NetNS, b)
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer conn.Close()
		buf := make([]byte, 32)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := fmt.Sprintf("m%d", i)
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			sent.Add(1)
			if _, err := conn.Write([]byte(msg)); err != nil {
				failed.Add(1)
				return
			}
			if n, err := conn.Read(buf[:len(msg)]); err != nil || string(buf[:n]) != msg {
				failed.Add(1)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	h.killAgent()
	time.Sleep(500 * time.Millisecond)
	if h.reach(c, b, tcp80) {
		t.Error("with the agent down, x/c reached x/b: enforcement stopped with the process")
	}
	if !h.reach(a, b, tcp80) {
		t.Error("with the agent down, a new allowed connection failed")
	}
	if p, err := h.node.AddPod(t, "x", "d"); err == nil {
		t.Error("a pod was set up while no agent could enforce its policy")
	} else if p != nil {
		_ = h.node.DelPod(p)
	}

	h.runAgent()
	h.apply(policy("x", "to-b", sel("pod", "b"), ingressOnly, ingressRules(in(peers(podPeer(sel("pod", "a")), podPeer(sel("pod", "c"))), portNum(corev1.ProtocolTCP, 80))), nil))
	e2e.WaitFor(t, "a policy change after the restart", 20*time.Second, func() bool { return h.reach(c, b, tcp80) })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || sent.Load() < 50 {
		t.Fatalf("the established flow broke across the agent restart: %d of %d exchanges failed", failed.Load(), sent.Load())
	}
	t.Logf("established flow: %d exchanges across the restart, none failed", sent.Load())
}
