package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

// ErrInvalidPolicy marks a policy holding data the apiserver should have
// rejected (a selector or CIDR that does not parse). The offending peer
// matches nothing; the rest of the policy is still resolved.
var ErrInvalidPolicy = errors.New("invalid network policy")

// Cluster is the state a policy is resolved against. Listers satisfy it in
// the controller; NewCluster serves fixed lists.
type Cluster interface {
	// Pods lists the pods of a namespace, or of all namespaces for "".
	Pods(namespace string) ([]*corev1.Pod, error)
	Namespaces() ([]*corev1.Namespace, error)
	// Services lists the services of a namespace, or of all for "".
	Services(namespace string) ([]*corev1.Service, error)
}

// NewCluster is a Cluster of fixed lists.
func NewCluster(pods []*corev1.Pod, namespaces []*corev1.Namespace, services []*corev1.Service) Cluster {
	return &staticCluster{pods: pods, namespaces: namespaces, services: services}
}

type staticCluster struct {
	pods       []*corev1.Pod
	namespaces []*corev1.Namespace
	services   []*corev1.Service
}

var _ Cluster = (*staticCluster)(nil)

func (s *staticCluster) Pods(namespace string) ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	for _, p := range s.pods {
		if namespace == "" || p.Namespace == namespace {
			out = append(out, p)
		}
	}
	return out, nil
}

func (s *staticCluster) Namespaces() ([]*corev1.Namespace, error) { return s.namespaces, nil }

func (s *staticCluster) Services(namespace string) ([]*corev1.Service, error) {
	var out []*corev1.Service
	for _, svc := range s.services {
		if namespace == "" || svc.Namespace == namespace {
			out = append(out, svc)
		}
	}
	return out, nil
}

// Translate resolves np against c and splits the result into chunks of at
// most chunkSize items (pod endpoints, ingress and egress entries). It
// always returns at least one chunk; every chunk carries the policy's
// podSelector, policyRef and podIsolation. A wrapped ErrInvalidPolicy comes
// with usable chunks; any other error comes with none.
func Translate(np *networkingv1.NetworkPolicy, c Cluster, chunkSize int) ([]pe.PolicyEndpointSpec, error) {
	spec, err := Resolve(np, c)
	if err != nil && !errors.Is(err, ErrInvalidPolicy) {
		return nil, err
	}
	return Chunk(spec, chunkSize), err
}

// PolicyTypes are the directions np isolates, with the API's defaulting:
// without policyTypes, Ingress, and Egress too when egress rules exist.
func PolicyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		var out []networkingv1.PolicyType
		for _, t := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
			if slices.Contains(np.Spec.PolicyTypes, t) {
				out = append(out, t)
			}
		}
		return out
	}
	out := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		out = append(out, networkingv1.PolicyTypeEgress)
	}
	return out
}

// Eligible reports whether a pod takes part in network policy: scheduled
// or running with an IP, and not on the host network (such pods are
// neither selected nor matched as peers, as upstream).
func Eligible(p *corev1.Pod) bool {
	if p.Spec.HostNetwork || p.Status.PodIP == "" {
		return false
	}
	return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodPending
}

// PodIPs are a pod's addresses (status.podIPs, else status.podIP), parsed
// and sorted; unparsable ones are left out.
func PodIPs(p *corev1.Pod) []netip.Addr {
	var raw []string
	for _, ip := range p.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	if len(raw) == 0 && p.Status.PodIP != "" {
		raw = []string{p.Status.PodIP}
	}
	var out []netip.Addr
	for _, s := range raw {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// NamespaceLabels are the labels a namespaceSelector is matched against:
// the namespace's own, plus kubernetes.io/metadata.name (which the
// apiserver sets; added here for objects that lack it).
func NamespaceLabels(ns *corev1.Namespace) labels.Set {
	set := make(labels.Set, len(ns.Labels)+1)
	for k, v := range ns.Labels {
		set[k] = v
	}
	set[corev1.LabelMetadataName] = ns.Name
	return set
}

// ContainerPort resolves a named port on a pod: the number of the first
// container port (regular or restartable init containers) with that name
// and protocol (empty protocol is TCP).
func ContainerPort(p *corev1.Pod, name string, proto corev1.Protocol) (int32, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	match := func(cs []corev1.Container, sidecarsOnly bool) (int32, bool) {
		for _, c := range cs {
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, cp := range c.Ports {
				cpProto := cp.Protocol
				if cpProto == "" {
					cpProto = corev1.ProtocolTCP
				}
				if cp.Name == name && cpProto == proto {
					return cp.ContainerPort, true
				}
			}
		}
		return 0, false
	}
	if n, ok := match(p.Spec.Containers, false); ok {
		return n, true
	}
	return match(p.Spec.InitContainers, true)
}

// Resolve computes the whole (unchunked) PolicyEndpoint spec of np. Entries
// are merged per address (CIDR and exceptions), and everything is sorted,
// so equal inputs give equal output.
func Resolve(np *networkingv1.NetworkPolicy, c Cluster) (pe.PolicyEndpointSpec, error) {
	r := &resolver{c: c, np: np, services: map[string][]*corev1.Service{}}
	spec := pe.PolicyEndpointSpec{
		PodSelector:  np.Spec.PodSelector.DeepCopy(),
		PolicyRef:    pe.PolicyReference{Name: np.Name, Namespace: np.Namespace},
		PodIsolation: PolicyTypes(np),
	}
	selected, err := r.podsIn([]string{np.Namespace}, &np.Spec.PodSelector)
	if err != nil {
		return pe.PolicyEndpointSpec{}, err
	}
	for _, p := range selected {
		for _, ip := range PodIPs(p) {
			spec.PodSelectorEndpoints = append(spec.PodSelectorEndpoints, pe.PodEndpoint{
				HostIP: pe.NetworkAddress(p.Status.HostIP), PodIP: pe.NetworkAddress(ip.String()), Name: p.Name, Namespace: p.Namespace,
			})
			r.v6 = r.v6 || ip.Is6()
		}
	}
	if slices.Contains(spec.PodIsolation, networkingv1.PolicyTypeIngress) {
		in := newEntrySet()
		for i := range np.Spec.Ingress {
			if err := r.ingressRule(in, &np.Spec.Ingress[i], selected); err != nil {
				return pe.PolicyEndpointSpec{}, err
			}
		}
		spec.Ingress = in.list()
	}
	if slices.Contains(spec.PodIsolation, networkingv1.PolicyTypeEgress) {
		out := newEntrySet()
		for i := range np.Spec.Egress {
			if err := r.egressRule(out, &np.Spec.Egress[i]); err != nil {
				return pe.PolicyEndpointSpec{}, err
			}
		}
		spec.Egress = out.list()
	}
	if len(r.problems) > 0 {
		return spec, fmt.Errorf("%w %s/%s: %s", ErrInvalidPolicy, np.Namespace, np.Name, strings.Join(r.problems, "; "))
	}
	return spec, nil
}

// resolver holds the lists one Resolve call reads more than once.
type resolver struct {
	c  Cluster
	np *networkingv1.NetworkPolicy
	// v6 is set when a selected pod has an IPv6 address: "anywhere" then
	// means ::/0 as well as 0.0.0.0/0.
	v6         bool
	allPods    []*corev1.Pod // eligible pods of every namespace, nil until needed
	namespaces []*corev1.Namespace
	services   map[string][]*corev1.Service
	// allServices are the selector-based Services of the cluster, nil until needed.
	allServices []*corev1.Service
	problems    []string
}

func (r *resolver) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// podsIn lists the eligible pods of namespaces that sel matches (nil sel
// matches every pod), sorted by namespace and name.
func (r *resolver) podsIn(namespaces []string, sel *metav1.LabelSelector) ([]*corev1.Pod, error) {
	s, err := selector(sel)
	if err != nil {
		r.problem("pod selector: %v", err)
		return nil, nil
	}
	var out []*corev1.Pod
	for _, ns := range namespaces {
		pods, err := r.c.Pods(ns)
		if err != nil {
			return nil, fmt.Errorf("list pods in %s: %w", ns, err)
		}
		for _, p := range pods {
			if Eligible(p) && s.Matches(labels.Set(p.Labels)) {
				out = append(out, p)
			}
		}
	}
	sortPods(out)
	return out, nil
}

func sortPods(pods []*corev1.Pod) {
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// eligiblePods are the eligible pods of the whole cluster.
func (r *resolver) eligiblePods() ([]*corev1.Pod, error) {
	if r.allPods != nil {
		return r.allPods, nil
	}
	pods, err := r.c.Pods("")
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if Eligible(p) {
			out = append(out, p)
		}
	}
	sortPods(out)
	r.allPods = out
	return out, nil
}

func (r *resolver) servicesIn(ns string) ([]*corev1.Service, error) {
	if s, ok := r.services[ns]; ok {
		return s, nil
	}
	s, err := r.c.Services(ns)
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", ns, err)
	}
	r.services[ns] = s
	return s, nil
}

// virtualIPsIn are the ClusterIPs (as /32 or /128) that an egress entry
// allowing cidr minus except on the rule's ports would allow wrongly: those
// of selector-based Services inside the block with a Service port the
// entry allows but that leads to no backend the rule allows (a backend
// inside the block, on a pod port the rule allows to it). The entry
// excepts them; the Service entries of the backends (serviceEntries) then
// allow exactly the right ports. Services without a selector (the
// kubernetes Service, manual Endpoints) are left to the CIDR: their
// backends are not pods the controller knows.
func (r *resolver) virtualIPsIn(cidr netip.Prefix, except []netip.Prefix, rp rulePorts) ([]netip.Prefix, error) {
	if r.allServices == nil {
		svcs, err := r.c.Services("")
		if err != nil {
			return nil, fmt.Errorf("list services: %w", err)
		}
		r.allServices = slices.DeleteFunc(slices.Clone(svcs), func(svc *corev1.Service) bool {
			return svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0
		})
	}
	pods, err := r.eligiblePods()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, svc := range r.allServices {
		var inside []netip.Addr
		for _, ip := range clusterIPs(svc) {
			if inBlock(ip, cidr, except) {
				inside = append(inside, ip)
			}
		}
		if len(inside) == 0 || !r.vipOverAllowed(svc, cidr, except, rp, pods) {
			continue
		}
		for _, ip := range inside {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out, nil
}

// vipOverAllowed reports whether some port of svc that the rule's ports
// allow leads to no backend the rule allows.
func (r *resolver) vipOverAllowed(svc *corev1.Service, cidr netip.Prefix, except []netip.Prefix, rp rulePorts, pods []*corev1.Pod) bool {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var backends []*corev1.Pod
	for _, p := range pods {
		if p.Namespace == svc.Namespace && sel.Matches(labels.Set(p.Labels)) &&
			slices.ContainsFunc(PodIPs(p), func(ip netip.Addr) bool { return inBlock(ip, cidr, except) }) {
			backends = append(backends, p)
		}
	}
	for _, sp := range svc.Spec.Ports {
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if !rp.all && !portAllowed(rp.numeric, proto, sp.Port) {
			continue // the entry does not allow this port anyway
		}
		reaches := slices.ContainsFunc(backends, func(p *corev1.Pod) bool {
			target, ok := targetPort(p, sp, proto)
			return ok && (rp.all || portAllowed(append(slices.Clone(rp.numeric), rp.resolve(p)...), proto, target))
		})
		if !reaches {
			return true
		}
	}
	return false
}

// selector converts a label selector; nil selects everything (as a
// missing podSelector or namespaceSelector does in a peer).
func selector(sel *metav1.LabelSelector) (labels.Selector, error) {
	if sel == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(sel)
}

// peerPods are the pods a podSelector/namespaceSelector peer stands for:
// a podSelector alone looks in the policy's namespace, a namespaceSelector
// alone takes every pod of the matching namespaces, both together AND.
func (r *resolver) peerPods(peer *networkingv1.NetworkPolicyPeer) ([]*corev1.Pod, error) {
	if peer.NamespaceSelector == nil {
		return r.podsIn([]string{r.np.Namespace}, peer.PodSelector)
	}
	nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
	if err != nil {
		r.problem("namespace selector: %v", err)
		return nil, nil
	}
	if r.namespaces == nil {
		if r.namespaces, err = r.c.Namespaces(); err != nil {
			return nil, fmt.Errorf("list namespaces: %w", err)
		}
	}
	var names []string
	for _, ns := range r.namespaces {
		if nsSel.Matches(NamespaceLabels(ns)) {
			names = append(names, ns.Name)
		}
	}
	slices.Sort(names)
	return r.podsIn(names, peer.PodSelector)
}

// ipBlock parses a peer's CIDR and exceptions; ok is false when the CIDR
// does not parse (the peer then matches nothing).
func (r *resolver) ipBlock(b *networkingv1.IPBlock) (cidr netip.Prefix, except []netip.Prefix, ok bool) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		r.problem("ipBlock cidr %q: %v", b.CIDR, err)
		return netip.Prefix{}, nil, false
	}
	for _, e := range b.Except {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			// Dropping an exception would allow more than asked: drop the peer.
			r.problem("ipBlock except %q: %v", e, err)
			return netip.Prefix{}, nil, false
		}
		except = append(except, p.Masked())
	}
	return cidr.Masked(), except, true
}

// inBlock reports whether ip is in cidr and in none of the exceptions.
func inBlock(ip netip.Addr, cidr netip.Prefix, except []netip.Prefix) bool {
	if !cidr.Contains(ip) {
		return false
	}
	for _, e := range except {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

// anywhere are the CIDRs of a rule without peers.
func (r *resolver) anywhere() []netip.Prefix {
	out := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	if r.v6 {
		out = append(out, netip.MustParsePrefix("::/0"))
	}
	return out
}

func (r *resolver) ingressRule(set *entrySet, rule *networkingv1.NetworkPolicyIngressRule, selected []*corev1.Pod) error {
	rp := parsePorts(rule.Ports)
	// Named ports of an ingress rule are the destination's: resolved on the
	// selected pods. When they disagree on a number every number is
	// allowed to every selected pod (see the package doc).
	ports := rp.numeric
	if len(rp.named) > 0 {
		for _, p := range selected {
			ports = append(ports, rp.resolve(p)...)
		}
	}
	if !rp.all && len(ports) == 0 {
		return nil // every port is a name no selected pod defines
	}
	peers := rule.From
	if len(peers) == 0 { // no peers: every address
		for _, cidr := range r.anywhere() {
			set.add(cidr, nil, rp.all, ports)
		}
		return nil
	}
	for i := range peers {
		peer := &peers[i]
		if peer.IPBlock != nil {
			if cidr, except, ok := r.ipBlock(peer.IPBlock); ok {
				set.add(cidr, except, rp.all, ports)
			}
			continue
		}
		pods, err := r.peerPods(peer)
		if err != nil {
			return err
		}
		for _, p := range pods {
			for _, ip := range PodIPs(p) {
				set.add(netip.PrefixFrom(ip, ip.BitLen()), nil, rp.all, ports)
			}
		}
	}
	return nil
}

func (r *resolver) egressRule(set *entrySet, rule *networkingv1.NetworkPolicyEgressRule) error {
	rp := parsePorts(rule.Ports)
	if len(rule.To) == 0 { // no peers: every address
		if rp.all {
			for _, cidr := range r.anywhere() {
				set.add(cidr, nil, true, nil)
			}
			return nil // every address and port: Service IPs included
		}
		if len(rp.numeric) > 0 {
			for _, cidr := range r.anywhere() {
				vips, err := r.virtualIPsIn(cidr, nil, rp)
				if err != nil {
					return err
				}
				set.add(cidr, vips, false, rp.numeric)
			}
		}
		pods, err := r.eligiblePods()
		if err != nil {
			return err
		}
		return r.egressToPods(set, pods, rp, true)
	}
	for i := range rule.To {
		peer := &rule.To[i]
		if peer.IPBlock != nil {
			cidr, except, ok := r.ipBlock(peer.IPBlock)
			if !ok {
				continue
			}
			if rp.all || len(rp.numeric) > 0 {
				vips, err := r.virtualIPsIn(cidr, except, rp)
				if err != nil {
					return err
				}
				set.add(cidr, append(slices.Clone(except), vips...), rp.all, rp.numeric)
			}
			// Pods inside the block: their named ports, and the Services
			// in front of them (see the package doc).
			all, err := r.eligiblePods()
			if err != nil {
				return err
			}
			var pods []*corev1.Pod
			for _, p := range all {
				if slices.ContainsFunc(PodIPs(p), func(ip netip.Addr) bool { return inBlock(ip, cidr, except) }) {
					pods = append(pods, p)
				}
			}
			if err := r.egressToPods(set, pods, rp, true); err != nil {
				return err
			}
			continue
		}
		pods, err := r.peerPods(peer)
		if err != nil {
			return err
		}
		if err := r.egressToPods(set, pods, rp, false); err != nil {
			return err
		}
	}
	return nil
}

// egressToPods adds, for each pod, its addresses with the ports the rule
// allows to it, and the ClusterIPs of the Services selecting it on the
// Service ports that lead to an allowed pod port. covered means an ipBlock
// (or "anywhere") entry already allows the pod on the numeric ports, so
// only its named ports need a pod entry.
func (r *resolver) egressToPods(set *entrySet, pods []*corev1.Pod, rp rulePorts, covered bool) error {
	for _, p := range pods {
		named := rp.resolve(p)
		ports := append(slices.Clone(rp.numeric), named...)
		if !rp.all && len(ports) == 0 {
			continue // none of the rule's ports exists on this pod
		}
		podAll, podPorts := rp.all, ports
		if covered {
			podAll, podPorts = false, named
		}
		if podAll || len(podPorts) > 0 {
			for _, ip := range PodIPs(p) {
				set.add(netip.PrefixFrom(ip, ip.BitLen()), nil, podAll, podPorts)
			}
		}
		if err := r.serviceEntries(set, p, rp.all, ports); err != nil {
			return err
		}
	}
	return nil
}

// serviceEntries adds the ClusterIPs of the Services that select pod p,
// each on its Service ports whose target port on p is allowed (all of them
// when all is set).
func (r *resolver) serviceEntries(set *entrySet, p *corev1.Pod, all bool, allowed []pe.Port) error {
	svcs, err := r.servicesIn(p.Namespace)
	if err != nil {
		return err
	}
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 ||
			!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels)) {
			continue
		}
		var ports []pe.Port
		for _, sp := range svc.Spec.Ports {
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			target, ok := targetPort(p, sp, proto)
			if !ok || (!all && !portAllowed(allowed, proto, target)) {
				continue
			}
			ports = append(ports, pe.Port{Protocol: &proto, Port: ptr(sp.Port)})
		}
		if len(ports) == 0 {
			continue
		}
		for _, ip := range clusterIPs(svc) {
			set.add(netip.PrefixFrom(ip, ip.BitLen()), nil, false, ports)
		}
	}
	return nil
}

// clusterIPs are a Service's virtual IPs (none for headless Services).
func clusterIPs(svc *corev1.Service) []netip.Addr {
	raw := svc.Spec.ClusterIPs
	if len(raw) == 0 && svc.Spec.ClusterIP != "" {
		raw = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range raw {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// targetPort is the pod port a Service port leads to on p.
func targetPort(p *corev1.Pod, sp corev1.ServicePort, proto corev1.Protocol) (int32, bool) {
	switch {
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		return ContainerPort(p, sp.TargetPort.StrVal, proto)
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal, true
	default:
		return sp.Port, true
	}
}

// portAllowed reports whether port n of proto is in ports.
func portAllowed(ports []pe.Port, proto corev1.Protocol, n int32) bool {
	for _, p := range ports {
		if *p.Protocol != proto {
			continue
		}
		if p.Port == nil || *p.Port == n || (p.EndPort != nil && *p.Port <= n && n <= *p.EndPort) {
			return true
		}
	}
	return false
}

// rulePorts are a rule's ports: all (no ports listed), or numeric ports
// (protocol-wide ones have a nil Port) and named ports to resolve per pod.
type rulePorts struct {
	all     bool
	numeric []pe.Port
	named   []namedPort
}

type namedPort struct {
	name  string
	proto corev1.Protocol
}

func parsePorts(ports []networkingv1.NetworkPolicyPort) rulePorts {
	if len(ports) == 0 {
		return rulePorts{all: true}
	}
	var rp rulePorts
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil && *p.Protocol != "" {
			proto = *p.Protocol
		}
		switch {
		case p.Port == nil:
			rp.numeric = append(rp.numeric, pe.Port{Protocol: &proto})
		case p.Port.Type == intstr.String:
			rp.named = append(rp.named, namedPort{name: p.Port.StrVal, proto: proto})
		default:
			port := pe.Port{Protocol: &proto, Port: ptr(p.Port.IntVal)}
			if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
				port.EndPort = ptr(*p.EndPort)
			}
			rp.numeric = append(rp.numeric, port)
		}
	}
	return rp
}

// resolve returns the named ports as pod p defines them; names p does not
// define are left out.
func (rp rulePorts) resolve(p *corev1.Pod) []pe.Port {
	var out []pe.Port
	for _, n := range rp.named {
		if num, ok := ContainerPort(p, n.name, n.proto); ok {
			proto := n.proto
			out = append(out, pe.Port{Protocol: &proto, Port: ptr(num)})
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
