package netpol_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/proto/rpc"
	"github.com/berth-io/berth/test/e2e"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkProgramming measures a NetworkPolicy change to enforced on the
// node: the policy update is written to the API server, and the time runs
// until a connection the new version allows first succeeds (the
// controller, the PolicyEndpoint watch, the agent and the map swap).
func BenchmarkProgramming(b *testing.B) {
	h := newHarness(b, "standard", "m5.large")
	h.addNamespacesNamed("x")
	a, srv := h.addPod("x", "a", nil), h.addPod("x", "b", nil)
	deny := policy("x", "p", sel("pod", "b"), ingressOnly, ingressRules(), nil)
	allow := policy("x", "p", sel("pod", "b"), ingressOnly, ingressRules(in(peers(podPeer(sel("pod", "a"))), portNum(corev1.ProtocolTCP, 80))), nil)
	var lat []time.Duration
	b.Run("policy-to-enforced", func(b *testing.B) {
		lat = lat[:0]
		for range b.N {
			b.StopTimer()
			h.apply(deny)
			e2e.WaitFor(b, "deny", 20*time.Second, func() bool { return !h.reach(a, srv, tcp80) })
			b.StartTimer()
			start := time.Now()
			h.apply(allow)
			for {
				if _, err := e2e.DialFrom(a.cni.NetNS, srv.ip.String()+":80", 20*time.Millisecond); err == nil {
					break
				}
				if time.Since(start) > 20*time.Second {
					b.Fatal("the allowing policy was not enforced in 20 s")
				}
			}
			lat = append(lat, time.Since(start))
		}
		b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	})
	if len(lat) > 0 {
		b.Logf("policy-to-enforced over %d changes: p50 %s p99 %s (the agent's own PolicyEndpoint-to-maps p50 ≤ %s)",
			len(lat), percentile(lat, 0.5), percentile(lat, 0.99), h.metricQuantile("berth_netpol_programming_seconds", 0.5))
	}
}

// BenchmarkAgentAt1000Pods enforces 1,000 local pods, all selected by one
// policy whose rule lists every one of them as a peer, and reports the
// agent's resident memory and the EnforceNpToPod latency. The pods' host
// veths are made directly (no ipamd: a node's max pods is below 1,000);
// the agent cannot tell the difference.
func BenchmarkAgentAt1000Pods(b *testing.B) {
	const pods = 1000
	h := newHarness(b, "standard", "m5.large")
	h.addNamespacesNamed("big")
	ctx := context.Background()
	h.apply(policy("big", "peers", nil, ingressOnly, ingressRules(in(peers(podPeer(&metav1.LabelSelector{})))), nil))
	// Pod objects with IPs, so the controller lists all of them as peers.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("p%04d", i)
			obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "big", Labels: map[string]string{"app": "big"}},
				Spec: corev1.PodSpec{NodeName: h.nodeName, Containers: []corev1.Container{{Name: "c", Image: "x"}},
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}
			p, err := h.kube.CoreV1().Pods("big").Create(ctx, obj, metav1.CreateOptions{})
			if err != nil {
				b.Error(err)
				return
			}
			ip := fmt.Sprintf("100.64.%d.%d", i/250, i%250+1)
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: h.nodeIP}
			if _, err := h.kube.CoreV1().Pods("big").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	// Host veths named as berth-cni names them, inside the instance.
	err := e2e.InNetNS(h.node.Inst.NetNS, func() error {
		for i := range pods {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethname.For("eni", "big", fmt.Sprintf("p%04d", i))}, PeerName: fmt.Sprintf("bp%04d", i)}
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
		}
		return nil
	})
	b.Cleanup(func() {
		_ = e2e.InNetNS(h.node.Inst.NetNS, func() error {
			for i := range pods {
				if l, err := netlink.LinkByName(fmt.Sprintf("bp%04d", i)); err == nil {
					_ = netlink.LinkDel(l)
				}
			}
			return nil
		})
	})
	if err != nil {
		b.Fatalf("veths: %v", err)
	}
	conn, err := grpc.NewClient("unix://"+h.npa, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	np := rpc.NewNPBackendClient(conn)
	// Let the controller list all 1,000 peers first.
	time.Sleep(3 * time.Second)
	var lat []time.Duration
	for i := range pods {
		start := time.Now()
		r, err := np.EnforceNpToPod(ctx, &rpc.EnforceNpRequest{K8S_POD_NAME: fmt.Sprintf("p%04d", i), K8S_POD_NAMESPACE: "big",
			NETWORK_POLICY_MODE: "standard", InterfaceCount: 1})
		if err != nil || !r.Success {
			b.Fatalf("EnforceNpToPod p%04d: %v", i, err)
		}
		lat = append(lat, time.Since(start))
	}
	time.Sleep(2 * time.Second)
	// The parent runs once; the sub-benchmark reports what was measured.
	b.Run("pods=1000", func(b *testing.B) {
		var rss float64
		for range b.N {
			rss = rssMiB(b, h.agent.Process.Pid)
		}
		b.ReportMetric(rss, "agent-rss-MiB")
		b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "enforce-p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "enforce-p99-ms")
	})
}

func rssMiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
