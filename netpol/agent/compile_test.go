package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/netpol/datapath"
)

var ref = types.NamespacedName{Namespace: "x", Name: "p"}

func chunk(name, gen, count string, spec pe.PolicyEndpointSpec) *pe.PolicyEndpoint {
	o := &pe.PolicyEndpoint{Spec: spec}
	o.Name, o.Namespace = name, "x"
	o.Annotations = map[string]string{}
	if gen != "" {
		o.Annotations[pe.AnnotationGeneration] = gen
		o.Annotations[pe.AnnotationChunkCount] = count
	}
	o.Spec.PolicyRef = pe.PolicyReference{Name: "p", Namespace: "x"}
	return o
}

func endpoints(names ...string) []pe.PodEndpoint {
	var out []pe.PodEndpoint
	for _, n := range names {
		out = append(out, pe.PodEndpoint{Name: n, Namespace: "x", PodIP: "10.0.0.1", HostIP: "10.0.0.2"})
	}
	return out
}

func TestCompleteSetTakesNewestCompleteGeneration(t *testing.T) {
	g1a := chunk("p-1", "1", "2", pe.PolicyEndpointSpec{PodSelectorEndpoints: endpoints("a")})
	g1b := chunk("p-2", "1", "2", pe.PolicyEndpointSpec{PodSelectorEndpoints: endpoints("b")})
	// Generation 2 is half-written: one chunk of three.
	g2a := chunk("p-3", "2", "3", pe.PolicyEndpointSpec{PodSelectorEndpoints: endpoints("c")})
	s, ok, err := completeSet(ref, []*pe.PolicyEndpoint{g1a, g2a, g1b})
	if err != nil || !ok {
		t.Fatalf("completeSet: %v %v", ok, err)
	}
	if s.generation != "1" || !s.endpoints[types.NamespacedName{Namespace: "x", Name: "a"}] ||
		!s.endpoints[types.NamespacedName{Namespace: "x", Name: "b"}] || s.endpoints[types.NamespacedName{Namespace: "x", Name: "c"}] {
		t.Fatalf("got generation %s endpoints %v; want generation 1 with a and b only", s.generation, s.endpoints)
	}
	// Only the half-written generation: nothing complete, the caller keeps what it had.
	if _, ok, _ := completeSet(ref, []*pe.PolicyEndpoint{g2a}); ok {
		t.Fatal("a partial chunk set was taken as complete")
	}
	// The AWS controller's objects carry no generation: one set.
	aws := chunk("p-abc", "", "", pe.PolicyEndpointSpec{PodSelectorEndpoints: endpoints("d")})
	if s, ok, _ := completeSet(ref, []*pe.PolicyEndpoint{aws}); !ok || !s.endpoints[types.NamespacedName{Namespace: "x", Name: "d"}] {
		t.Fatal("objects without berth's annotations were not taken")
	}
}

func TestSelectsPrefersLiveLabels(t *testing.T) {
	s, _, err := completeSet(ref, []*pe.PolicyEndpoint{chunk("p-1", "1", "1", pe.PolicyEndpointSpec{
		PodSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
		PodSelectorEndpoints: endpoints("old"),
	})})
	if err != nil {
		t.Fatal(err)
	}
	newPod := types.NamespacedName{Namespace: "x", Name: "new"}
	if !s.selects(newPod, map[string]string{"pod": "a"}) {
		t.Fatal("a new pod whose labels match was not selected before the controller listed it")
	}
	if s.selects(types.NamespacedName{Namespace: "x", Name: "old"}, map[string]string{"pod": "b"}) {
		t.Fatal("a pod relabelled out of the selector stayed selected")
	}
	if s.selects(types.NamespacedName{Namespace: "y", Name: "new"}, map[string]string{"pod": "a"}) {
		t.Fatal("a pod of another namespace was selected")
	}
	if !s.selects(types.NamespacedName{Namespace: "x", Name: "old"}, nil) {
		t.Fatal("without labels the controller's list must decide")
	}
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }
func port(n int32) *int32                      { return &n }

func TestCompileKeepsExceptPerRule(t *testing.T) {
	s := &policySet{ref: ref, egressIsolation: true, egress: []pe.EndpointInfo{
		{CIDR: "10.0.0.0/8", Except: []pe.NetworkAddress{"10.1.0.0/16"}},
		// Another rule allows part of what the first rule's except removes.
		{CIDR: "10.0.0.0/12"},
		{CIDR: "10.9.9.9"},
	}}
	var attr attribution
	p, bad := compile([]*policySet{s}, &attr)
	if len(bad) != 0 {
		t.Fatalf("bad entries: %v", bad)
	}
	if p.Ingress.Isolated || !p.Egress.Isolated || len(p.Egress.Rules) != 2 {
		t.Fatalf("policy %+v", p)
	}
	withExcept, merged := p.Egress.Rules[0], p.Egress.Rules[1]
	if len(withExcept.Except) != 1 || len(withExcept.CIDRs) != 1 {
		t.Fatalf("the except rule was merged: %+v", withExcept)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/12"), netip.MustParsePrefix("10.9.9.9/32")}
	if len(merged.CIDRs) != 2 || merged.CIDRs[0] != want[0] || merged.CIDRs[1] != want[1] || len(merged.Except) != 0 {
		t.Fatalf("merged rule %+v, want CIDRs %v", merged, want)
	}
	if !strings.Contains(attr.name(withExcept.ID), "x/p egress") {
		t.Fatalf("attribution %q", attr.name(withExcept.ID))
	}
}

func TestCompilePortsAndUnion(t *testing.T) {
	a := &policySet{ref: ref, ingressIsolation: true, ingress: []pe.EndpointInfo{
		{CIDR: "10.0.0.5", Ports: []pe.Port{{Port: port(80)}, {Protocol: proto(corev1.ProtocolUDP), Port: port(53)}}},
		{CIDR: "10.0.0.6", Ports: []pe.Port{{Protocol: proto(corev1.ProtocolUDP), Port: port(53)}, {Port: port(80)}}},
		{CIDR: "0.0.0.0/0", Ports: []pe.Port{{Protocol: proto(corev1.ProtocolSCTP), Port: port(1000), EndPort: port(2000)}}},
		{CIDR: "::/0", Ports: []pe.Port{{Protocol: proto(corev1.ProtocolSCTP), Port: port(1000), EndPort: port(2000)}}},
	}}
	b := &policySet{ref: types.NamespacedName{Namespace: "x", Name: "q"}, ingressIsolation: true, egressIsolation: true}
	p, bad := compile([]*policySet{a, b}, &attribution{})
	if len(bad) != 0 {
		t.Fatalf("bad: %v", bad)
	}
	if !p.Egress.Isolated || len(p.Egress.Rules) != 0 {
		t.Fatalf("egress of a rule-less isolating policy must deny all: %+v", p.Egress)
	}
	if len(p.Ingress.Rules) != 2 {
		t.Fatalf("ingress rules %+v", p.Ingress.Rules)
	}
	r0, r1 := p.Ingress.Rules[0], p.Ingress.Rules[1]
	if len(r0.CIDRs) != 2 || len(r0.Ports) != 2 || r0.Ports[0] != (datapath.PortRange{Protocol: datapath.ProtoTCP, Start: 80, End: 80}) ||
		r0.Ports[1] != (datapath.PortRange{Protocol: datapath.ProtoUDP, Start: 53, End: 53}) {
		t.Fatalf("same-port entries not merged: %+v", r0)
	}
	// Everything of each family is a CIDR of its own: 0.0.0.0/0 must not open IPv6.
	if r1.AnyPeer || len(r1.CIDRs) != 2 || r1.CIDRs[0] != netip.MustParsePrefix("0.0.0.0/0") || r1.CIDRs[1] != netip.MustParsePrefix("::/0") ||
		r1.Ports[0] != (datapath.PortRange{Protocol: datapath.ProtoSCTP, Start: 1000, End: 2000}) {
		t.Fatalf("range rule %+v", r1)
	}
}

func TestCompileSkipsBadEntriesOnly(t *testing.T) {
	s := &policySet{ref: ref, ingressIsolation: true, ingress: []pe.EndpointInfo{
		{CIDR: "10.0.0.300/32"},
		{CIDR: "10.0.0.1/24"},
		{CIDR: "10.0.0.0/24", Except: []pe.NetworkAddress{"192.168.0.0/24"}},
		{CIDR: "10.0.0.7", Ports: []pe.Port{{Protocol: proto("ICMP"), Port: port(1)}}},
		{CIDR: "10.0.0.8", Ports: []pe.Port{{Port: port(90), EndPort: port(80)}}},
		{CIDR: "10.0.0.9", Ports: []pe.Port{{Port: port(70000)}}},
		{CIDR: "10.0.0.10", Ports: []pe.Port{{EndPort: port(80)}}},
		{CIDR: "10.0.0.11", Ports: []pe.Port{{Port: port(443)}}},
	}}
	p, bad := compile([]*policySet{s}, &attribution{})
	if len(bad) != 7 {
		t.Fatalf("want 7 bad entries, got %d: %v", len(bad), bad)
	}
	for _, b := range bad {
		if b.reason == "" || b.set != s {
			t.Fatalf("bad entry without reason: %+v", b)
		}
	}
	if len(p.Ingress.Rules) != 1 || p.Ingress.Rules[0].CIDRs[0] != netip.MustParsePrefix("10.0.0.11/32") {
		t.Fatalf("the valid rule must stay enforced: %+v", p.Ingress)
	}
}

func TestDigestSeesEveryField(t *testing.T) {
	base := func() datapath.Policy {
		return datapath.Policy{Ingress: datapath.Direction{Isolated: true, Rules: []datapath.Rule{{ID: 1,
			CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.8/29")},
			Ports: []datapath.PortRange{{Protocol: datapath.ProtoTCP, Start: 80, End: 80}}}}}}
	}
	changes := map[string]func(p *datapath.Policy){
		"isolation": func(p *datapath.Policy) { p.Egress.Isolated = true },
		"rule id":   func(p *datapath.Policy) { p.Ingress.Rules[0].ID = 2 },
		"any peer":  func(p *datapath.Policy) { p.Ingress.Rules[0].AnyPeer = true },
		"shared":    func(p *datapath.Policy) { p.Ingress.Rules[0].Shared = true },
		"cidr":      func(p *datapath.Policy) { p.Ingress.Rules[0].CIDRs[0] = netip.MustParsePrefix("10.0.1.0/24") },
		"except to cidr": func(p *datapath.Policy) {
			r := &p.Ingress.Rules[0]
			r.CIDRs, r.Except = append(r.CIDRs, r.Except...), nil
		},
		"port end":  func(p *datapath.Policy) { p.Ingress.Rules[0].Ports[0].End = 81 },
		"protocol":  func(p *datapath.Policy) { p.Ingress.Rules[0].Ports[0].Protocol = datapath.ProtoUDP },
		"rule gone": func(p *datapath.Policy) { p.Ingress.Rules = nil },
		"direction": func(p *datapath.Policy) { p.Ingress, p.Egress = p.Egress, p.Ingress },
	}
	b := base()
	if digest(b) != digest(base()) {
		t.Fatal("equal policies have different digests")
	}
	for name, change := range changes {
		p := base()
		change(&p)
		if digest(p) == digest(b) {
			t.Errorf("digest misses a change of %s", name)
		}
	}
}

// TestCompileSharedRules: rules carry IDs that are the same for every pod
// a policy selects, with the same content, and are Shared; two policies'
// entries are never merged into one rule (pods selected by only one of
// them would carry the same ID with other peers); a colliding ID is not
// Shared.
func TestCompileSharedRules(t *testing.T) {
	a := &policySet{ref: ref, ingressIsolation: true, ingress: []pe.EndpointInfo{
		{CIDR: "10.0.0.5", Ports: []pe.Port{{Port: port(80)}}},
		{CIDR: "10.0.0.0/24", Except: []pe.NetworkAddress{"10.0.0.128/25"}, Ports: []pe.Port{{Port: port(80)}}},
	}}
	b := &policySet{ref: types.NamespacedName{Namespace: "x", Name: "q"}, ingressIsolation: true, ingress: []pe.EndpointInfo{
		{CIDR: "10.0.0.6", Ports: []pe.Port{{Port: port(80)}}},
	}}
	var attr attribution
	both, _ := compile([]*policySet{a, b}, &attr)
	onlyA, _ := compile([]*policySet{a}, &attr)
	if len(both.Ingress.Rules) != 3 || len(onlyA.Ingress.Rules) != 2 {
		t.Fatalf("rules: both %+v, a %+v", both.Ingress.Rules, onlyA.Ingress.Rules)
	}
	byID := map[uint32]datapath.Rule{}
	for _, r := range both.Ingress.Rules {
		if !r.Shared || r.ID == 0 {
			t.Fatalf("rule not shared: %+v", r)
		}
		if _, dup := byID[r.ID]; dup {
			t.Fatalf("two rules with ID %d", r.ID)
		}
		byID[r.ID] = r
	}
	for _, r := range onlyA.Ingress.Rules {
		o, ok := byID[r.ID]
		if !ok || !slices.Equal(o.CIDRs, r.CIDRs) || !slices.Equal(o.Except, r.Except) || !slices.Equal(o.Ports, r.Ports) {
			t.Fatalf("rule %d differs between pods: %+v vs %+v", r.ID, r, o)
		}
	}
	// A collision: the second name with an ID is not shared.
	id, unique := attr.id(ref, "ingress", "ports x")
	attr.names[id] = "someone else"
	if _, unique2 := attr.id(ref, "ingress", "ports x"); !unique || unique2 {
		t.Fatalf("collision not detected: first %v, second %v", unique, unique2)
	}
}
