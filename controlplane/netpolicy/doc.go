// Package netpolicy is the control plane's NetworkPolicy → PolicyEndpoint
// controller. It resolves every NetworkPolicy to addresses and port
// numbers (api/policyendpoint/v1alpha1) that berth-netpol, the node agent,
// programs into eBPF maps without reading pods, namespaces or Services.
//
// # Use
//
// The translation is a pure function, usable by tools and tests:
//
//	cluster := netpolicy.NewCluster(pods, namespaces, services)
//	chunks, err := netpolicy.Translate(policy, cluster, netpolicy.DefaultChunkSize)
//
// The controller runs it on every change of a policy, and of a pod,
// namespace or Service the policy may read: a pod or Service change wakes
// the policies of its namespace and those reaching across namespaces
// (namespaceSelector peers, egress to an ipBlock or everywhere); a
// namespace label change only the latter. Pod changes that resolution
// does not read (conditions, annotations) wake nothing. It stores the
// result:
//
//	c := netpolicy.New(kubeClient, dynamicClient, netpolicy.Options{Log: log})
//	_ = c.Register(prometheus.DefaultRegisterer)
//	err := c.Run(ctx)
//
// # Semantics (NetworkPolicy v1)
//
//   - podSelectorEndpoints: the pods of the policy's namespace that its
//     podSelector matches, Running or Pending with an IP, not hostNetwork.
//     One entry per pod IP (dual-stack pods have two).
//   - podIsolation: spec.policyTypes; when empty, Ingress, plus Egress if
//     the policy has egress rules. Rules of a direction not isolated are
//     ignored.
//   - A peer with a podSelector only means pods of the policy's namespace;
//     a namespaceSelector only, every pod of the matching namespaces
//     (kubernetes.io/metadata.name always matches the namespace's name);
//     both, their AND. Each peer pod becomes an IP/32 (or /128) entry.
//   - An ipBlock peer becomes one {cidr, except} entry. Entries merge only
//     when their CIDR and exceptions are equal, so an exception never
//     removes what another rule allows.
//   - A rule without peers allows 0.0.0.0/0 (and ::/0 when a selected pod
//     has an IPv6 address); a rule without ports allows every port.
//   - Ports: protocol defaults to TCP; port ranges keep endPort; a port
//     without a number allows the whole protocol.
//   - Named ports of egress rules are resolved on each destination pod:
//     a pod that does not define the name (with that protocol) gets no
//     entry for it. For ipBlock peers and rules without peers, the name is
//     resolved on every pod whose IP lies in the block (minus exceptions)
//     and each such pod gets an IP/32 entry; addresses that are not pods
//     have no named ports, so they are not allowed by one.
//   - Named ports of ingress rules are the destination's, i.e. the selected
//     pods'. A PolicyEndpoint has one ingress list for all its selected
//     pods, so when selected pods define a name with different numbers,
//     every number found is allowed to all of them: pod A (http=80) also
//     accepts the rule's peers on 8080 if pod B has http=8080. This
//     over-allow needs selected pods that disagree on a port name, which
//     a single workload never does; exactness would need per-group
//     ingress lists in the API.
//
// # Services and ClusterIPs
//
// Clients usually connect to a Service's ClusterIP, and the node agent
// judges a pod's egress on its veth, before kube-proxy's DNAT: the
// destination it sees is the ClusterIP, not a pod. So for every egress
// entry that stands for pods (selector peers, and the pods inside an
// ipBlock or "anywhere" rule with ports), the controller also allows the
// ClusterIPs of the Services in the pod's namespace that select it
// (selector-based, not ExternalName, not headless), on each Service port
// whose targetPort (a number, or a name resolved on that pod) is a port
// the rule allows to that pod; on every Service port when the rule has no
// ports.
//
// Expanding here rather than translating in eBPF keeps the agent free of a
// Service watch and of kube-proxy's state, and is what the AWS controller
// does, so both agents read the same objects. The limits: a ClusterIP is
// allowed as soon as one allowed backend sits behind it, so a client may
// reach, through the ClusterIP, backends the policy does not allow to it
// (kube-proxy picks the backend after the check). The ingress side of the
// backend still enforces on the real pod after DNAT, so a policy on the
// server is never bypassed.
//
// The other way round, an egress CIDR entry (an ipBlock, or a rule without
// peers but with ports) would allow every ClusterIP inside it on the
// rule's ports, whatever the backends. So it lists in its except the
// ClusterIPs of selector-based Services inside the block that have a port
// the entry allows but that leads to no backend the rule allows (inside
// the block, on an allowed pod port); the backends' Service entries then
// allow the right ports. With upstream's except test (ipBlock <pod>/4
// except <pod b>/32, which holds the Service CIDR), b's ClusterIP is
// denied and the others allowed, as after DNAT. A ClusterIP the CIDR
// allows correctly is not listed, so a "port 53 anywhere" rule stays one
// short entry. Services without a selector (the kubernetes Service, manual
// Endpoints) have no pod backends to judge by and are left to the CIDR.
//
// # Chunks and generations
//
// A policy's resolved spec is split into chunks (Chunk) of at most
// Options.ChunkSize items. Chunk i of generation g of policy p is the
// PolicyEndpoint "<p>-<g>-<i>" in p's namespace, labelled
// LabelPolicyName=PolicyLabelValue(p), annotated with AnnotationGeneration
// g, AnnotationChunkCount and AnnotationChunkIndex, and controlled by the
// NetworkPolicy (the garbage collector deletes it with the policy).
//
// When the desired chunks equal those of the newest complete generation,
// nothing is written. Otherwise the controller creates every chunk of
// generation g+1 (g is the highest generation among the existing objects
// and among those it wrote itself), and only when all exist deletes every
// object of older generations. Chunks are never updated in place, so the
// API always holds a complete generation: an agent takes, per policy, the
// highest generation for which it sees ChunkCount chunks annotated with it,
// and ignores incomplete ones (v1alpha1.NewestComplete does exactly this).
//
// When a write fails half-way the new generation stays incomplete and the
// old one stays in force; the retry writes a newer generation and deletes
// both. Generation numbers only grow: the next is above every stored one
// and above the last this process wrote (its cache may lag its writes).
// Objects owned by an earlier policy of the same name (another UID) are
// never taken as current. Every write happens only after a fresh list from
// the apiserver; the informer's copy is used to see that nothing is to be
// done, which is by far the most common result.
package netpolicy
