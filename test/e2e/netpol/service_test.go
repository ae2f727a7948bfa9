package netpol_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-io/berth/test/e2e"
)

// TestServiceClusterIP: clients connect to Service ClusterIPs, and the
// pod's egress program runs before the node's DNAT, so the controller adds
// each allowed backend's Services to the egress rules (ClusterIP and
// Service port). kube-proxy is stood in for by the same nftables DNAT it
// programs. A policy allowing only y/b lets x/a reach y/b's Service but not
// y/c's; allowing y/c's named port opens y/c's Service on its Service port.
func TestServiceClusterIP(t *testing.T) {
	h := newHarness(t, "standard", "m5.large")
	h.addNamespacesNamed("x", "y")
	a := h.addPod("x", "a", nil)
	b, c := h.addPod("y", "b", nil), h.addPod("y", "c", nil)
	sb := h.service("y", "s-b", "b", 80, intstr.FromInt32(80))
	sc := h.service("y", "s-c", "c", 8080, intstr.FromString("serve-80-tcp"))
	h.dnat(sb, 80, b, 80)
	h.dnat(sc, 8080, c, 80)
	dial := func(addr string) bool { _, err := e2e.DialFrom(a.cni.NetNS, addr, probeTimeout); return err == nil }
	if !dial(sb+":80") || !dial(sc+":8080") {
		t.Fatal("the DNAT standing in for kube-proxy does not work without policies")
	}

	h.apply(policy("x", "to-b", podA(), egressOnly, nil, egressRules(out(peers(bothPeer(sel("ns", "y"), sel("pod", "b"))), portNum(corev1.ProtocolTCP, 80)))))
	e2e.WaitFor(t, "x/a denied to y/c's Service", 20*time.Second, func() bool { return !dial(sc + ":8080") })
	if !dial(sb + ":80") {
		t.Error("x/a cannot reach the Service of the pod its policy allows")
	}
	if dial(c.ip.String()+":80") || !dial(b.ip.String()+":80") {
		t.Error("direct pod access disagrees with the policy")
	}

	h.apply(policy("x", "to-c", podA(), egressOnly, nil, egressRules(out(peers(bothPeer(sel("ns", "y"), sel("pod", "c"))), portName("serve-80-tcp")))))
	e2e.WaitFor(t, "x/a reaches y/c's Service on its Service port", 20*time.Second, func() bool { return dial(sc + ":8080") })
}

// service creates a ClusterIP Service selecting pod=<pod> and returns its ClusterIP.
func (h *harness) service(ns, name, pod string, port int32, target intstr.IntOrString) string {
	h.t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"pod": pod},
			Ports: []corev1.ServicePort{{Name: "p", Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}}}}
	got, err := h.kube.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return got.Spec.ClusterIP
}

// dnat programs, in the node, the DNAT kube-proxy would for one Service port.
func (h *harness) dnat(clusterIP string, port int32, backend *hpod, targetPort int) {
	h.t.Helper()
	const table = "berth_e2e_kp"
	script := fmt.Sprintf(`add table ip %[1]s
add chain ip %[1]s pre { type nat hook prerouting priority -100; }
add rule ip %[1]s pre ip daddr %[2]s tcp dport %[3]d dnat to %[4]s:%[5]d
`, table, clusterIP, port, backend.ip, targetPort)
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+h.node.Inst.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("nft: %v %s", err, out)
	}
}
