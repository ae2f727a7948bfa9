package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/netpol/datapath"
)

// recorder is a Datapath that remembers calls, for the logic around it;
// the real datapath is proven against the kernel in netpol/datapath and
// test/e2e/netpol.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	policies map[int]datapath.Policy
	attached map[int]bool
}

func (r *recorder) Apply(i int, p datapath.Policy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "apply")
	r.policies[i] = p
	return nil
}

func (r *recorder) Attach(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "attach")
	r.attached[i] = true
	return nil
}

func (r *recorder) Remove(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "remove")
	delete(r.policies, i)
	delete(r.attached, i)
	return nil
}

func (r *recorder) CompleteUpgrade() error { return nil }

func (r *recorder) Attached() ([]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i := range r.attached {
		out = append(out, i)
	}
	return out, nil
}

func (r *recorder) policy(i int) (datapath.Policy, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.policies[i]
	return p, ok
}

func testPod(ns, name string, l map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}, Spec: corev1.PodSpec{NodeName: "n1"}}
}

func peObject(t *testing.T, name, gen, count string, spec pe.PolicyEndpointSpec) *unstructured.Unstructured {
	t.Helper()
	o := chunk(name, gen, count, spec)
	o.APIVersion, o.Kind = pe.Group+"/"+pe.Version, pe.Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func startAgent(t *testing.T, mode string, objs ...runtime.Object) (*Agent, *recorder, *dynfake.FakeDynamicClient, *fake.Clientset) {
	t.Helper()
	rec := &recorder{policies: map[int]datapath.Policy{}, attached: map[int]bool{}}
	links := map[string]int{vethname.For("eni", "x", "a"): 7, vethname.For("eni", "x", "b"): 8}
	a, dyn, kube := startAgentOn(t, mode, rec, links, objs...)
	return a, rec, dyn, kube
}

// startAgentOn starts an agent on a node with these host links (name →
// index) and what rec has attached already (a previous agent's pods).
func startAgentOn(t *testing.T, mode string, rec *recorder, links map[string]int, objs ...runtime.Object) (*Agent, *dynfake.FakeDynamicClient, *fake.Clientset) {
	t.Helper()
	kube := fake.NewClientset(objs...)
	scheme := runtime.NewScheme()
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{pe.GroupVersionResource: "PolicyEndpointList"})
	a := New(Config{NodeName: "n1", Mode: mode, VethPrefix: "eni", Kube: kube, Dynamic: dyn, Datapath: rec,
		LinkIndex: func(n string) (int, error) {
			if i, ok := links[n]; ok {
				return i, nil
			}
			return 0, errors.New("no such link")
		},
		LinkName: func(i int) (string, error) {
			for n, j := range links {
				if i == j {
					return n, nil
				}
			}
			return "", errors.New("no such link")
		}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return a, dyn, kube
}

// A restarted agent takes back the pods its predecessor attached, also
// those whose veth was made under an earlier AWS_VPC_K8S_CNI_VETHPREFIX:
// stripping their programs would leave them open. Programs on links that
// are gone or name no pod of the node are removed.
func TestRestartKeepsPodsMadeUnderAnotherVethPrefix(t *testing.T) {
	rec := &recorder{policies: map[int]datapath.Policy{}, attached: map[int]bool{7: true, 8: true, 9: true, 10: true}}
	links := map[string]int{
		vethname.For("old", "x", "a"):    7, // made before the prefix changed
		vethname.For("eni", "x", "b"):    8,
		vethname.For("eni", "x", "gone"): 9, // no such pod any more
		// 10: the link itself is gone
	}
	startAgentOn(t, ModeStrict, rec, links, testPod("x", "a", nil), testPod("x", "b", nil))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, i := range []int{7, 8} {
		if p, ok := rec.policies[i]; !rec.attached[i] || !ok || !p.Ingress.Isolated {
			t.Errorf("pod on ifindex %d after the restart: attached %v, policy %+v %v", i, rec.attached[i], p, ok)
		}
	}
	for _, i := range []int{9, 10} {
		if rec.attached[i] {
			t.Errorf("ifindex %d kept its programs: no pod of this node", i)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEnforceAppliesBeforeAttachAndFollowsModes(t *testing.T) {
	a, rec, _, _ := startAgent(t, ModeStandard, testPod("x", "a", map[string]string{"pod": "a"}), testPod("x", "b", nil))
	// The pods' veths exist at start, so the agent adopted them already.
	before := len(rec.calls)
	if err := a.Enforce(context.Background(), "x", "a", "", 1); err != nil {
		t.Fatal(err)
	}
	if calls := rec.calls[before:]; len(calls) != 2 || calls[0] != "apply" || calls[1] != "attach" {
		t.Fatalf("calls %v: the policy must be in the maps before the programs see a packet", calls)
	}
	if p, _ := rec.policy(7); p.Ingress.Isolated || p.Egress.Isolated {
		t.Fatalf("standard mode isolated an unselected pod: %+v", p)
	}
	if err := a.Enforce(context.Background(), "x", "b", ModeStrict, 1); err != nil {
		t.Fatal(err)
	}
	if p, _ := rec.policy(8); !p.Ingress.Isolated || !p.Egress.Isolated || len(p.Ingress.Rules) != 0 {
		t.Fatalf("strict mode let an unselected pod talk: %+v", p)
	}
	if err := a.Enforce(context.Background(), "x", "nope", "", 1); err == nil {
		t.Fatal("a pod without a veth was reported enforced")
	}
	if err := a.Enforce(context.Background(), "x", "a", "loose", 1); err == nil {
		t.Fatal("an unknown mode was accepted")
	}
	if err := a.Delete("x", "a"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete("x", "a"); err != nil {
		t.Fatalf("a second DeletePodNp must succeed: %v", err)
	}
	if _, ok := rec.policy(7); ok {
		t.Fatal("state left after DeletePodNp")
	}
}

func TestPolicyEndpointChangesReachPods(t *testing.T) {
	a, rec, dyn, kube := startAgent(t, ModeStandard, testPod("x", "a", map[string]string{"pod": "a"}))
	if err := a.Enforce(context.Background(), "x", "a", "", 1); err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(pe.GroupVersionResource).Namespace("x")
	ctx := context.Background()
	spec := pe.PolicyEndpointSpec{
		PodSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
		PodIsolation: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:      []pe.EndpointInfo{{CIDR: "10.0.0.9/32"}},
	}
	if _, err := res.Create(ctx, peObject(t, "p-1", "1", "1", spec), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ingress isolation", func() bool { p, _ := rec.policy(7); return p.Ingress.Isolated && len(p.Ingress.Rules) == 1 })

	// Generation 2 is written in two chunks; with one of them present the
	// pod keeps generation 1.
	spec2 := spec
	spec2.Ingress = []pe.EndpointInfo{{CIDR: "10.0.0.10/32"}}
	if _, err := res.Create(ctx, peObject(t, "p-2", "2", "2", spec2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if p, _ := rec.policy(7); len(p.Ingress.Rules) != 1 || p.Ingress.Rules[0].CIDRs[0].String() != "10.0.0.9/32" {
		t.Fatalf("a half-written generation was enforced: %+v", p.Ingress)
	}
	spec3 := spec
	spec3.Ingress = []pe.EndpointInfo{{CIDR: "10.0.0.11/32"}}
	if _, err := res.Create(ctx, peObject(t, "p-3", "2", "2", spec3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "generation 2", func() bool {
		p, _ := rec.policy(7)
		return len(p.Ingress.Rules) == 1 && len(p.Ingress.Rules[0].CIDRs) == 2
	})

	// The pod leaves the selector: it is unselected at once.
	if _, err := kube.CoreV1().Pods("x").Update(ctx, testPod("x", "a", map[string]string{"pod": "z"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "relabelled pod unselected", func() bool { p, _ := rec.policy(7); return !p.Ingress.Isolated })

	// Removing every chunk stops enforcing.
	if _, err := kube.CoreV1().Pods("x").Update(ctx, testPod("x", "a", map[string]string{"pod": "a"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "selected again", func() bool { p, _ := rec.policy(7); return p.Ingress.Isolated })
	for _, n := range []string{"p-1", "p-2", "p-3"} {
		if err := res.Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "policy deleted", func() bool { p, _ := rec.policy(7); return !p.Ingress.Isolated })
}

// A multi-NIC pod (EnforceNpToPod's InterfaceCount 2) has its policy on
// both host veths, eth0's and the one named after "<pod>.1": traffic
// through its second interface must not pass unenforced. DeletePodNp
// removes both, and a restarted agent takes both back.
func TestMultiNICPodEnforcedOnEveryInterface(t *testing.T) {
	rec := &recorder{policies: map[int]datapath.Policy{}, attached: map[int]bool{}}
	links := map[string]int{vethname.For("eni", "x", "m"): 7, vethname.For("eni", "x", vethname.Interface("m", 1)): 11}
	a, _, _ := startAgentOn(t, ModeStrict, rec, links, testPod("x", "m", nil))
	if err := a.Enforce(context.Background(), "x", "m", "", 2); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{7, 11} {
		if p, ok := rec.policy(i); !ok || !p.Ingress.Isolated || !rec.isAttached(i) {
			t.Errorf("ifindex %d of the multi-NIC pod: attached %v, policy %+v %v", i, rec.isAttached(i), p, ok)
		}
	}
	if err := a.Enforce(context.Background(), "x", "m", "", 3); err == nil {
		t.Error("a third interface without a veth was reported enforced")
	}
	// Restarted: both veths are the pod's.
	rec2 := &recorder{policies: map[int]datapath.Policy{}, attached: map[int]bool{7: true, 11: true}}
	startAgentOn(t, ModeStrict, rec2, links, testPod("x", "m", nil))
	for _, i := range []int{7, 11} {
		if p, ok := rec2.policy(i); !ok || !p.Ingress.Isolated || !rec2.isAttached(i) {
			t.Errorf("after a restart, ifindex %d: attached %v, policy %+v %v", i, rec2.isAttached(i), p, ok)
		}
	}
	if err := a.Delete("x", "m"); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{7, 11} {
		if _, ok := rec.policy(i); ok || rec.isAttached(i) {
			t.Errorf("ifindex %d keeps state after DeletePodNp", i)
		}
	}
}

func (r *recorder) isAttached(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attached[i]
}

// An agent started on a node whose pods run without programs (made while
// no agent ran) adopts them by their veths: a policy then holds for them
// as for any pod. They get standard mode even under a strict default, so
// an adopted pod no policy selects stays open. Host-network and finished
// pods, and pods without a veth yet, are left alone.
func TestStartAdoptsRunningPods(t *testing.T) {
	rec := &recorder{policies: map[int]datapath.Policy{}, attached: map[int]bool{}}
	links := map[string]int{vethname.For("eni", "x", "a"): 7, vethname.For("eni", "x", "b"): 8, vethname.For("eni", "x", "done"): 9}
	hostNet := testPod("x", "h", nil)
	hostNet.Spec.HostNetwork = true
	done := testPod("x", "done", nil)
	done.Status.Phase = corev1.PodSucceeded
	a, dyn, _ := startAgentOn(t, ModeStrict, rec, links, testPod("x", "a", map[string]string{"pod": "a"}), testPod("x", "b", nil),
		testPod("x", "pending", nil), hostNet, done)
	for _, i := range []int{7, 8} {
		if p, ok := rec.policy(i); !rec.isAttached(i) || !ok || p.Ingress.Isolated {
			t.Errorf("adopted pod on ifindex %d: attached %v, policy %+v %v (want open)", i, rec.isAttached(i), p, ok)
		}
	}
	if rec.isAttached(9) {
		t.Error("a finished pod was adopted")
	}
	if n := len(a.pods); n != 2 {
		t.Errorf("agent holds %d pods, want the 2 adopted", n)
	}
	spec := pe.PolicyEndpointSpec{
		PodSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
		PodIsolation: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:      []pe.EndpointInfo{{CIDR: "10.0.0.9/32"}},
	}
	if _, err := dyn.Resource(pe.GroupVersionResource).Namespace("x").Create(context.Background(), peObject(t, "p-1", "1", "1", spec), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the adopted pod selected", func() bool { p, _ := rec.policy(7); return p.Ingress.Isolated && len(p.Ingress.Rules) == 1 })
	if p, _ := rec.policy(8); p.Ingress.Isolated {
		t.Error("an adopted pod no policy selects was isolated")
	}
}
