package netpolicy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCrossNamespace(t *testing.T) {
	egressTo := func(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyEgressRule {
		return []networkingv1.NetworkPolicyEgressRule{{To: peers}}
	}
	tests := []struct {
		name string
		np   *networkingv1.NetworkPolicy
		want bool
	}{
		{"default deny", policy("x", nil, both, nil, nil), false},
		{"same-namespace peers", policy("x", nil, both, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel("a", "b")}), egressTo(networkingv1.NetworkPolicyPeer{PodSelector: podSel()})), false},
		{"ingress from anywhere or a CIDR", policy("x", nil, ingressOnly, append(from(), networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}}}), nil), false},
		{"ingress namespace selector", policy("x", nil, ingressOnly, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: podSel()}), nil), true},
		{"ingress namespace selector, ingress not isolated", policy("x", nil, egressOnly, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: podSel()}), nil), false},
		{"egress to everywhere", policy("x", nil, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{}}), true},
		{"egress to a CIDR", policy("x", nil, egressOnly, nil, egressTo(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}})), true},
		{"egress namespace selector", policy("x", nil, egressOnly, nil, egressTo(networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}})), true},
	}
	for _, tc := range tests {
		if got := crossNamespace(tc.np); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPodChanged(t *testing.T) {
	a := pod("x", "a", "10.0.0.1", map[string]string{"k": "v"})
	b := a.DeepCopy()
	b.Annotations = map[string]string{"x": "y"}
	b.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	if podChanged(a, b) {
		t.Error("annotations and conditions are not a change")
	}
	for name, mut := range map[string]func(*corev1.Pod){
		"labels":   func(p *corev1.Pod) { p.Labels["k"] = "w" },
		"ip":       func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.2" },
		"phase":    func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed },
		"host ip":  func(p *corev1.Pod) { p.Status.HostIP = "192.168.9.9" },
		"dual ips": func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}} },
	} {
		c := a.DeepCopy()
		mut(c)
		if !podChanged(a, c) {
			t.Errorf("%s change not seen", name)
		}
	}
}
