package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

// Options tune a Controller; zero values take the defaults.
type Options struct {
	// ChunkSize is the most items one PolicyEndpoint holds (DefaultChunkSize).
	ChunkSize int
	// Workers is how many policies are reconciled at once (2).
	Workers int
	// Resync is the informers' resync period (10m): every policy is checked
	// against its stored chunks that often, repairing edits by others.
	Resync time.Duration
	Log    *slog.Logger
}

// Controller keeps every NetworkPolicy's PolicyEndpoints current.
type Controller struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
	opts   Options
	log    *slog.Logger
	m      *metrics

	// Set up by Run.
	queue    workqueue.TypedRateLimitingInterface[string]
	policies networkinglisters.NetworkPolicyLister
	cluster  Cluster
	chunks   cache.Indexer
	recorder record.EventRecorder

	// written is the highest generation created per policy key: the next
	// one goes above it even before the informer shows it.
	mu      sync.Mutex
	written map[string]int64
}

// New returns a controller that reads policies, pods, namespaces and
// Services through client and writes PolicyEndpoints through dyn.
func New(client kubernetes.Interface, dyn dynamic.Interface, opts Options) *Controller {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Minute
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{client: client, dyn: dyn, opts: opts, log: log, m: newMetrics(), written: map[string]int64{}}
}

// policyIndex indexes PolicyEndpoints by "<namespace>/<spec.policyRef.name>".
const policyIndex = "policy"

func chunkPolicyKey(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	name, _, _ := unstructured.NestedString(u.Object, "spec", "policyRef", "name")
	if name == "" {
		return nil, nil
	}
	return []string{u.GetNamespace() + "/" + name}, nil
}

// Run watches and reconciles until ctx ends. The PolicyEndpoint CRD must
// be installed (InstallCRD): the caches wait for it.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "berth_netpol_controller"})
	defer c.queue.ShutDown()

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "berth-netpol-controller"})

	f := informers.NewSharedInformerFactory(c.client, c.opts.Resync)
	npInf := f.Networking().V1().NetworkPolicies()
	podInf, nsInf, svcInf := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Core().V1().Services()
	c.policies = npInf.Lister()
	c.cluster = &listerCluster{pods: podInf.Lister(), namespaces: nsInf.Lister(), services: svcInf.Lister()}

	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, c.opts.Resync, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = pe.LabelPolicyName // every object that has the label
	})
	peInf := df.ForResource(pe.GroupVersionResource).Informer()
	if err := peInf.AddIndexers(cache.Indexers{policyIndex: chunkPolicyKey}); err != nil {
		return fmt.Errorf("policy endpoint index: %w", err)
	}
	c.chunks = peInf.GetIndexer()

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{npInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueue,
			UpdateFunc: func(_, n any) { c.enqueue(n) },
			DeleteFunc: c.enqueue,
		}},
		{podInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueAffected,
			UpdateFunc: func(o, n any) { c.enqueueAffectedIf(n, podChanged(o, n)) },
			DeleteFunc: c.enqueueAffected,
		}},
		{nsInf.Informer(), cache.ResourceEventHandlerFuncs{
			// A namespace's labels matter to namespaceSelectors only; its
			// pods come and go with their own events.
			AddFunc:    func(any) { c.enqueueCrossNamespace("") },
			UpdateFunc: func(o, n any) { c.enqueueAffectedIf(nil, namespaceChanged(o, n)) },
			DeleteFunc: func(any) { c.enqueueCrossNamespace("") },
		}},
		{svcInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueAffected,
			UpdateFunc: func(o, n any) { c.enqueueAffectedIf(n, serviceChanged(o, n)) },
			DeleteFunc: c.enqueueAffected,
		}},
		{peInf, cache.ResourceEventHandlerFuncs{
			// Someone else's edit or delete of a chunk is repaired; the
			// controller's own writes come back here and find nothing to do.
			AddFunc:    c.enqueueChunkOwner,
			UpdateFunc: func(_, n any) { c.enqueueChunkOwner(n) },
			DeleteFunc: c.enqueueChunkOwner,
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return fmt.Errorf("event handler: %w", err)
		}
	}
	f.Start(ctx.Done())
	df.Start(ctx.Done())
	defer f.Shutdown()
	defer df.Shutdown()
	c.log.Info("network policy controller starting", "chunkSize", c.opts.ChunkSize, "workers", c.opts.Workers)
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for gvr, ok := range df.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync: %w", gvr, context.Cause(ctx))
		}
	}
	c.log.Info("network policy controller synced")

	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.log.Warn("network policy key", "err", err)
		return
	}
	c.queue.Add(key)
}

// enqueueAffected queues the policies a change of a pod or Service (obj)
// can matter to: those of its namespace, and those whose peers reach into
// other namespaces (see crossNamespace).
func (c *Controller) enqueueAffected(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	ns, _, _ := cache.SplitMetaNamespaceKey(key)
	c.enqueueCrossNamespace(ns)
}

// enqueueAffectedIf queues for obj when changed; a nil obj stands for a
// namespace, which only matters to cross-namespace policies.
func (c *Controller) enqueueAffectedIf(obj any, changed bool) {
	switch {
	case !changed:
	case obj == nil:
		c.enqueueCrossNamespace("")
	default:
		c.enqueueAffected(obj)
	}
}

// podBatchDelay gathers the pod, Service and namespace changes of a burst
// (a Deployment scaling up) into one new generation of PolicyEndpoints
// instead of one per pod; a change to the policy itself is not delayed.
const podBatchDelay = 50 * time.Millisecond

// enqueueCrossNamespace queues the policies of namespace ns ("" for none)
// and every policy that crossNamespace reports.
func (c *Controller) enqueueCrossNamespace(ns string) {
	nps, err := c.policies.List(labels.Everything())
	if err != nil {
		c.log.Warn("list network policies", "err", err)
		return
	}
	for _, np := range nps {
		if np.Namespace == ns || crossNamespace(np) {
			c.queue.AddAfter(np.Namespace+"/"+np.Name, podBatchDelay)
		}
	}
}

// crossNamespace reports whether a policy's resolution reads pods or
// Services outside its own namespace: a namespaceSelector peer, or an
// egress rule to an ipBlock or to everywhere (the pods inside are looked
// up for named ports and Services).
func crossNamespace(np *networkingv1.NetworkPolicy) bool {
	types := PolicyTypes(np)
	if slices.Contains(types, networkingv1.PolicyTypeIngress) {
		for _, r := range np.Spec.Ingress {
			for _, p := range r.From {
				if p.NamespaceSelector != nil {
					return true
				}
			}
		}
	}
	if slices.Contains(types, networkingv1.PolicyTypeEgress) {
		for _, r := range np.Spec.Egress {
			if len(r.To) == 0 {
				return true
			}
			for _, p := range r.To {
				if p.NamespaceSelector != nil || p.IPBlock != nil {
					return true
				}
			}
		}
	}
	return false
}

func (c *Controller) enqueueChunkOwner(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if keys, _ := chunkPolicyKey(obj); len(keys) == 1 {
		c.queue.Add(keys[0])
	}
}

// podChanged reports a change of what resolution reads from a pod.
func podChanged(o, n any) bool {
	a, ok1 := o.(*corev1.Pod)
	b, ok2 := n.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !maps.Equal(a.Labels, b.Labels) || Eligible(a) != Eligible(b) || a.Status.HostIP != b.Status.HostIP ||
		!slices.Equal(PodIPs(a), PodIPs(b)) || a.Namespace != b.Namespace
}

func namespaceChanged(o, n any) bool {
	a, ok1 := o.(*corev1.Namespace)
	b, ok2 := n.(*corev1.Namespace)
	return !ok1 || !ok2 || !maps.Equal(a.Labels, b.Labels)
}

func serviceChanged(o, n any) bool {
	a, ok1 := o.(*corev1.Service)
	b, ok2 := n.(*corev1.Service)
	if !ok1 || !ok2 {
		return true
	}
	return a.Spec.Type != b.Spec.Type || !maps.Equal(a.Spec.Selector, b.Spec.Selector) || a.Spec.ClusterIP != b.Spec.ClusterIP ||
		!slices.Equal(a.Spec.ClusterIPs, b.Spec.ClusterIPs) || !apiequality.Semantic.DeepEqual(a.Spec.Ports, b.Spec.Ports)
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	start := time.Now()
	result, err := c.reconcile(ctx, key)
	c.m.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.reconciles.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			c.log.Warn("reconcile network policy", "policy", key, "err", err)
		}
		c.queue.AddRateLimited(key)
		return true
	}
	c.m.reconciles.WithLabelValues(result).Inc()
	c.log.Debug("reconciled", "policy", key, "result", result, "elapsed", time.Since(start))
	c.queue.Forget(key)
	return true
}

// Reconcile results, the values of the result label of
// berth_netpol_controller_reconciles_total.
const (
	resultUnchanged = "unchanged"
	resultWritten   = "written"
	resultDeleted   = "deleted"
)

func (c *Controller) reconcile(ctx context.Context, key string) (string, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return "", fmt.Errorf("policy key %q: %w", key, err)
	}
	np, err := c.policies.NetworkPolicies(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return c.deleteAll(ctx, key, ns, name)
	}
	if err != nil {
		return "", fmt.Errorf("get network policy %s: %w", key, err)
	}
	desired, terr := Translate(np, c.cluster, c.opts.ChunkSize)
	switch {
	case errors.Is(terr, ErrInvalidPolicy):
		// What parses is enforced; what does not matches nothing.
		c.m.invalid.Inc()
		c.recorder.Event(np, corev1.EventTypeWarning, "InvalidPolicy", terr.Error())
	case terr != nil:
		return "", terr
	}
	floor := c.floor(key)
	// The informer's copy answers the common case, nothing to do, without
	// a call; any write is planned on a fresh list.
	if cached, err := c.cachedChunks(key); err == nil {
		if p := planWrites(np, desired, cached, floor); p.unchanged && len(p.delete) == 0 {
			return resultUnchanged, nil
		}
	}
	existing, err := c.liveChunks(ctx, ns, name)
	if err != nil {
		return "", err
	}
	p := planWrites(np, desired, existing, floor)
	if p.unchanged && len(p.delete) == 0 {
		return resultUnchanged, nil
	}
	if err := c.apply(ctx, key, p); err != nil {
		c.recorder.Eventf(np, corev1.EventTypeWarning, "PolicyEndpointWriteFailed", "generation %d: %v", p.gen, err)
		return "", err
	}
	if len(p.create) > 0 {
		c.log.Debug("policy endpoints written", "policy", key, "generation", p.gen, "chunks", len(p.create), "deleted", len(p.delete))
	}
	return resultWritten, nil
}

// apply creates the new generation's chunks in order, then deletes the
// objects it replaces; it stops at the first error, so nothing is deleted
// before the new generation is complete.
func (c *Controller) apply(ctx context.Context, key string, p plan) error {
	if len(p.create) > 0 {
		c.mu.Lock()
		c.written[key] = max(c.written[key], p.gen)
		c.mu.Unlock()
	}
	for _, obj := range p.create {
		u, err := toUnstructured(obj)
		if err != nil {
			return err
		}
		if _, err := c.dyn.Resource(pe.GroupVersionResource).Namespace(obj.Namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy endpoint %s/%s: %w", obj.Namespace, obj.Name, err)
		}
		c.m.writes.WithLabelValues("create").Inc()
	}
	ns, _, _ := cache.SplitMetaNamespaceKey(key)
	return c.deleteNames(ctx, ns, p.delete)
}

func (c *Controller) deleteNames(ctx context.Context, ns string, names []string) error {
	for _, n := range names {
		err := c.dyn.Resource(pe.GroupVersionResource).Namespace(ns).Delete(ctx, n, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete policy endpoint %s/%s: %w", ns, n, err)
		}
		c.m.writes.WithLabelValues("delete").Inc()
	}
	return nil
}

// deleteAll removes the chunks of a deleted policy (the garbage collector
// would too, later).
func (c *Controller) deleteAll(ctx context.Context, key, ns, name string) (string, error) {
	existing, err := c.liveChunks(ctx, ns, name)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(existing))
	for _, obj := range existing {
		names = append(names, obj.Name)
	}
	if err := c.deleteNames(ctx, ns, names); err != nil {
		return "", err
	}
	c.mu.Lock()
	delete(c.written, key)
	c.mu.Unlock()
	if len(names) == 0 {
		return resultUnchanged, nil
	}
	return resultDeleted, nil
}

func (c *Controller) floor(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written[key]
}

// cachedChunks are the policy's chunks as the informer has them.
func (c *Controller) cachedChunks(key string) ([]*pe.PolicyEndpoint, error) {
	objs, err := c.chunks.ByIndex(policyIndex, key)
	if err != nil {
		return nil, fmt.Errorf("policy endpoint index: %w", err)
	}
	out := make([]*pe.PolicyEndpoint, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		obj, err := fromUnstructured(u)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// liveChunks lists the policy's chunks from the apiserver.
func (c *Controller) liveChunks(ctx context.Context, ns, name string) ([]*pe.PolicyEndpoint, error) {
	list, err := c.dyn.Resource(pe.GroupVersionResource).Namespace(ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{pe.LabelPolicyName: pe.PolicyLabelValue(name)}).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list policy endpoints of %s/%s: %w", ns, name, err)
	}
	var out []*pe.PolicyEndpoint
	for i := range list.Items {
		obj, err := fromUnstructured(&list.Items[i])
		if err != nil {
			// Not ours to read, but it carries our label: replace it.
			c.log.Warn("unreadable policy endpoint", "err", err)
			obj = &pe.PolicyEndpoint{ObjectMeta: metav1.ObjectMeta{Name: list.Items[i].GetName(), Namespace: ns}}
			obj.Spec.PolicyRef.Name = name
		}
		if obj.Spec.PolicyRef.Name == name {
			out = append(out, obj)
		}
	}
	return out, nil
}

// listerCluster is the Cluster of the informers' caches.
type listerCluster struct {
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	services   corelisters.ServiceLister
}

var _ Cluster = (*listerCluster)(nil)

func (l *listerCluster) Pods(namespace string) ([]*corev1.Pod, error) {
	if namespace == "" {
		return l.pods.List(labels.Everything())
	}
	return l.pods.Pods(namespace).List(labels.Everything())
}

func (l *listerCluster) Namespaces() ([]*corev1.Namespace, error) {
	return l.namespaces.List(labels.Everything())
}

func (l *listerCluster) Services(namespace string) ([]*corev1.Service, error) {
	if namespace == "" {
		return l.services.List(labels.Everything())
	}
	return l.services.Services(namespace).List(labels.Everything())
}
