package netpolicy

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
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

// TestControllerWrites runs the controller on fake clients and checks the
// order of its writes: a whole new generation is created before anything
// is deleted, and nothing is written when nothing changed.
func TestControllerWrites(t *testing.T) {
	kube := kubefake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}},
		pod("x", "a", "10.0.0.1", map[string]string{"pod": "a"}),
		pod("x", "b", "10.0.0.2", map[string]string{"pod": "b"}),
		policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel("pod", "b")}), nil),
	)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{pe.GroupVersionResource: "PolicyEndpointList"})
	c := New(kube, dyn, Options{ChunkSize: 1, Resync: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	names := func() []string {
		list, err := dyn.Resource(pe.GroupVersionResource).Namespace("x").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, u := range list.Items {
			out = append(out, u.GetName())
		}
		slices.Sort(out)
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (objects %v)", what, names())
			}
		}
	}
	// One pod endpoint and one ingress entry, one item per chunk.
	waitFor("generation 1", func() bool { return slices.Equal(names(), []string{"p-1-0", "p-1-1"}) })
	writes := func() []string {
		var out []string
		for _, a := range dyn.Actions() {
			switch a := a.(type) {
			case k8stesting.CreateAction:
				out = append(out, "create "+a.GetObject().(*unstructured.Unstructured).GetName())
			case k8stesting.DeleteAction:
				out = append(out, "delete "+a.GetName())
			}
		}
		return out
	}
	if w := writes(); !slices.Equal(w, []string{"create p-1-0", "create p-1-1"}) {
		t.Fatalf("writes %v", w)
	}

	// b leaves the peers and a2 is selected: two pod endpoints, no ingress.
	b, _ := kube.CoreV1().Pods("x").Get(ctx, "b", metav1.GetOptions{})
	b.Labels["pod"] = "z"
	if _, err := kube.CoreV1().Pods("x").Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("b gone from the peers", func() bool { return slices.Equal(names(), []string{"p-2-0"}) })
	if _, err := kube.CoreV1().Pods("x").Create(ctx, pod("x", "a2", "10.0.0.3", map[string]string{"pod": "a"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a2 selected", func() bool { return slices.Equal(names(), []string{"p-3-0", "p-3-1"}) })
	want := []string{"create p-1-0", "create p-1-1", "create p-2-0", "delete p-1-0", "delete p-1-1", "create p-3-0", "create p-3-1", "delete p-2-0"}
	if w := writes(); !slices.Equal(w, want) {
		t.Fatalf("writes\n%v\nwant\n%v", w, want)
	}

	// Touching the policy and a pod's annotations writes nothing.
	before := testutil.ToFloat64(c.m.reconciles.WithLabelValues(resultUnchanged))
	np, _ := kube.NetworkingV1().NetworkPolicies("x").Get(ctx, "p", metav1.GetOptions{})
	np.Annotations = map[string]string{"touched": "1"}
	if _, err := kube.NetworkingV1().NetworkPolicies("x").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("an unchanged reconcile", func() bool { return testutil.ToFloat64(c.m.reconciles.WithLabelValues(resultUnchanged)) > before })
	if w := writes(); !slices.Equal(w, want) {
		t.Fatalf("writes after a no-op: %v", w)
	}

	// The policy deleted: its chunks are.
	if err := kube.NetworkingV1().NetworkPolicies("x").Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("chunks deleted", func() bool { return len(names()) == 0 })
}
