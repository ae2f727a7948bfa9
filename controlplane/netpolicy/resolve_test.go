package netpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

// The world of the upstream conformance tests: namespaces x, y, z with
// pods a, b, c, each serving TCP 80 and 81 and UDP 80 under names
// serve-<port>-<proto>. IPs are 10.<ns>.0.<pod> (x=1, y=2, z=3; a=1, b=2, c=3).
func world() (pods []*corev1.Pod, namespaces []*corev1.Namespace) {
	for i, ns := range []string{"x", "y", "z"} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}}
		if ns != "z" { // z lacks kubernetes.io/metadata.name: it is implied
			n.Labels[corev1.LabelMetadataName] = ns
		}
		namespaces = append(namespaces, n)
		for j, name := range []string{"a", "b", "c"} {
			pods = append(pods, pod(ns, name, fmt.Sprintf("10.%d.0.%d", i+1, j+1), map[string]string{"pod": name}, conformancePorts()...))
		}
	}
	// Never selected nor matched: host network, finished, no IP yet.
	h := pod("x", "host", "192.168.0.1", map[string]string{"pod": "a"})
	h.Spec.HostNetwork = true
	done := pod("x", "done", "10.1.0.9", map[string]string{"pod": "a"})
	done.Status.Phase = corev1.PodSucceeded
	noIP := pod("x", "new", "", map[string]string{"pod": "a"})
	noIP.Status.Phase = corev1.PodPending
	return append(pods, h, done, noIP), namespaces
}

func conformancePorts() []corev1.ContainerPort {
	return []corev1.ContainerPort{
		{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
		{Name: "serve-81-tcp", ContainerPort: 81},
		{Name: "serve-80-udp", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
	}
}

func pod(ns, name, ip string, lbls map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, HostIP: "192.168.0.1"},
	}
}

func service(ns, name, clusterIP string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}, Selector: sel, Ports: ports},
	}
}

func policy(ns string, sel map[string]string, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", UID: "uid-p"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Ingress: in, Egress: out,
		},
	}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both        = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func podSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func npPort(proto corev1.Protocol, port any) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto}
	switch v := port.(type) {
	case int:
		p.Port = ptr(intstr.FromInt32(int32(v)))
	case string:
		p.Port = ptr(intstr.FromString(v))
	}
	return p
}

func from(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyIngressRule {
	return []networkingv1.NetworkPolicyIngressRule{{From: peers}}
}

func port(proto corev1.Protocol, n int32) pe.Port { return pe.Port{Protocol: &proto, Port: &n} }

func tcp(n int32) pe.Port { return port(corev1.ProtocolTCP, n) }

func ep(cidr string, ports ...pe.Port) pe.EndpointInfo {
	return pe.EndpointInfo{CIDR: pe.NetworkAddress(cidr), Ports: ports}
}

// endpoints are the podSelectorEndpoints of pods of x named in names.
func endpoints(ns string, names ...string) []pe.PodEndpoint {
	var out []pe.PodEndpoint
	nsIdx := map[string]int{"x": 1, "y": 2, "z": 3}[ns]
	for _, n := range names {
		idx := map[string]int{"a": 1, "b": 2, "c": 3}[n]
		out = append(out, pe.PodEndpoint{HostIP: "192.168.0.1", PodIP: pe.NetworkAddress(fmt.Sprintf("10.%d.0.%d", nsIdx, idx)), Name: n, Namespace: ns})
	}
	return out
}

// ips are /32 entries (no ports) of "<ns><pod>" names such as "xb".
func ips(ports []pe.Port, pods ...string) []pe.EndpointInfo {
	var out []pe.EndpointInfo
	for _, p := range pods {
		out = append(out, ep(fmt.Sprintf("10.%d.0.%d/32", int(p[0]-'x')+1, int(p[1]-'a')+1), ports...))
	}
	return out
}

func TestResolve(t *testing.T) {
	pods, namespaces := world()
	tests := []struct {
		name     string
		np       *networkingv1.NetworkPolicy
		pods     []*corev1.Pod // added to the world
		services []*corev1.Service
		// want: the fields to compare (PodSelector and PolicyRef are checked
		// for every case).
		wantPods    []pe.PodEndpoint
		wantIso     []networkingv1.PolicyType
		wantIngress []pe.EndpointInfo
		wantEgress  []pe.EndpointInfo
	}{{
		name:     "default deny ingress",
		np:       policy("x", nil, ingressOnly, nil, nil),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: ingressOnly,
	}, {
		name:     "default deny all",
		np:       policy("x", nil, both, nil, nil),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: both,
	}, {
		name:     "policyTypes default: egress rules add Egress",
		np:       policy("x", map[string]string{"pod": "a"}, nil, nil, []networkingv1.NetworkPolicyEgressRule{{}}),
		wantPods: endpoints("x", "a"), wantIso: both,
		wantEgress: []pe.EndpointInfo{ep("0.0.0.0/0")},
	}, {
		name:     "ingress rules of a direction not isolated are ignored",
		np:       policy("x", map[string]string{"pod": "a"}, egressOnly, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel()}), nil),
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
	}, {
		name:     "allow all ingress",
		np:       policy("x", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{}}, nil),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: ingressOnly, wantIngress: []pe.EndpointInfo{ep("0.0.0.0/0")},
	}, {
		name:     "pod selector: same namespace only",
		np:       policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel("pod", "b")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "xb"),
	}, {
		name:     "namespace selector alone: every pod there",
		np:       policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: podSel("ns", "y")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "ya", "yb", "yc"),
	}, {
		name:     "empty namespace selector: every namespace",
		np:       policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: podSel()}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "xa", "xb", "xc", "ya", "yb", "yc", "za", "zb", "zc"),
	}, {
		name: "pod AND namespace selector",
		np: policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{
			NamespaceSelector: expr("ns", metav1.LabelSelectorOpNotIn, "x"), PodSelector: podSel("pod", "b")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "yb", "zb"),
	}, {
		name: "pod OR namespace selector",
		np: policy("x", map[string]string{"pod": "a"}, ingressOnly, from(
			networkingv1.NetworkPolicyPeer{NamespaceSelector: expr("ns", metav1.LabelSelectorOpNotIn, "x")},
			networkingv1.NetworkPolicyPeer{PodSelector: podSel("pod", "b")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "xb", "ya", "yb", "yc", "za", "zb", "zc"),
	}, {
		name:     "pod selector matchExpressions",
		np:       policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{PodSelector: expr("pod", metav1.LabelSelectorOpIn, "b", "c")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "xb", "xc"),
	}, {
		name: "kubernetes.io/metadata.name, set by the apiserver or not",
		np: policy("x", map[string]string{"pod": "a"}, ingressOnly, from(networkingv1.NetworkPolicyPeer{
			NamespaceSelector: expr(corev1.LabelMetadataName, metav1.LabelSelectorOpIn, "y", "z"), PodSelector: podSel("pod", "c")}), nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly, wantIngress: ips(nil, "yc", "zc"),
	}, {
		name: "ports: TCP 81 from namespace y; UDP and SCTP; protocol only; range",
		np: policy("x", map[string]string{"pod": "a"}, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel("ns", "y"), PodSelector: podSel("pod", "a")}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 81), {Port: ptr(intstr.FromInt32(82))}, npPort(corev1.ProtocolUDP, 53), npPort(corev1.ProtocolSCTP, 80)},
		}, {
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel("ns", "z"), PodSelector: podSel("pod", "a")}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.ProtocolUDP)}, {Port: ptr(intstr.FromInt32(1000)), EndPort: ptr(int32(2000))}},
		}}, nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly,
		wantIngress: []pe.EndpointInfo{
			ep("10.2.0.1/32", port(corev1.ProtocolSCTP, 80), tcp(81), tcp(82), port(corev1.ProtocolUDP, 53)),
			ep("10.3.0.1/32", pe.Port{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(1000)), EndPort: ptr(int32(2000))}, pe.Port{Protocol: ptr(corev1.ProtocolUDP)}),
		},
	}, {
		name: "one peer in two rules: ports merge; an all-ports rule absorbs them",
		np: policy("x", map[string]string{"pod": "a"}, ingressOnly, []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "b")}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 80)}},
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "b")}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 81)}},
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "c")}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 81)}},
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "c")}}},
		}, nil),
		wantPods: endpoints("x", "a"), wantIso: ingressOnly,
		wantIngress: []pe.EndpointInfo{ep("10.1.0.2/32", tcp(80), tcp(81)), ep("10.1.0.3/32")},
	}, {
		name: "ingress named port: resolved on the selected pods",
		np: policy("x", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "serve-81-tcp"), npPort(corev1.ProtocolUDP, "serve-80-udp"), npPort(corev1.ProtocolTCP, "missing")},
		}}, nil),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: ingressOnly,
		wantIngress: []pe.EndpointInfo{ep("0.0.0.0/0", tcp(81), port(corev1.ProtocolUDP, 80))},
	}, {
		name: "ingress named port nobody defines: the rule allows nothing",
		np: policy("x", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel()}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "missing"), npPort(corev1.ProtocolUDP, "serve-81-tcp")},
		}}, nil),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: ingressOnly,
	}, {
		name: "ingress named port, selected pods disagree: every number (documented over-allow); ipBlock peer too",
		np: policy("x", map[string]string{"app": "web"}, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "b")}, {IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12"}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "http")},
		}}, nil),
		pods: []*corev1.Pod{
			pod("x", "w1", "10.1.1.1", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			pod("x", "w2", "10.1.1.2", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 9090}),
		},
		wantPods: []pe.PodEndpoint{
			{HostIP: "192.168.0.1", PodIP: "10.1.1.1", Name: "w1", Namespace: "x"},
			{HostIP: "192.168.0.1", PodIP: "10.1.1.2", Name: "w2", Namespace: "x"},
		},
		wantIso:     ingressOnly,
		wantIngress: []pe.EndpointInfo{ep("10.1.0.2/32", tcp(8080), tcp(9090)), ep("172.16.0.0/12", tcp(8080), tcp(9090))},
	}, {
		name: "egress named port: resolved on each peer; peers without it get nothing",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel()}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "http")},
		}}),
		pods: []*corev1.Pod{
			pod("y", "w1", "10.2.1.1", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			pod("z", "w2", "10.3.1.1", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 9090},
				corev1.ContainerPort{Name: "http", ContainerPort: 53, Protocol: corev1.ProtocolUDP}),
		},
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
		wantEgress: []pe.EndpointInfo{ep("10.2.1.1/32", tcp(8080)), ep("10.3.1.1/32", tcp(9090))},
	}, {
		name: "egress named port without peers: every pod defining it, no 0.0.0.0/0",
		np: policy("x", nil, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolUDP, "serve-80-udp"), npPort(corev1.ProtocolTCP, 53)},
		}}),
		wantPods: endpoints("x", "a", "b", "c"), wantIso: egressOnly,
		wantEgress: append([]pe.EndpointInfo{ep("0.0.0.0/0", tcp(53))},
			ips([]pe.Port{port(corev1.ProtocolUDP, 80)}, "xa", "xb", "xc", "ya", "yb", "yc", "za", "zb", "zc")...),
	}, {
		name: "egress ipBlock with named port: the pods inside the block, minus exceptions",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.2.0.0/16", Except: []string{"10.2.0.2/32"}}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "serve-81-tcp")},
		}}),
		wantPods: endpoints("x", "a"), wantIso: egressOnly, wantEgress: ips([]pe.Port{tcp(81)}, "ya", "yc"),
	}, {
		name: "ipBlock except stays in its own rule's entry",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.0.0.0/24"}}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 80)},
		}, {
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 443)},
		}, {
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.0.0.0/24", "10.1.0.0/16"}}}},
		}}),
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
		wantEgress: []pe.EndpointInfo{
			ep("10.0.0.0/8", tcp(443)),
			{CIDR: "10.0.0.0/8", Except: []pe.NetworkAddress{"10.0.0.0/24", "10.1.0.0/16"}},
		},
	}, {
		name: "hostNetwork, finished and IP-less pods are neither selected nor peers",
		np: policy("x", map[string]string{"pod": "a"}, both, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel("pod", "a")}),
			[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "a")}}}}),
		wantPods: endpoints("x", "a"), wantIso: both, wantIngress: ips(nil, "xa"), wantEgress: ips(nil, "xa"),
	}, {
		name: "services: the ClusterIPs in front of allowed egress peers, on the ports that lead to an allowed pod port",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel("ns", "y"), PodSelector: podSel("pod", "b")}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 80), npPort(corev1.ProtocolTCP, "serve-81-tcp")},
		}, {
			To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel("ns", "z"), PodSelector: podSel("pod", "c")}},
		}}),
		services: []*corev1.Service{
			service("y", "s-y-b", "10.100.0.10", map[string]string{"pod": "b"},
				corev1.ServicePort{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(80)},               // → 80: allowed
				corev1.ServicePort{Name: "named", Port: 9081, TargetPort: intstr.FromString("serve-81-tcp")}, // → 81: allowed
				corev1.ServicePort{Name: "same", Port: 81, Protocol: corev1.ProtocolTCP},                     // targetPort = port 81: allowed
				corev1.ServicePort{Name: "other", Port: 82, TargetPort: intstr.FromInt32(82)},                // not allowed
				corev1.ServicePort{Name: "udp", Port: 80, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(80)}),
			service("y", "s-y-a", "10.100.0.11", map[string]string{"pod": "a"}, corev1.ServicePort{Port: 80}), // selects no peer
			service("x", "s-x-b", "10.100.0.12", map[string]string{"pod": "b"}, corev1.ServicePort{Port: 80}), // other namespace
			{ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "headless"}, Spec: corev1.ServiceSpec{ClusterIP: "None", Selector: map[string]string{"pod": "b"}, Ports: []corev1.ServicePort{{Port: 80}}}},
			service("y", "no-selector", "10.100.0.13", nil, corev1.ServicePort{Port: 80}),
			service("z", "s-z-c", "10.100.0.14", map[string]string{"pod": "c"},
				corev1.ServicePort{Name: "a", Port: 80}, corev1.ServicePort{Name: "b", Port: 53, Protocol: corev1.ProtocolUDP}),
		},
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
		wantEgress: []pe.EndpointInfo{
			ep("10.2.0.2/32", tcp(80), tcp(81)),
			ep("10.3.0.3/32"),
			ep("10.100.0.10/32", tcp(81), tcp(8080), tcp(9081)),
			ep("10.100.0.14/32", tcp(80), port(corev1.ProtocolUDP, 53)),
		},
	}, {
		name: "services behind an ipBlock's pods",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.2.0.2/32"}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 80)},
		}}),
		services: []*corev1.Service{service("y", "s-y-b", "10.100.0.10", map[string]string{"pod": "b"}, corev1.ServicePort{Port: 80}, corev1.ServicePort{Port: 81})},
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
		wantEgress: []pe.EndpointInfo{ep("10.2.0.2/32", tcp(80)), ep("10.100.0.10/32", tcp(80))},
	}, {
		name: "egress CIDR entries except the ClusterIPs they would allow wrongly: Services are decided by their backends",
		np: policy("x", map[string]string{"pod": "a"}, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.2.0.2/32"}}}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 80)},
		}, {
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 443)},
		}}),
		services: []*corev1.Service{
			service("y", "s-y-b", "10.100.0.10", map[string]string{"pod": "b"}, corev1.ServicePort{Port: 80}), // its backend is excepted
			service("y", "s-y-a", "10.100.0.11", map[string]string{"pod": "a"}, corev1.ServicePort{Name: "a", Port: 80},
				corev1.ServicePort{Name: "b", Port: 443, TargetPort: intstr.FromInt32(8443)}), // 443 leads to a port rule 2 does not allow
			service("default", "kubernetes", "10.100.0.1", nil, corev1.ServicePort{Port: 443}), // no selector: left to the CIDR
		},
		wantPods: endpoints("x", "a"), wantIso: egressOnly,
		wantEgress: []pe.EndpointInfo{
			{CIDR: "0.0.0.0/0", Except: []pe.NetworkAddress{"10.100.0.11/32"}, Ports: []pe.Port{tcp(443)}},
			{CIDR: "10.0.0.0/8", Except: []pe.NetworkAddress{"10.2.0.2/32", "10.100.0.10/32"}, Ports: []pe.Port{tcp(80)}},
			ep("10.100.0.11/32", tcp(80)),
		},
	}, {
		name: "a policy referencing nothing",
		np: policy("x", map[string]string{"pod": "nobody"}, both, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: podSel("ns", "nowhere")}),
			[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("pod", "nobody")}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "nothing")}}}),
		wantIso: both,
	}, {
		name:     "IPv6 pods: /128 entries and ::/0",
		np:       policy("v6", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{}, {From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel()}}}}, nil),
		pods:     []*corev1.Pod{pod("v6", "a", "fd00::1", nil)},
		wantPods: []pe.PodEndpoint{{HostIP: "192.168.0.1", PodIP: "fd00::1", Name: "a", Namespace: "v6"}},
		wantIso:  ingressOnly, wantIngress: []pe.EndpointInfo{ep("0.0.0.0/0"), ep("::/0"), ep("fd00::1/128")},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(append(slices.Clone(pods), tc.pods...), namespaces, tc.services)
			got, err := Resolve(tc.np, c)
			if err != nil {
				t.Fatal(err)
			}
			want := pe.PolicyEndpointSpec{
				PodSelector: &tc.np.Spec.PodSelector, PolicyRef: pe.PolicyReference{Name: "p", Namespace: tc.np.Namespace},
				PodIsolation: tc.wantIso, PodSelectorEndpoints: tc.wantPods, Ingress: tc.wantIngress, Egress: tc.wantEgress,
			}
			if !apiequality.Semantic.DeepEqual(got, want) {
				t.Errorf("got\n%s\nwant\n%s", js(got), js(want))
			}
		})
	}
}

func js(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

func TestResolveInvalidData(t *testing.T) {
	pods, namespaces := world()
	np := policy("x", map[string]string{"pod": "a"}, both, from(
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "not-a-cidr"}},
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"bad"}}},
		networkingv1.NetworkPolicyPeer{PodSelector: expr("pod", "Bogus", "b")},
		networkingv1.NetworkPolicyPeer{PodSelector: podSel("pod", "b")},
	), []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: expr("ns", metav1.LabelSelectorOpIn)}}}})
	chunks, err := Translate(np, NewCluster(pods, namespaces, nil), 10)
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("err = %v, want ErrInvalidPolicy", err)
	}
	// The valid peer is still there; the broken ones match nothing.
	want := []pe.EndpointInfo{ep("10.1.0.2/32")}
	if len(chunks) != 1 || !apiequality.Semantic.DeepEqual(chunks[0].Ingress, want) || len(chunks[0].Egress) != 0 {
		t.Fatalf("chunks = %s", js(chunks))
	}
	// A pod selector of the policy itself that does not parse selects nothing.
	np.Spec.PodSelector = *expr("pod", "Bogus")
	chunks, err = Translate(np, NewCluster(pods, namespaces, nil), 10)
	if !errors.Is(err, ErrInvalidPolicy) || len(chunks) != 1 || len(chunks[0].PodSelectorEndpoints) != 0 {
		t.Fatalf("bad pod selector: %v %s", err, js(chunks))
	}
}

func TestChunking(t *testing.T) {
	var pods []*corev1.Pod
	for i := range 450 {
		pods = append(pods, pod("big", fmt.Sprintf("p%03d", i), fmt.Sprintf("10.9.%d.%d", i/250, i%250+1), map[string]string{"app": "big"}))
	}
	np := policy("big", map[string]string{"app": "big"}, both, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel("app", "nobody")}),
		[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}}})
	np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.51.100.0/24"}}}})
	ns := []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "big"}}}
	for _, tc := range []struct {
		size  int
		sizes []int // items per chunk
	}{
		{200, []int{200, 200, 52}}, // 450 pods + 1 ingress + 1 egress
		{226, []int{226, 226}},
		{452, []int{452}},
		{451, []int{451, 1}},
		{0, []int{200, 200, 52}}, // default
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			chunks, err := Translate(np, NewCluster(pods, ns, nil), tc.size)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			var all pe.PolicyEndpointSpec
			for _, c := range chunks {
				got = append(got, len(c.PodSelectorEndpoints)+len(c.Ingress)+len(c.Egress))
				if c.PodSelector == nil || c.PodSelector.MatchLabels["app"] != "big" || c.PolicyRef != (pe.PolicyReference{Name: "p", Namespace: "big"}) ||
					!slices.Equal(c.PodIsolation, both) {
					t.Errorf("chunk header incomplete: %+v %+v %v", c.PodSelector, c.PolicyRef, c.PodIsolation)
				}
				all.PodSelectorEndpoints = append(all.PodSelectorEndpoints, c.PodSelectorEndpoints...)
				all.Ingress = append(all.Ingress, c.Ingress...)
				all.Egress = append(all.Egress, c.Egress...)
			}
			if !slices.Equal(got, tc.sizes) {
				t.Errorf("chunk sizes %v, want %v", got, tc.sizes)
			}
			if len(all.PodSelectorEndpoints) != 450 || len(all.Ingress) != 1 || len(all.Egress) != 1 {
				t.Errorf("items lost: %d pods, %d ingress, %d egress", len(all.PodSelectorEndpoints), len(all.Ingress), len(all.Egress))
			}
		})
	}
	// A policy that selects nothing and has no rules is still one chunk.
	empty := Chunk(pe.PolicyEndpointSpec{PolicyRef: pe.PolicyReference{Name: "p", Namespace: "x"}}, 200)
	if len(empty) != 1 || empty[0].PolicyRef.Name != "p" {
		t.Errorf("empty spec: %+v", empty)
	}
}

func TestDeterministic(t *testing.T) {
	pods, namespaces := world()
	svcs := []*corev1.Service{
		service("y", "s1", "10.100.0.1", map[string]string{"pod": "a"}, corev1.ServicePort{Port: 80}),
		service("y", "s2", "10.100.0.2", map[string]string{"pod": "b"}, corev1.ServicePort{Port: 80}, corev1.ServicePort{Port: 81}),
		service("z", "s3", "10.100.0.3", map[string]string{"pod": "c"}, corev1.ServicePort{Port: 80}),
	}
	np := policy("x", nil, both, []networkingv1.NetworkPolicyIngressRule{
		{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel()}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, 81), npPort(corev1.ProtocolTCP, 80)}},
		{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.3.0.0/16", "10.2.0.0/16"}}}}},
	}, []networkingv1.NetworkPolicyEgressRule{
		{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: podSel()}}, Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, "serve-80-tcp"), npPort(corev1.ProtocolUDP, 53)}},
	})
	want, err := Translate(np, NewCluster(pods, namespaces, svcs), 7)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		p, n, s := slices.Clone(pods), slices.Clone(namespaces), slices.Clone(svcs)
		rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		rng.Shuffle(len(n), func(i, j int) { n[i], n[j] = n[j], n[i] })
		rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		got, err := Translate(np, NewCluster(p, n, s), 7)
		if err != nil {
			t.Fatal(err)
		}
		if js(got) != js(want) {
			t.Fatalf("output depends on input order:\n%s\nvs\n%s", js(got), js(want))
		}
	}
}
