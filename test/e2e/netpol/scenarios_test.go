package netpol_test

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The scenarios of upstream's network_policy.go (numbered as in
// ../shared/reference/netpol.md §4), run on the full x, y, z × a, b, c
// model. Each step changes the cluster and the oracle together, then
// compares every ordered pair with what the oracle computes.

var (
	tcp80  = probeSpec{corev1.ProtocolTCP, 80}
	tcp81  = probeSpec{corev1.ProtocolTCP, 81}
	udp80  = probeSpec{corev1.ProtocolUDP, 80}
	udp81  = probeSpec{corev1.ProtocolUDP, 81}
	sctp80 = probeSpec{corev1.ProtocolSCTP, 80}
	sctp81 = probeSpec{corev1.ProtocolSCTP, 81}
)

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both        = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func expr(key string, op metav1.LabelSelectorOperator, vals ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
}

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func bothPeer(ns, pod *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func portNum(proto corev1.Protocol, n int) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(int32(n))
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
}

func portName(name string) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Port: &v}
}

func anyPort(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

func in(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports}
}

func out(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports}
}

func peers(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }

// policy builds a NetworkPolicy; a nil podSelector selects every pod.
func policy(ns, name string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType,
	ingress []networkingv1.NetworkPolicyIngressRule, egress []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	if podSel == nil {
		podSel = &metav1.LabelSelector{}
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: types, Ingress: ingress, Egress: egress}}
}

func ingressRules(r ...networkingv1.NetworkPolicyIngressRule) []networkingv1.NetworkPolicyIngressRule {
	if r == nil {
		return []networkingv1.NetworkPolicyIngressRule{}
	}
	return r
}

func egressRules(r ...networkingv1.NetworkPolicyEgressRule) []networkingv1.NetworkPolicyEgressRule {
	if r == nil {
		return []networkingv1.NetworkPolicyEgressRule{}
	}
	return r
}

type scenario struct {
	name string
	run  func(h *harness)
}

func podA() *metav1.LabelSelector { return sel("pod", "a") }

var scenarios = []scenario{
	{"01-default-deny-ingress", func(h *harness) {
		h.apply(policy("x", "deny-ingress", nil, ingressOnly, nil, nil))
		h.expect("deny ingress", tcp80)
		h.expect("deny ingress", udp80)
		h.expect("deny ingress", sctp80)
	}},
	{"02-default-deny-all", func(h *harness) {
		h.apply(policy("x", "deny-all", nil, both, nil, nil))
		h.expect("deny all", tcp80)
	}},
	{"03-pod-selector", func(h *harness) {
		h.apply(policy("x", "allow-b", podA(), nil, ingressRules(in(peers(podPeer(sel("pod", "b"))))), nil))
		h.expect("from x/b only", tcp80)
	}},
	{"04-allow-ingress-for-a-target", func(h *harness) {
		h.apply(policy("x", "deny-all", nil, ingressOnly, nil, nil))
		h.apply(policy("x", "allow-a", podA(), ingressOnly, ingressRules(in(peers(bothPeer(&metav1.LabelSelector{}, &metav1.LabelSelector{})))), nil))
		h.expect("only x/a open", tcp80)
	}},
	{"05-from-all-namespaces", func(h *harness) {
		h.apply(policy("x", "all-ns", podA(), nil, ingressRules(in(peers(nsPeer(&metav1.LabelSelector{})))), nil))
		h.expect("all namespaces", tcp80)
	}},
	{"06-namespace-selector", func(h *harness) {
		h.apply(policy("x", "from-y", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))))), nil))
		h.expect("from y", tcp80)
	}},
	{"07-pod-selector-expressions", func(h *harness) {
		h.apply(policy("x", "b-expr", podA(), nil, ingressRules(in(peers(podPeer(expr("pod", metav1.LabelSelectorOpIn, "b"))))), nil))
		h.expect("pod In [b]", tcp80)
	}},
	{"08-namespace-selector-expressions", func(h *harness) {
		h.apply(policy("x", "y-expr", podA(), nil, ingressRules(in(peers(nsPeer(expr("ns", metav1.LabelSelectorOpIn, "y"))))), nil))
		h.expect("ns In [y]", tcp80)
	}},
	{"09-pod-or-namespace", func(h *harness) {
		h.apply(policy("x", "or", podA(), nil, ingressRules(in(peers(
			nsPeer(expr("ns", metav1.LabelSelectorOpNotIn, "x")), podPeer(sel("pod", "b"))))), nil))
		h.expect("OR of peers", tcp80)
	}},
	{"10-pod-and-namespace", func(h *harness) {
		h.apply(policy("x", "and", podA(), nil, ingressRules(in(peers(
			bothPeer(expr("ns", metav1.LabelSelectorOpNotIn, "x"), sel("pod", "b"))))), nil))
		h.expect("AND in one peer", tcp80)
	}},
	{"11-multiple-pod-and-namespace", func(h *harness) {
		h.apply(policy("x", "multi", podA(), nil, ingressRules(in(peers(
			bothPeer(expr("ns", metav1.LabelSelectorOpNotIn, "x"), expr("pod", metav1.LabelSelectorOpIn, "b", "c"))))), nil))
		h.expect("{y,z}/{b,c}", tcp80)
	}},
	{"12-any-pod-selectors", func(h *harness) {
		h.apply(policy("x", "b-or-c", podA(), nil, ingressRules(in(peers(podPeer(sel("pod", "b")), podPeer(sel("pod", "c"))))), nil))
		h.expect("x/b or x/c", tcp80)
	}},
	{"13-pod-in-other-namespace", func(h *harness) {
		h.apply(policy("x", "ya", podA(), nil, ingressRules(in(peers(bothPeer(sel("ns", "y"), sel("pod", "a"))))), nil))
		h.expect("from y/a", tcp80)
		h.expect("from y/a", udp80)
		h.expect("from y/a", sctp80)
	}},
	{"14-ports", func(h *harness) {
		h.apply(policy("x", "y-81", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))), portNum(corev1.ProtocolTCP, 81))), nil))
		h.expect("port 81 from y", tcp81)
		h.expect("port 80 closed", tcp80)
		h.apply(policy("x", "y-81-udp", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))), portNum(corev1.ProtocolUDP, 81))), nil))
		h.expect("udp 81 from y", udp81)
	}},
	{"15-stacked-policies", func(h *harness) {
		h.apply(policy("x", "y-81", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))), portNum(corev1.ProtocolTCP, 81))), nil))
		h.expect("first policy", tcp80)
		h.apply(policy("x", "y-80", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))), portNum(corev1.ProtocolTCP, 80))), nil))
		h.expect("stacked", tcp80)
		h.expect("stacked", tcp81)
	}},
	{"16-allow-all", func(h *harness) {
		h.apply(policy("x", "allow-all", nil, nil, ingressRules(in(nil)), nil))
		h.expect("allow all", tcp80)
		h.expect("allow all", tcp81)
	}},
	{"17-ingress-named-port", func(h *harness) {
		h.apply(policy("x", "named-81", nil, nil, ingressRules(in(nil, portName("serve-81-tcp"))), nil))
		h.expect("named 81", tcp81)
		h.expect("named 81", tcp80)
	}},
	{"18-ingress-namespace-named-port", func(h *harness) {
		h.apply(policy("x", "y-named-80", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns", "y"))), portName("serve-80-tcp"))), nil))
		h.expect("named 80 from y", tcp80)
		h.expect("named 80 from y", tcp81)
		h.expect("named tcp port does not open udp", udp80)
	}},
	{"19-egress-named-port", func(h *harness) {
		h.apply(policy("x", "egress-named-80", nil, egressOnly, nil, egressRules(out(nil, portName("serve-80-tcp")))))
		h.expect("egress named 80", tcp80)
		h.expect("egress named 80", tcp81)
	}},
	{"20-updated-policy", func(h *harness) {
		h.apply(policy("x", "p", nil, nil, ingressRules(in(nil)), nil))
		h.expect("allow all", tcp81)
		h.apply(policy("x", "p", nil, nil, ingressRules(), nil))
		h.expect("updated to deny", tcp81)
	}},
	{"21-updated-namespace", func(h *harness) {
		h.apply(policy("x", "ns2", podA(), nil, ingressRules(in(peers(nsPeer(sel("ns2", "updated"))))), nil))
		h.expect("no namespace labelled", tcp80)
		h.labelNamespace("y", map[string]string{"ns": "y", "ns2": "updated"})
		h.expect("y labelled", tcp80)
		h.labelNamespace("y", map[string]string{"ns": "y"})
	}},
	{"22-updated-pod", func(h *harness) {
		h.apply(policy("x", "pod2", podA(), nil, ingressRules(in(peers(podPeer(sel("pod", "b", "pod2", "updated"))))), nil))
		h.expect("no pod labelled", tcp80)
		h.labelPod("x", "b", map[string]string{"pod": "b", "pod2": "updated"})
		h.expect("x/b labelled", tcp80)
		h.labelPod("x", "b", map[string]string{"pod": "b"})
	}},
	{"23-deny-other-namespaces", func(h *harness) {
		h.apply(policy("x", "same-ns", nil, nil, ingressRules(in(peers(podPeer(&metav1.LabelSelector{})))), nil))
		h.expect("same namespace only", tcp80)
	}},
	{"24-deny-to-updated-pod", func(h *harness) {
		h.apply(policy("x", "isolate", sel("target", "isolated"), nil, ingressRules(), nil))
		h.expect("nothing selected", tcp80)
		h.labelPod("x", "a", map[string]string{"pod": "a", "target": "isolated"})
		h.expect("x/a isolated", tcp80)
		h.labelPod("x", "a", map[string]string{"pod": "a"})
	}},
	{"25-deny-egress-pod", func(h *harness) {
		h.apply(policy("x", "a-no-egress", podA(), egressOnly, nil, egressRules()))
		h.expect("x/a cannot send", tcp80)
	}},
	{"26-deny-egress-namespace", func(h *harness) {
		h.apply(policy("x", "no-egress", nil, egressOnly, nil, egressRules()))
		h.expect("x cannot send", tcp80)
	}},
	{"27-ingress-and-egress", func(h *harness) {
		h.apply(policy("x", "both", podA(), both, ingressRules(in(peers(podPeer(sel("pod", "b"))))),
			egressRules(out(nil, portNum(corev1.ProtocolTCP, 80)))))
		h.expect("both directions", tcp80)
		h.expect("both directions", tcp81)
	}},
	{"28-client-egress-deny-wins", func(h *harness) {
		h.apply(policy("x", "to-ya", podA(), egressOnly, nil, egressRules(out(peers(bothPeer(sel("ns", "y"), sel("pod", "a")))))))
		h.apply(policy("y", "from-xa-a", podA(), nil, ingressRules(in(peers(bothPeer(sel("ns", "x"), sel("pod", "a"))))), nil))
		h.apply(policy("y", "from-xa-b", sel("pod", "b"), nil, ingressRules(in(peers(bothPeer(sel("ns", "x"), sel("pod", "a"))))), nil))
		h.expect("client and server policies", tcp80)
	}},
	{"29-egress-pod-and-namespace", func(h *harness) {
		h.apply(policy("x", "to-ya", podA(), egressOnly, nil, egressRules(out(peers(bothPeer(sel("ns", "y"), sel("pod", "a")))))))
		h.expect("x/a to y/a only", tcp80)
	}},
	{"30-any-port-of-protocol", func(h *harness) {
		h.apply(policy("x", "tcp-any", podA(), nil, ingressRules(in(nil, anyPort(corev1.ProtocolTCP))), nil))
		h.expect("tcp open", tcp80)
		h.expect("udp closed", udp80)
	}},
	{"31-ingress-allow-all-wins", func(h *harness) {
		h.apply(policy("x", "only-80", nil, nil, ingressRules(in(nil, portNum(corev1.ProtocolTCP, 80))), nil))
		h.expect("81 closed", tcp81)
		h.apply(policy("x", "allow-all", nil, nil, ingressRules(in(nil)), nil))
		h.expect("allow-all added", tcp81)
	}},
	{"32-egress-allow-all-wins", func(h *harness) {
		h.apply(policy("x", "only-80", nil, egressOnly, nil, egressRules(out(nil, portNum(corev1.ProtocolTCP, 80)))))
		h.expect("81 closed", tcp81)
		h.apply(policy("x", "allow-all", nil, egressOnly, nil, egressRules(out(nil))))
		h.expect("allow-all added", tcp81)
	}},
	{"33-delete-stops-enforcing", func(h *harness) {
		h.apply(policy("x", "deny-all", nil, both, nil, nil))
		h.expect("deny all", tcp80)
		h.deletePolicy("x", "deny-all")
		h.expect("deleted", tcp80)
	}},
	{"34-egress-to-cidr", func(h *harness) {
		yb := h.pod("y", "b").ip
		h.apply(policy("x", "to-yb", podA(), egressOnly, nil, egressRules(out(peers(ipPeer(netip.PrefixFrom(yb, 32).String()))))))
		h.expect("x/a to y/b only", tcp80)
	}},
	{"35-except", func(h *harness) {
		xb := h.pod("x", "b").ip
		h.apply(policy("x", "except-xb", podA(), egressOnly, nil, egressRules(out(peers(ipPeer(bigCIDR(xb), netip.PrefixFrom(xb, 32).String()))))))
		h.expect("x/a not to x/b", tcp80)
	}},
	{"36-overlapping-cidr-and-except", func(h *harness) {
		xb := h.pod("x", "b").ip
		h.apply(policy("x", "p", podA(), egressOnly, nil, egressRules(out(peers(ipPeer(bigCIDR(xb), netip.PrefixFrom(xb, 32).String()))))))
		h.expect("except", tcp80)
		h.apply(policy("x", "p", podA(), egressOnly, nil, egressRules(out(peers(ipPeer(netip.PrefixFrom(xb, 32).String()))))))
		h.expect("updated to the excepted address", tcp80)
	}},
	{"36b-except-is-per-rule", func(h *harness) {
		// One rule excepts x/b, another rule allows it: allowed (never merged across rules).
		xb := h.pod("x", "b").ip
		h.apply(policy("x", "p", podA(), egressOnly, nil, egressRules(
			out(peers(ipPeer(bigCIDR(xb), netip.PrefixFrom(xb, 32).String()))),
			out(peers(ipPeer(netip.PrefixFrom(xb, 24).Masked().String())), portNum(corev1.ProtocolTCP, 80)))))
		h.expect("second rule allows x/b on 80", tcp80)
		h.expect("but not on 81", tcp81)
	}},
	{"37-ingress-egress-independent", func(h *harness) {
		h.apply(policy("x", "egress-all", podA(), egressOnly, nil, egressRules(out(nil))))
		h.expect("egress allow-all", tcp80)
		h.apply(policy("x", "ingress-none", podA(), ingressOnly, ingressRules(), nil))
		h.expect("ingress denied", tcp80)
	}},
	{"38-sctp-is-not-tcp", func(h *harness) {
		h.apply(policy("x", "deny-all", nil, ingressOnly, nil, nil))
		h.apply(policy("x", "sctp-81", podA(), nil, ingressRules(in(nil, portNum(corev1.ProtocolSCTP, 81))), nil))
		h.expect("tcp 81 closed", tcp81)
		h.expect("sctp 81 open to x/a", sctp81)
	}},
	{"39-sctp-only-isolates", func(h *harness) {
		h.apply(policy("x", "sctp-80", podA(), nil, ingressRules(in(nil, portNum(corev1.ProtocolSCTP, 80))), nil))
		h.expect("tcp closed", tcp81)
		h.expect("sctp 80 open", sctp80)
		h.expect("sctp 81 closed", sctp81)
	}},
	{"40-udp-only-isolates", func(h *harness) {
		h.apply(policy("x", "udp-81", podA(), nil, ingressRules(in(nil, portNum(corev1.ProtocolUDP, 81))), nil))
		h.expect("tcp closed", tcp81)
		h.expect("udp 81 open", udp81)
	}},
	{"41-metadata-name-label", func(h *harness) {
		h.apply(policy("x", "from-y", podA(), nil, ingressRules(in(peers(nsPeer(sel("kubernetes.io/metadata.name", "y"))))), nil))
		h.expect("from y", tcp80)
	}},
	{"42-metadata-name-expressions-egress", func(h *harness) {
		h.apply(policy("x", "not-to-y", podA(), egressOnly, nil, egressRules(out(peers(
			nsPeer(expr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "y")))))))
		h.expect("not to y", tcp80)
	}},
	{"43-endport", func(h *harness) {
		p := portNum(corev1.ProtocolTCP, 79)
		end := int32(80)
		p.EndPort = &end
		h.apply(policy("x", "range", podA(), nil, ingressRules(in(nil, p)), nil))
		h.expect("79-80 open", tcp80)
		h.expect("81 closed", tcp81)
	}},
}

// bigCIDR is the /16 around ip.
func bigCIDR(ip netip.Addr) string { return netip.PrefixFrom(ip, 16).Masked().String() }

// TestNetworkPolicyTruthTable runs every scenario and, after each, checks
// that removing its policies opens everything again.
func TestNetworkPolicyTruthTable(t *testing.T) {
	h := newHarness(t, "standard", "m5.large")
	h.addNamespaces()
	for _, ns := range namespaces {
		for _, p := range podNames {
			h.addPod(ns, p, nil)
		}
	}
	h.expect("no policies", tcp80)
	parent := h.t
	for _, s := range scenarios {
		ok := t.Run(s.name, func(t *testing.T) {
			h.t = t
			defer func() { h.t = parent }()
			s.run(h)
		})
		// Reset whether or not the scenario passed.
		h.t = parent
		h.deleteAllPolicies()
		for _, p := range h.pods {
			if len(p.labels) != 1 || p.labels["pod"] != p.name {
				h.labelPod(p.ns, p.name, map[string]string{"pod": p.name})
			}
		}
		for _, ns := range namespaces {
			if len(h.m.nsLabels[ns]) != 2 {
				h.labelNamespace(ns, map[string]string{"ns": ns})
			}
		}
		h.expect("after "+s.name+" its policies are gone", tcp80)
		if !ok && testing.Short() {
			break
		}
	}
}
