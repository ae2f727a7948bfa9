// Package netpolicy_test drives the NetworkPolicy → PolicyEndpoint
// controller inside a real berth-controlplane (and on its own, with the
// RBAC shipped in deploy/rbac): pods are Pod objects bound to a node
// object, their IPs written through the status subresource as a kubelet
// would, and the PolicyEndpoints are read back through the API.
package netpolicy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/test/e2e"
)

type env struct {
	cp  *e2e.Controlplane
	kc  kubernetes.Interface
	dyn dynamic.Interface
	ext apiextensionsclient.Interface
}

func setup(t *testing.T, flags ...string) *env {
	t.Helper()
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath", "off")
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), "netpol-e2e", flags...)
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 300, 600
	e := &env{cp: cp}
	e.kc = kubernetes.NewForConfigOrDie(cfg)
	e.dyn = dynamic.NewForConfigOrDie(cfg)
	e.ext = apiextensionsclient.NewForConfigOrDie(cfg)
	// Pods are bound to this node; without it the pod garbage collector
	// deletes them as orphans.
	if _, err := e.kc.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestController(t *testing.T) {
	e := setup(t)
	t.Run("crd-installed", func(t *testing.T) { testCRD(t, e) })
	t.Run("resolve-and-update", func(t *testing.T) { testResolveAndUpdate(t, e) })
	t.Run("chunks-at-scale", func(t *testing.T) { testScale(t, e) })
	t.Run("bad-input", func(t *testing.T) { testBadInput(t, e) })
	t.Run("metrics", func(t *testing.T) { testMetrics(t, e) })
}

func testCRD(t *testing.T, e *env) {
	crd, err := e.ext.ApiextensionsV1().CustomResourceDefinitions().Get(t.Context(), "policyendpoints.networking.k8s.aws", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	established := slices.ContainsFunc(crd.Status.Conditions, func(c apiextensionsv1.CustomResourceDefinitionCondition) bool {
		return c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue
	})
	if !established || crd.Spec.Scope != apiextensionsv1.NamespaceScoped || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("crd: established %v, %+v", established, crd.Spec)
	}
	// The structural schema prunes what the API does not know.
	u, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&pe.PolicyEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.aws/v1alpha1", Kind: "PolicyEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
		Spec:       pe.PolicyEndpointSpec{PolicyRef: pe.PolicyReference{Name: "x", Namespace: "default"}, Ingress: []pe.EndpointInfo{{CIDR: "10.0.0.0/8"}}},
	})
	u["spec"].(map[string]any)["unknown"] = "dropped"
	obj := mustUnstructured(u)
	got, err := e.dyn.Resource(pe.GroupVersionResource).Namespace("default").Create(t.Context(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Object["spec"].(map[string]any)["unknown"]; ok {
		t.Errorf("unknown field kept: the schema is not structural")
	}
	_ = e.dyn.Resource(pe.GroupVersionResource).Namespace("default").Delete(t.Context(), "probe", metav1.DeleteOptions{})
	// A port that is not a number is refused.
	u["spec"].(map[string]any)["ingress"] = []any{map[string]any{"cidr": "10.0.0.0/8", "ports": []any{map[string]any{"port": "http"}}}}
	if _, err := e.dyn.Resource(pe.GroupVersionResource).Namespace("default").Create(t.Context(), mustUnstructured(u), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("a named port in a PolicyEndpoint: %v, want Invalid", err)
	}
}

func testResolveAndUpdate(t *testing.T, e *env) {
	ctx := t.Context()
	createNamespace(t, e, "np-x", map[string]string{"ns": "x"})
	createNamespace(t, e, "np-y", map[string]string{"ns": "y"})
	http := corev1.ContainerPort{Name: "http", ContainerPort: 8080}
	a := createPod(t, e, "np-x", "a", "10.1.0.1", map[string]string{"pod": "a"}, http)
	b := createPod(t, e, "np-x", "b", "10.1.0.2", map[string]string{"pod": "b"})
	createPod(t, e, "np-y", "c", "10.2.0.3", map[string]string{"pod": "c"}, http)
	createPod(t, e, "np-x", "host", "", map[string]string{"pod": "b"}) // host network: never a peer
	svc, err := e.kc.CoreV1().Services("np-y").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s-c"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"pod": "c"},
			Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}, {Name: "other", Port: 9999}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tcp := corev1.ProtocolTCP
	np, err := e.kc.NetworkingV1().NetworkPolicies("np-x").Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromString("http"))}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "np-y"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "c"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantEgress := fmt.Sprintf(`[10.2.0.3/32 TCP/8080] [%s/32 TCP/80]`, svc.Spec.ClusterIP)
	set := waitChunks(t, e, "np-x", "allow", func(s chunkSet) bool {
		return s.pods() == "np-x/a=10.1.0.1@192.168.0.1" && s.entries("ingress") == "[10.1.0.2/32 TCP/8080]" && s.entries("egress") == wantEgress
	})
	if len(set.objs) != 1 || set.gen != 1 {
		t.Errorf("first write: %d chunks of generation %d", len(set.objs), set.gen)
	}
	obj := set.objs[0]
	if ref := metav1.GetControllerOf(obj); ref == nil || ref.UID != np.UID || ref.Kind != "NetworkPolicy" {
		t.Errorf("owner: %+v", obj.OwnerReferences)
	}
	if obj.Spec.PolicyRef != (pe.PolicyReference{Name: "allow", Namespace: "np-x"}) || obj.Spec.PodSelector.MatchLabels["pod"] != "a" ||
		!slices.Equal(obj.Spec.PodIsolation, []networkingv1.PolicyType{"Ingress", "Egress"}) {
		t.Errorf("header: %+v", obj.Spec)
	}

	// A relabelled pod leaves the peers: a new generation replaces the old.
	b.Labels["pod"] = "z"
	if _, err := e.kc.CoreV1().Pods("np-x").Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	set = waitChunks(t, e, "np-x", "allow", func(s chunkSet) bool { return s.entries("ingress") == "" && s.gen > 1 })
	if len(set.objs) != 1 {
		t.Errorf("after relabel: %d chunks", len(set.objs))
	}
	// A new selected pod joins podSelectorEndpoints.
	createPod(t, e, "np-x", "a2", "10.1.0.11", map[string]string{"pod": "a"}, http)
	set = waitChunks(t, e, "np-x", "allow", func(s chunkSet) bool {
		return s.pods() == "np-x/a2=10.1.0.11@192.168.0.1 np-x/a=10.1.0.1@192.168.0.1" // sorted
	})

	// Nothing changed: nothing is written, whatever wakes the controller.
	before := set.versions()
	unchanged := unchangedReconciles(t, e)
	np.Annotations = map[string]string{"touched": "yes"}
	if _, err := e.kc.NetworkingV1().NetworkPolicies("np-x").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.Annotations = map[string]string{"touched": "yes"}
	if _, err := e.kc.CoreV1().Pods("np-x").Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e2e.WaitFor(t, "a reconcile that finds nothing to do", 30*time.Second, func() bool { return unchangedReconciles(t, e) > unchanged })
	time.Sleep(2 * time.Second)
	if after := readChunks(t, e, "np-x", "allow").versions(); after != before {
		t.Errorf("objects rewritten without a change:\n%s\n%s", before, after)
	}

	// A chunk deleted by someone else comes back.
	if err := e.dyn.Resource(pe.GroupVersionResource).Namespace("np-x").Delete(ctx, set.objs[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChunks(t, e, "np-x", "allow", func(s chunkSet) bool { return s.gen > set.gen && strings.Contains(s.pods(), "a2") })

	// The policy deleted, its chunks go.
	if err := e.kc.NetworkingV1().NetworkPolicies("np-x").Delete(ctx, "allow", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e2e.WaitFor(t, "chunks of a deleted policy removed", 30*time.Second, func() bool { return len(listChunks(t, e, "np-x", "allow")) == 0 })
}

func testScale(t *testing.T, e *env) {
	ctx := t.Context()
	createNamespace(t, e, "np-big", nil)
	// The policy first: the controller follows the pods as they come.
	if _, err := e.kc.NetworkingV1().NetworkPolicies("np-big").Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "big"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "big"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 450
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			lbls := map[string]string{"app": "big"}
			if i%3 == 0 {
				lbls["role"] = "client"
			}
			_, err := tryCreatePod(ctx, e, "np-big", fmt.Sprintf("p%03d", i), fmt.Sprintf("10.9.%d.%d", i/200, i%200+1), lbls)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// 450 selected pods and 150 client /32s: 600 items, 3 chunks of 200.
	set := waitChunks(t, e, "np-big", "big", func(s chunkSet) bool {
		return len(s.objs) == 3 && len(strings.Fields(s.pods())) == n && strings.Count(s.entries("ingress"), "/32") == n/3
	})
	seen := map[int]bool{}
	for _, o := range set.objs {
		items := len(o.Spec.PodSelectorEndpoints) + len(o.Spec.Ingress) + len(o.Spec.Egress)
		idx, _ := strconv.Atoi(o.Annotations[pe.AnnotationChunkIndex])
		if items != 200 || o.Annotations[pe.AnnotationChunkCount] != "3" || o.Annotations[pe.AnnotationGeneration] != strconv.FormatInt(set.gen, 10) ||
			o.Labels[pe.LabelPolicyName] != "big" || o.Spec.PolicyRef.Name != "big" || o.Spec.PodSelector == nil || len(o.Spec.PodIsolation) != 1 || seen[idx] {
			t.Errorf("chunk %s: %d items, annotations %v, header %+v %v", o.Name, items, o.Annotations, o.Spec.PolicyRef, o.Spec.PodIsolation)
		}
		seen[idx] = true
	}
	// One more client: one new generation, complete, replacing all three.
	if _, err := tryCreatePod(ctx, e, "np-big", "extra", "10.9.9.9", map[string]string{"role": "client"}); err != nil {
		t.Fatal(err)
	}
	next := waitChunks(t, e, "np-big", "big", func(s chunkSet) bool { return strings.Contains(s.entries("ingress"), "10.9.9.9/32") })
	if next.gen <= set.gen || len(next.objs) != 4 {
		t.Errorf("after one more client: generation %d (was %d), %d chunks (601 items: 4)", next.gen, set.gen, len(next.objs))
	}
}

func testBadInput(t *testing.T, e *env) {
	ctx := t.Context()
	createNamespace(t, e, "np-bad", nil)
	_, err := e.kc.NetworkingV1().NetworkPolicies("np-bad").Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bad-cidr"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"192.168.0.0/16"}}}},
		}}},
	}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("an except outside its CIDR: %v, want Invalid", err)
	}
	// A policy that references nothing still isolates: one chunk, no endpoints.
	if _, err := e.kc.NetworkingV1().NetworkPolicies("np-bad").Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "nothing"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"no": "such-pod"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"no": "such-namespace"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("no-such-port"))}},
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	set := waitChunks(t, e, "np-bad", "nothing", func(s chunkSet) bool { return len(s.objs) == 1 })
	if s := set.objs[0].Spec; len(s.PodSelectorEndpoints)+len(s.Ingress)+len(s.Egress) != 0 || !slices.Equal(s.PodIsolation, []networkingv1.PolicyType{"Ingress"}) {
		t.Errorf("policy referencing nothing: %+v", s)
	}
}

func testMetrics(t *testing.T, e *env) {
	m, err := e.cp.Kubectl(t, "get", "--raw", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`berth_netpol_controller_reconciles_total{result="written"}`, `berth_netpol_controller_reconciles_total{result="unchanged"}`,
		`berth_netpol_controller_policyendpoint_writes_total{op="create"}`, "berth_netpol_controller_reconcile_seconds_bucket"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestStandalone runs `berth-controlplane netpol-controller` as the
// ServiceAccount of deploy/rbac, against a control plane that runs no
// controller of its own and has the CRD applied from deploy/crds with
// kubectl: the shipped manifests and the least-privilege role suffice.
func TestStandalone(t *testing.T) {
	e := setup(t, "--network-policy-controller=false")
	root := repoRoot()
	for _, f := range []string{"deploy/crds/networking.k8s.aws_policyendpoints.yaml", "deploy/rbac/netpol-controller.yaml"} {
		if out, err := e.cp.Kubectl(t, "apply", "-f", filepath.Join(root, f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
		}
	}
	if out, err := e.cp.Kubectl(t, "wait", "--for=condition=Established", "crd/policyendpoints.networking.k8s.aws", "--timeout=60s"); err != nil {
		t.Fatalf("crd: %v\n%s", err, out)
	}
	token, err := e.cp.Kubectl(t, "-n", "kube-system", "create", "token", "berth-netpol-controller", "--duration=1h")
	if err != nil {
		t.Fatalf("token: %v\n%s", err, token)
	}
	kc, err := clientcmd.LoadFromFile(e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.AuthInfos = map[string]*clientcmdapi.AuthInfo{"sa": {Token: token}}
	for _, c := range kc.Contexts {
		c.AuthInfo = "sa"
	}
	saKubeconfig := filepath.Join(t.TempDir(), "sa.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, saKubeconfig); err != nil {
		t.Fatal(err)
	}
	metrics := e2e.FreePort(t)
	cmd := exec.Command(e2e.Bin(t, "berth-controlplane"), "netpol-controller", "--kubeconfig", saKubeconfig,
		"--leader-elect", "--endpoint-chunk-size", "2", "--metrics-addr", metrics)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("netpol-controller output:\n%s", logs)
		}
	})

	createNamespace(t, e, "solo", nil)
	for i, name := range []string{"a", "b", "c"} {
		createPod(t, e, "solo", name, fmt.Sprintf("10.5.0.%d", i+1), map[string]string{"app": "solo"})
	}
	if _, err := e.kc.NetworkingV1().NetworkPolicies("solo").Create(t.Context(), &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Three pods, chunks of two.
	waitChunks(t, e, "solo", "deny", func(s chunkSet) bool { return len(s.objs) == 2 && len(strings.Fields(s.pods())) == 3 })
	if holder, err := e.cp.Kubectl(t, "-n", "kube-system", "get", "lease", "berth-netpol-controller", "-o", "jsonpath={.spec.holderIdentity}"); err != nil || holder == "" {
		t.Errorf("lease: %q %v", holder, err)
	}
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the controller was refused something:\n%s", logs)
	}
}

// chunkSet is a policy's complete newest generation.
type chunkSet struct {
	gen  int64
	objs []*pe.PolicyEndpoint // by index
}

// pods lists podSelectorEndpoints as "ns/name=ip@host", sorted.
func (s chunkSet) pods() string {
	var out []string
	for _, o := range s.objs {
		for _, p := range o.Spec.PodSelectorEndpoints {
			out = append(out, fmt.Sprintf("%s/%s=%s@%s", p.Namespace, p.Name, p.PodIP, p.HostIP))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// entries renders a direction's entries as "[cidr proto/port ...]" in order.
func (s chunkSet) entries(dir string) string {
	var out []string
	for _, o := range s.objs {
		list := o.Spec.Ingress
		if dir == "egress" {
			list = o.Spec.Egress
		}
		for _, e := range list {
			f := []string{string(e.CIDR)}
			for _, x := range e.Except {
				f = append(f, "except:"+string(x))
			}
			for _, p := range e.Ports {
				s := string(*p.Protocol) + "/"
				if p.Port != nil {
					s += strconv.Itoa(int(*p.Port))
				}
				if p.EndPort != nil {
					s += "-" + strconv.Itoa(int(*p.EndPort))
				}
				f = append(f, s)
			}
			out = append(out, "["+strings.Join(f, " ")+"]")
		}
	}
	return strings.Join(out, " ")
}

func (s chunkSet) versions() string {
	var out []string
	for _, o := range s.objs {
		out = append(out, o.Name+"@"+o.ResourceVersion)
	}
	return strings.Join(out, " ")
}

func listChunks(t *testing.T, e *env, ns, policy string) []*pe.PolicyEndpoint {
	t.Helper()
	list, err := e.dyn.Resource(pe.GroupVersionResource).Namespace(ns).List(t.Context(), metav1.ListOptions{LabelSelector: pe.LabelPolicyName + "=" + policy})
	if err != nil {
		t.Fatal(err)
	}
	var out []*pe.PolicyEndpoint
	for _, u := range list.Items {
		var o pe.PolicyEndpoint
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o); err != nil {
			t.Fatal(err)
		}
		out = append(out, &o)
	}
	return out
}

// readChunks returns the newest complete generation, judged as an agent
// does, with pe.NewestComplete.
func readChunks(t *testing.T, e *env, ns, policy string) chunkSet {
	t.Helper()
	var all []pe.PolicyEndpoint
	for _, o := range listChunks(t, e, ns, policy) {
		all = append(all, *o)
	}
	gen, set, _ := pe.NewestComplete(all)
	s := chunkSet{gen: gen}
	for i := range set {
		s.objs = append(s.objs, &set[i])
	}
	return s
}

// waitChunks waits until the newest complete generation satisfies ok and
// is the only generation left.
func waitChunks(t *testing.T, e *env, ns, policy string, ok func(chunkSet) bool) chunkSet {
	t.Helper()
	var s chunkSet
	deadline := time.Now().Add(90 * time.Second)
	for {
		s = readChunks(t, e, ns, policy)
		if s.gen > 0 && ok(s) && len(listChunks(t, e, ns, policy)) == len(s.objs) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy %s/%s: chunks never as expected; last complete generation %d: pods %q ingress %q egress %q",
				ns, policy, s.gen, s.pods(), s.entries("ingress"), s.entries("egress"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var unchangedRE = regexp.MustCompile(`(?m)^berth_netpol_controller_reconciles_total\{result="unchanged"\} (\d+)`)

func unchangedReconciles(t *testing.T, e *env) int {
	t.Helper()
	m, err := e.cp.Kubectl(t, "get", "--raw", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if s := unchangedRE.FindStringSubmatch(m); s != nil {
		n, _ := strconv.Atoi(s[1])
		return n
	}
	return 0
}

func createNamespace(t *testing.T, e *env, name string, lbls map[string]string) {
	t.Helper()
	if _, err := e.kc.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Pods are admitted once the controller manager made the default
	// ServiceAccount.
	e2e.WaitFor(t, "default service account in "+name, 30*time.Second, func() bool {
		_, err := e.kc.CoreV1().ServiceAccounts(name).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	})
}

// createPod creates a pod bound to node-1 and reports it running with ip
// (an empty ip makes a hostNetwork pod on the node's address).
func createPod(t *testing.T, e *env, ns, name, ip string, lbls map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	t.Helper()
	p, err := tryCreatePod(t.Context(), e, ns, name, ip, lbls, ports...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tryCreatePod(ctx context.Context, e *env, ns, name, ip string, lbls map[string]string, ports ...corev1.ContainerPort) (*corev1.Pod, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls},
		Spec: corev1.PodSpec{
			NodeName:   "node-1",
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10", Ports: ports}},
			// No kubelet heartbeats: the node goes unreachable; the pods stay.
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}},
		},
	}
	if ip == "" {
		pod.Spec.HostNetwork = true
		ip = "192.168.0.1"
	}
	p, err := e.kc.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		HostIP: "192.168.0.1", HostIPs: []corev1.HostIP{{IP: "192.168.0.1"}},
	}
	p, err = e.kc.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s status: %w", ns, name, err)
	}
	return p, nil
}

func mustUnstructured(m map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: m}
}

// repoRoot is three levels above this package, where go test runs (file
// names from runtime.Caller are module paths under -trimpath).
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..", "..")
}

func ptr[T any](v T) *T { return &v }
