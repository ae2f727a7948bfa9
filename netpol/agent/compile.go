package agent

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/netpol/datapath"
)

// policySet is one NetworkPolicy as its complete set of PolicyEndpoint
// chunks says it is: the union of the chunks' endpoints and rules.
type policySet struct {
	ref types.NamespacedName
	// generation of the chunks in force; "" for objects without berth's
	// annotations (the AWS controller's), which are taken as one set.
	generation string
	// selector is nil when the chunks carry no podSelector; then only the
	// listed endpoints are selected.
	selector         labels.Selector
	endpoints        map[types.NamespacedName]bool
	ingressIsolation bool
	egressIsolation  bool
	ingress, egress  []pe.EndpointInfo
	// chunks are the object names that formed the set, for events.
	chunks []string
}

// completeSet picks, from all the PolicyEndpoints of one policy, the newest
// generation of which every chunk is present, and merges it. ok is false
// when no generation is complete: the caller keeps what it had.
func completeSet(ref types.NamespacedName, objs []*pe.PolicyEndpoint) (*policySet, bool, error) {
	byGen := map[string][]*pe.PolicyEndpoint{}
	for _, o := range objs {
		g := o.Annotations[pe.AnnotationGeneration]
		byGen[g] = append(byGen[g], o)
	}
	var best string
	var bestN int64 = -1
	for g, chunks := range byGen {
		if g == "" {
			continue
		}
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil {
			continue
		}
		want, err := strconv.Atoi(chunks[0].Annotations[pe.AnnotationChunkCount])
		if err != nil || want != len(chunks) {
			continue
		}
		if n > bestN {
			best, bestN = g, n
		}
	}
	if bestN < 0 {
		// Objects with no generation are another controller's; it has no
		// chunk protocol, so they are taken as they are.
		if plain := byGen[""]; len(plain) > 0 {
			s, err := mergeChunks(ref, "", plain)
			return s, err == nil, err
		}
		return nil, false, nil
	}
	s, err := mergeChunks(ref, best, byGen[best])
	return s, err == nil, err
}

func mergeChunks(ref types.NamespacedName, gen string, chunks []*pe.PolicyEndpoint) (*policySet, error) {
	s := &policySet{ref: ref, generation: gen, endpoints: map[types.NamespacedName]bool{}}
	slices.SortFunc(chunks, func(a, b *pe.PolicyEndpoint) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range chunks {
		s.chunks = append(s.chunks, c.Name)
		if c.Spec.PodSelector != nil && s.selector == nil {
			sel, err := metav1.LabelSelectorAsSelector(c.Spec.PodSelector)
			if err != nil {
				return nil, fmt.Errorf("policy endpoint %s/%s: podSelector: %w", c.Namespace, c.Name, err)
			}
			s.selector = sel
		}
		for _, t := range c.Spec.PodIsolation {
			switch t {
			case networkingv1.PolicyTypeIngress:
				s.ingressIsolation = true
			case networkingv1.PolicyTypeEgress:
				s.egressIsolation = true
			}
		}
		for _, e := range c.Spec.PodSelectorEndpoints {
			s.endpoints[types.NamespacedName{Namespace: e.Namespace, Name: e.Name}] = true
		}
		s.ingress = append(s.ingress, c.Spec.Ingress...)
		s.egress = append(s.egress, c.Spec.Egress...)
	}
	return s, nil
}

// selects tells whether the set applies to a pod. With the pod's labels at
// hand the selector decides, which is never behind the controller; without
// them, the controller's list does.
func (s *policySet) selects(pod types.NamespacedName, podLabels map[string]string) bool {
	// A NetworkPolicy selects pods of its own namespace only, whatever a
	// PolicyEndpoint lists.
	if pod.Namespace != s.ref.Namespace {
		return false
	}
	if podLabels != nil && s.selector != nil {
		return s.selector.Matches(labels.Set(podLabels))
	}
	return s.endpoints[pod]
}

// badEntry is a rule the datapath cannot enforce; it is skipped (fail
// closed: it allowed something, so skipping it allows less).
type badEntry struct {
	set    *policySet
	dir    string
	reason string
}

// compile turns the sets selecting a pod into its datapath policy. Each
// entry stays a rule of its own when it has exceptions; a policy's entries
// without exceptions and with the same ports are one rule whose CIDRs are
// a set, so a thousand peer pods cost one lookup.
//
// Rule IDs name the policy, direction and entry (or ports), and a rule
// with a given ID has the same content for every pod the policy selects:
// rules are Shared, so the pods a policy selects share its peer sets in
// the datapath, and a peer pod appearing is one map write for all of them.
// That is why rules of different policies are never merged here (the
// datapath merges the rules of one pod by ports, and shares the result
// among pods with the same policies). An ID that collides with another
// rule's (a 32-bit hash) is not Shared.
func compile(sets []*policySet, attr *attribution) (datapath.Policy, []badEntry) {
	var p datapath.Policy
	var bad []badEntry
	for _, s := range sets {
		if s.ingressIsolation {
			p.Ingress.Isolated = true
		}
		if s.egressIsolation {
			p.Egress.Isolated = true
		}
	}
	dir := func(d *datapath.Direction, name string, pick func(*policySet) (bool, []pe.EndpointInfo)) {
		if !d.Isolated {
			return
		}
		for _, s := range sets {
			iso, entries := pick(s)
			if !iso {
				continue
			}
			merged := map[string]*datapath.Rule{}
			var order []string
			for i, e := range entries {
				r, err := parseEntry(e)
				if err != nil {
					bad = append(bad, badEntry{set: s, dir: name, reason: fmt.Sprintf("%s rule %d: %v", name, i, err)})
					continue
				}
				if len(r.Except) > 0 {
					r.ID, r.Shared = attr.id(s.ref, name, fmt.Sprintf("%d", i))
					d.Rules = append(d.Rules, *r)
					continue
				}
				key := portsKey(r)
				m, ok := merged[key]
				if !ok {
					r.ID, r.Shared = attr.id(s.ref, name, "ports "+key)
					merged[key] = r
					order = append(order, key)
					continue
				}
				m.CIDRs = append(m.CIDRs, r.CIDRs...)
			}
			for _, k := range order {
				r := merged[k]
				slices.SortFunc(r.CIDRs, comparePrefix)
				r.CIDRs = slices.Compact(r.CIDRs)
				d.Rules = append(d.Rules, *r)
			}
		}
	}
	dir(&p.Ingress, "ingress", func(s *policySet) (bool, []pe.EndpointInfo) { return s.ingressIsolation, s.ingress })
	dir(&p.Egress, "egress", func(s *policySet) (bool, []pe.EndpointInfo) { return s.egressIsolation, s.egress })
	return p, bad
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// parseEntry checks one entry. "Every address" stays the CIDR it is
// (0.0.0.0/0 or ::/0), not AnyPeer: the controller writes one per family,
// and 0.0.0.0/0 alone must not open IPv6.
func parseEntry(e pe.EndpointInfo) (*datapath.Rule, error) {
	cidr, err := parseAddr(string(e.CIDR))
	if err != nil {
		return nil, err
	}
	r := &datapath.Rule{CIDRs: []netip.Prefix{cidr}}
	for _, x := range e.Except {
		p, err := parseAddr(string(x))
		if err != nil {
			return nil, fmt.Errorf("except: %w", err)
		}
		if p.Addr().Is4() != cidr.Addr().Is4() || !cidr.Contains(p.Addr()) || p.Bits() < cidr.Bits() {
			return nil, fmt.Errorf("except %s is not inside %s", x, e.CIDR)
		}
		r.Except = append(r.Except, p)
	}
	for _, pt := range e.Ports {
		pr, err := parsePort(pt)
		if err != nil {
			return nil, err
		}
		r.Ports = append(r.Ports, pr)
	}
	slices.SortFunc(r.Ports, func(a, b datapath.PortRange) int {
		if a.Protocol != b.Protocol {
			return int(a.Protocol) - int(b.Protocol)
		}
		if a.Start != b.Start {
			return int(a.Start) - int(b.Start)
		}
		return int(a.End) - int(b.End)
	})
	r.Ports = slices.Compact(r.Ports)
	return r, nil
}

func parseAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("cidr %q: %w", s, err)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("cidr %q has host bits set", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", s, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePort(p pe.Port) (datapath.PortRange, error) {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	var r datapath.PortRange
	switch proto {
	case corev1.ProtocolTCP:
		r.Protocol = datapath.ProtoTCP
	case corev1.ProtocolUDP:
		r.Protocol = datapath.ProtoUDP
	case corev1.ProtocolSCTP:
		r.Protocol = datapath.ProtoSCTP
	default:
		return r, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", proto)
	}
	if p.Port == nil {
		if p.EndPort != nil {
			return r, fmt.Errorf("endPort %d without a port", *p.EndPort)
		}
		return r, nil
	}
	if *p.Port < 1 || *p.Port > 65535 {
		return r, fmt.Errorf("port %d: want 1-65535", *p.Port)
	}
	r.Start, r.End = uint16(*p.Port), uint16(*p.Port)
	if p.EndPort != nil {
		if *p.EndPort < *p.Port || *p.EndPort > 65535 {
			return r, fmt.Errorf("port range %d-%d: want port <= endPort <= 65535", *p.Port, *p.EndPort)
		}
		r.End = uint16(*p.EndPort)
	}
	return r, nil
}

func portsKey(r *datapath.Rule) string {
	var b strings.Builder
	for _, p := range r.Ports {
		fmt.Fprintf(&b, "%d:%d-%d,", p.Protocol, p.Start, p.End)
	}
	return b.String()
}

// attribution maps rule IDs in verdict logs back to their policy.
type attribution struct {
	names map[uint32]string
}

// id is the rule ID of a policy's rule; unique is false when another rule
// had the ID first (a hash collision): such a rule must not be Shared,
// since the datapath would take the two for one.
func (a *attribution) id(ref types.NamespacedName, dir, what string) (id uint32, unique bool) {
	h := fnv.New32a()
	name := ref.String() + " " + dir + " " + what
	h.Write([]byte(name))
	id = h.Sum32()
	if id == 0 {
		id = 1 // 0 means "no rule" in a verdict
	}
	if a.names == nil {
		a.names = map[uint32]string{}
	}
	if first, ok := a.names[id]; ok {
		return id, first == name
	}
	a.names[id] = name
	return id, true
}

func (a *attribution) name(id uint32) string {
	if id == 0 {
		return ""
	}
	return a.names[id]
}
