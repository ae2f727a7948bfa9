// Package agent is berth-netpol's control loop: it follows the
// PolicyEndpoints of the cluster and the pods of its node, compiles each
// local pod's policy and hands it to the eBPF datapath, and serves the
// NPBackend calls berth-cni makes before a pod's ADD returns.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/internal/vethname"
	"github.com/berth-io/berth/netpol/datapath"
)

// Modes of NETWORK_POLICY_ENFORCING_MODE.
const (
	ModeStandard = "standard"
	ModeStrict   = "strict"
)

// Datapath is what the agent needs of netpol/datapath.
type Datapath interface {
	Apply(ifindex int, p datapath.Policy) error
	Attach(ifindex int) error
	Remove(ifindex int) error
	Attached() ([]int, error)
	// CompleteUpgrade is called once the pods found at start run this
	// agent's programs (see datapath.Datapath.CompleteUpgrade).
	CompleteUpgrade() error
}

// Config configures an Agent.
type Config struct {
	NodeName   string
	Mode       string // the default when berth-cni does not say
	VethPrefix string
	Kube       kubernetes.Interface
	Dynamic    dynamic.Interface
	Datapath   Datapath
	// LinkIndex finds a host veth's ifindex by name, and LinkName a
	// link's name by its index (netlink in production).
	LinkIndex func(name string) (int, error)
	LinkName  func(index int) (string, error)
	Metrics   *Metrics
	Events    EventSink
	Log       *slog.Logger
}

// EventSink reports PolicyEndpoints the agent could not fully enforce.
type EventSink interface {
	Warn(obj types.NamespacedName, reason, msg string)
}

// Agent keeps every local pod's datapath policy equal to what the
// PolicyEndpoints say.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	synced   bool
	chunks   map[types.NamespacedName]map[string]*pe.PolicyEndpoint // by policy, then object name
	sets     map[types.NamespacedName]*policySet                    // complete sets in force
	pods     map[types.NamespacedName]*localPod
	attr     attribution
	podStore cache.Store
}

// localPod is a pod of this node whose veths the agent enforces.
type localPod struct {
	// ifindexes are the pod's host veths: eth0's, then, for a multi-NIC
	// pod, those of its interfaces on the other network cards.
	ifindexes []int
	mode      string
	// applied is the digest of the policy in the pod's maps (zero: none
	// yet); a digest, not the policy, since a thousand pods selected by a
	// thousand-peer policy would otherwise hold a million prefixes.
	applied [sha256.Size]byte
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Mode == "" {
		cfg.Mode = ModeStandard
	}
	if cfg.VethPrefix == "" {
		cfg.VethPrefix = "eni"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Agent{cfg: cfg, log: cfg.Log, chunks: map[types.NamespacedName]map[string]*pe.PolicyEndpoint{},
		sets: map[types.NamespacedName]*policySet{}, pods: map[types.NamespacedName]*localPod{}}
}

// Start runs the informers and returns once their caches are in sync and
// pods enforced before a restart are enforced again; the loops stop with ctx.
func (a *Agent) Start(ctx context.Context) error {
	pf := informers.NewSharedInformerFactoryWithOptions(a.cfg.Kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
	}))
	podInf := pf.Core().V1().Pods().Informer()
	a.podStore = podInf.GetStore()
	df := dynamicinformer.NewDynamicSharedInformerFactory(a.cfg.Dynamic, 0)
	peInf := df.ForResource(pe.GroupVersionResource).Informer()
	if _, err := peInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.peChanged(o, false) },
		UpdateFunc: func(_, o any) { a.peChanged(o, false) },
		DeleteFunc: func(o any) { a.peChanged(o, true) },
	}); err != nil {
		return fmt.Errorf("policy endpoint handler: %w", err)
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, o any) { a.podChanged(o, false) },
		DeleteFunc: func(o any) { a.podChanged(o, true) },
	}); err != nil {
		return fmt.Errorf("pod handler: %w", err)
	}
	pf.Start(ctx.Done())
	df.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInf.HasSynced, peInf.HasSynced) {
		return fmt.Errorf("policy endpoint and pod caches did not sync: %w", context.Cause(ctx))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.synced = true
	return a.recover()
}

// recover takes back the pods whose programs outlived the previous agent:
// their pinned links still enforce the old policy, which is now brought up
// to date; links of pods that are gone are removed.
func (a *Agent) recover() error {
	attached, err := a.cfg.Datapath.Attached()
	if err != nil {
		return fmt.Errorf("list attached pods: %w", err)
	}
	// A pod's veth is found by its name's hash, whatever its prefix: pods
	// keep the veths they were made with when the prefix setting changes,
	// and taking them for gone would strip their policy.
	// A multi-NIC pod's other veths are named after "<pod>.<n>".
	byHash := map[string]types.NamespacedName{}
	for _, o := range a.podStore.List() {
		p := o.(*corev1.Pod)
		if !p.Spec.HostNetwork {
			key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
			for i := range maxInterfaces {
				byHash[vethname.Hash(p.Namespace, vethname.Interface(p.Name, i))] = key
			}
		}
	}
	var recovered []types.NamespacedName
	for _, idx := range attached {
		key, ok := a.podOfLink(idx, byHash)
		if !ok {
			if err := a.cfg.Datapath.Remove(idx); err != nil {
				a.log.Warn("remove state of a gone pod", "ifindex", idx, "err", err)
			}
			continue
		}
		if lp, ok := a.pods[key]; ok {
			lp.ifindexes = append(lp.ifindexes, idx)
			continue
		}
		a.pods[key] = &localPod{ifindexes: []int{idx}, mode: a.cfg.Mode}
		recovered = append(recovered, key)
	}
	for _, key := range recovered {
		if err := a.sync(key, nil); err != nil {
			a.log.Error("re-enforce pod after restart", "pod", key, "err", err)
		}
	}
	adopted := a.adopt()
	if err := a.cfg.Datapath.CompleteUpgrade(); err != nil {
		// Flows of the old agent's last moments may be judged again.
		a.log.Warn("complete datapath upgrade", "err", err)
	}
	a.log.Info("policy agent in sync", "policies", len(a.sets), "pods", len(a.pods), "adopted", adopted)
	a.cfg.Metrics.setPods(len(a.pods))
	return nil
}

// adopt attaches to the node's running pods that have no programs: those
// berth-cni made while no agent ran (it skips a missing agent), as when
// the agent is installed on a busy node. Their policies then hold as for
// any pod. They get standard mode whatever the default: they have run
// open, and strict mode's default deny is for a pod from its first packet.
func (a *Agent) adopt() int {
	n := 0
	for _, o := range a.podStore.List() {
		p := o.(*corev1.Pod)
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		if p.Spec.HostNetwork || a.pods[key] != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		var idxs []int
		for i := range maxInterfaces {
			idx, err := a.cfg.LinkIndex(vethname.For(a.cfg.VethPrefix, p.Namespace, vethname.Interface(p.Name, i)))
			if err != nil {
				break // no sandbox yet, or no more interfaces
			}
			idxs = append(idxs, idx)
		}
		if len(idxs) == 0 {
			continue
		}
		a.pods[key] = &localPod{ifindexes: idxs, mode: ModeStandard}
		err := a.sync(key, p.Labels)
		for _, idx := range idxs {
			if err != nil {
				break
			}
			err = a.cfg.Datapath.Attach(idx)
		}
		if err != nil {
			delete(a.pods, key)
			for _, idx := range idxs {
				_ = a.cfg.Datapath.Remove(idx)
			}
			a.log.Error("adopt a running pod", "pod", key, "err", err)
			continue
		}
		n++
	}
	return n
}

// podOfLink is the pod whose veth has the index; false when the link is
// gone or names no pod of this node.
func (a *Agent) podOfLink(idx int, byHash map[string]types.NamespacedName) (types.NamespacedName, bool) {
	name, err := a.cfg.LinkName(idx)
	if err != nil {
		return types.NamespacedName{}, false
	}
	_, hash, ok := vethname.Split(name)
	if !ok {
		return types.NamespacedName{}, false
	}
	key, ok := byHash[hash]
	return key, ok
}

// maxInterfaces bounds a multi-NIC pod's interfaces: one per network card
// (p5.48xlarge has 32).
const maxInterfaces = 32

// Enforce is EnforceNpToPod: it returns once the programs of the pod's
// interfaces (EnforceNpRequest.InterfaceCount: one per network card for a
// multi-NIC pod, 0 means 1) are attached with its final policy in their
// maps.
func (a *Agent) Enforce(ctx context.Context, namespace, name, mode string, interfaces int) error {
	start := time.Now()
	if mode == "" {
		mode = a.cfg.Mode
	}
	if mode != ModeStandard && mode != ModeStrict {
		return fmt.Errorf("network policy mode %q: want standard or strict", mode)
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	if interfaces > maxInterfaces {
		return fmt.Errorf("pod %s: %d interfaces, at most %d", key, interfaces, maxInterfaces)
	}
	var idxs []int
	var veths []string
	for i := range max(interfaces, 1) {
		veth := vethname.For(a.cfg.VethPrefix, namespace, vethname.Interface(name, i))
		idx, err := a.cfg.LinkIndex(veth)
		if err != nil {
			return fmt.Errorf("pod %s: host veth %s: %w", key, veth, err)
		}
		idxs, veths = append(idxs, idx), append(veths, veth)
	}
	// The pod object exists before its sandbox does; when the informer has
	// not seen it yet, read it, so its labels select its policies now.
	var podLabels map[string]string
	if p := a.cachedPod(key); p != nil {
		podLabels = p.Labels
	} else if p, err := a.cfg.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		podLabels = p.Labels
	} else if !apierrors.IsNotFound(err) {
		a.log.Warn("pod labels unavailable; using the controller's endpoint lists", "pod", key, "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.synced {
		return errors.New("policy agent is not in sync with the API server yet")
	}
	lp := &localPod{ifindexes: idxs, mode: mode}
	if old, ok := a.pods[key]; ok {
		for _, o := range old.ifindexes {
			if !slices.Contains(idxs, o) {
				_ = a.cfg.Datapath.Remove(o)
			}
		}
	}
	a.pods[key] = lp
	if err := a.sync(key, podLabels); err != nil {
		delete(a.pods, key)
		return err
	}
	for i, idx := range idxs {
		if err := a.cfg.Datapath.Attach(idx); err != nil {
			delete(a.pods, key)
			for _, idx := range idxs {
				_ = a.cfg.Datapath.Remove(idx)
			}
			return fmt.Errorf("attach programs to %s: %w", veths[i], err)
		}
	}
	a.cfg.Metrics.observeEnforce(time.Since(start))
	a.cfg.Metrics.setPods(len(a.pods))
	return nil
}

// Delete is DeletePodNp; it is idempotent.
func (a *Agent) Delete(namespace, name string) error {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pods[key]
	if !ok {
		return nil
	}
	delete(a.pods, key)
	a.cfg.Metrics.setPods(len(a.pods))
	var errs []error
	for _, idx := range lp.ifindexes {
		if err := a.cfg.Datapath.Remove(idx); err != nil {
			errs = append(errs, fmt.Errorf("remove policy of %s (ifindex %d): %w", key, idx, err))
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) cachedPod(key types.NamespacedName) *corev1.Pod {
	if a.podStore == nil {
		return nil
	}
	o, ok, err := a.podStore.GetByKey(key.String())
	if err != nil || !ok {
		return nil
	}
	return o.(*corev1.Pod)
}

// sync compiles one pod's policy and applies it when it changed. podLabels
// nil means "take them from the cache".
func (a *Agent) sync(key types.NamespacedName, podLabels map[string]string) error {
	lp := a.pods[key]
	if lp == nil {
		return nil
	}
	if podLabels == nil {
		if p := a.cachedPod(key); p != nil {
			podLabels = p.Labels
		}
	}
	var selecting []*policySet
	for _, s := range a.sets {
		if s.selects(key, podLabels) {
			selecting = append(selecting, s)
		}
	}
	var pol datapath.Policy
	switch {
	case len(selecting) > 0:
		var bad []badEntry
		pol, bad = compile(selecting, &a.attr)
		for _, b := range bad {
			a.cfg.Metrics.invalidRule()
			a.log.Warn("skipping a rule the datapath cannot enforce", "policy", b.set.ref, "pod", key, "reason", b.reason)
			if a.cfg.Events != nil {
				for _, c := range b.set.chunks {
					a.cfg.Events.Warn(types.NamespacedName{Namespace: b.set.ref.Namespace, Name: c}, "InvalidRule", b.reason)
				}
			}
		}
	case lp.mode == ModeStrict:
		pol = datapath.DenyAll
	default:
		pol = datapath.AllowAll
	}
	sum := digest(pol)
	if lp.applied == sum {
		return nil
	}
	for _, idx := range lp.ifindexes {
		if err := a.cfg.Datapath.Apply(idx, pol); err != nil {
			return fmt.Errorf("apply policy of %s (ifindex %d): %w", key, idx, err)
		}
	}
	lp.applied = sum
	return nil
}

func flag(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// digest identifies a policy by its content.
func digest(p datapath.Policy) [sha256.Size]byte {
	h := sha256.New()
	var b []byte
	for _, d := range []datapath.Direction{p.Ingress, p.Egress} {
		b = binary.AppendUvarint(b[:0], uint64(len(d.Rules)))
		if d.Isolated {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		h.Write(b)
		for _, r := range d.Rules {
			b = binary.AppendUvarint(b[:0], uint64(r.ID))
			b = append(b, flag(r.AnyPeer), flag(r.Shared))
			for _, list := range [][]netip.Prefix{r.CIDRs, r.Except} {
				b = binary.AppendUvarint(b, uint64(len(list)))
				for _, c := range list {
					b, _ = c.AppendBinary(b)
				}
			}
			b = binary.AppendUvarint(b, uint64(len(r.Ports)))
			for _, pr := range r.Ports {
				b = append(b, pr.Protocol)
				b = binary.BigEndian.AppendUint16(b, pr.Start)
				b = binary.BigEndian.AppendUint16(b, pr.End)
			}
			h.Write(b)
		}
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func (a *Agent) peChanged(o any, deleted bool) {
	start := time.Now()
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	var obj pe.PolicyEndpoint
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		a.log.Warn("unreadable policy endpoint", "name", u.GetNamespace()+"/"+u.GetName(), "err", err)
		a.cfg.Metrics.invalidRule()
		return
	}
	ref := types.NamespacedName{Namespace: obj.Spec.PolicyRef.Namespace, Name: obj.Spec.PolicyRef.Name}
	if ref.Namespace == "" {
		ref.Namespace = obj.Namespace
	}
	if ref.Name == "" {
		a.log.Warn("policy endpoint without policyRef", "name", obj.Namespace+"/"+obj.Name)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.chunks[ref]
	if m == nil {
		m = map[string]*pe.PolicyEndpoint{}
		a.chunks[ref] = m
	}
	if deleted {
		delete(m, obj.Name)
	} else {
		m[obj.Name] = &obj
	}
	objs := make([]*pe.PolicyEndpoint, 0, len(m))
	for _, c := range m {
		objs = append(objs, c)
	}
	switch set, ok, err := completeSet(ref, objs); {
	case err != nil:
		a.log.Warn("policy endpoints not usable; keeping the last complete set", "policy", ref, "err", err)
		a.cfg.Metrics.invalidRule()
		return
	case len(objs) == 0:
		delete(a.chunks, ref)
		delete(a.sets, ref)
	case !ok:
		return // a generation is half-written: the old one stays in force
	default:
		a.sets[ref] = set
	}
	if !a.synced {
		return
	}
	for key := range a.pods {
		// Only pods of the policy's namespace can be selected by it.
		if key.Namespace != ref.Namespace {
			continue
		}
		if err := a.sync(key, nil); err != nil {
			a.log.Error("enforce policy change", "pod", key, "err", err)
		}
	}
	a.cfg.Metrics.observeProgramming(time.Since(start))
}

func (a *Agent) podChanged(o any, deleted bool) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.synced {
		return
	}
	if deleted {
		if lp, ok := a.pods[key]; ok {
			delete(a.pods, key)
			for _, idx := range lp.ifindexes {
				_ = a.cfg.Datapath.Remove(idx)
			}
			a.cfg.Metrics.setPods(len(a.pods))
		}
		return
	}
	if err := a.sync(key, p.Labels); err != nil {
		a.log.Error("enforce pod label change", "pod", key, "err", err)
	}
}

// RuleName is the policy and rule a verdict's rule ID stands for.
func (a *Agent) RuleName(id uint32) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attr.name(id)
}
