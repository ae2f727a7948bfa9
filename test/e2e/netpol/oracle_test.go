package netpol_test

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The oracle decides reachability from the NetworkPolicy objects alone, by
// the rules of the Kubernetes API reference, sharing no code with the
// controller or the agent: what the test expects never comes from the code
// under test.

type mpod struct {
	ns, name string
	labels   map[string]string
	ip       netip.Addr
	ports    []corev1.ContainerPort
}

type model struct {
	nsLabels map[string]map[string]string
	pods     []*mpod
	policies map[string]*networkingv1.NetworkPolicy // by namespace/name
}

func (m *model) allowed(from, to *mpod, proto corev1.Protocol, port int32) bool {
	return m.direction(from, networkingv1.PolicyTypeEgress, to, proto, port) &&
		m.direction(to, networkingv1.PolicyTypeIngress, from, proto, port)
}

// direction: may subject send to (egress) or receive from (ingress) peer?
// Named ports are always those of the receiving pod.
func (m *model) direction(subject *mpod, dir networkingv1.PolicyType, peer *mpod, proto corev1.Protocol, port int32) bool {
	receiver := subject
	if dir == networkingv1.PolicyTypeEgress {
		receiver = peer
	}
	isolated := false
	for _, np := range m.policies {
		if np.Namespace != subject.ns || !selectorMatches(&np.Spec.PodSelector, subject.labels) || !hasType(np, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if m.peersMatch(r.From, np.Namespace, peer) && portsMatch(r.Ports, receiver, proto, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if m.peersMatch(r.To, np.Namespace, peer) && portsMatch(r.Ports, receiver, proto, port) {
					return true
				}
			}
		}
	}
	return !isolated
}

// hasType applies the API's defaulting of policyTypes.
func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || (t == networkingv1.PolicyTypeEgress && len(np.Spec.Egress) > 0)
	}
	for _, x := range np.Spec.PolicyTypes {
		if x == t {
			return true
		}
	}
	return false
}

func selectorMatches(s *metav1.LabelSelector, l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(l))
}

func (m *model) peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNS string, p *mpod) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		if peer.IPBlock != nil {
			cidr := netip.MustParsePrefix(peer.IPBlock.CIDR)
			if !cidr.Contains(p.ip) {
				continue
			}
			excluded := false
			for _, e := range peer.IPBlock.Except {
				if netip.MustParsePrefix(e).Contains(p.ip) {
					excluded = true
				}
			}
			if !excluded {
				return true
			}
			continue
		}
		nsOK := p.ns == policyNS
		if peer.NamespaceSelector != nil {
			nsOK = selectorMatches(peer.NamespaceSelector, m.nsLabels[p.ns])
		}
		podOK := peer.PodSelector == nil || selectorMatches(peer.PodSelector, p.labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, receiver *mpod, proto corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		want := corev1.ProtocolTCP
		if pp.Protocol != nil {
			want = *pp.Protocol
		}
		if want != proto {
			continue
		}
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.StrVal != "":
			for _, cp := range receiver.ports {
				cpProto := cp.Protocol
				if cpProto == "" {
					cpProto = corev1.ProtocolTCP
				}
				if cp.Name == pp.Port.StrVal && cpProto == proto && cp.ContainerPort == port {
					return true
				}
			}
		case pp.EndPort != nil:
			if port >= pp.Port.IntVal && port <= *pp.EndPort {
				return true
			}
		case pp.Port.IntVal == port:
			return true
		}
	}
	return false
}
