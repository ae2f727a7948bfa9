package kube

// Whether the node is cordoned, for AWS_MANAGE_ENIS_NON_SCHEDULABLE=false
// (the VPC CNI's default): on an unschedulable node ipamd attaches no ENI
// or address and frees no ENI, so a node being drained for termination does
// not churn ENIs. The VPC CNI reads the taint
// node.kubernetes.io/unschedulable:NoSchedule, which the node lifecycle
// controller sets from spec.unschedulable; either counts here, so a
// `kubectl cordon` applies before that controller has run.

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// UnschedulableTaint is the taint that marks a cordoned node.
const UnschedulableTaint = "node.kubernetes.io/unschedulable"

// Cordon follows one node's schedulability with a watch (one object, no
// informer). Until the first read it reports the node schedulable, as the
// VPC CNI does when it cannot read the node.
type Cordon struct {
	c        *Client
	node     string
	log      *slog.Logger
	changed  func()
	cordoned atomic.Bool
}

// Cordon returns the follower of node's schedulability; changed (may be
// nil) is called after every change. Start it with Start or Run.
func (c *Client) Cordon(node string, log *slog.Logger, changed func()) *Cordon {
	return &Cordon{c: c, node: node, log: log, changed: changed}
}

// Cordoned reports whether the node is unschedulable.
func (n *Cordon) Cordoned() bool { return n.cordoned.Load() }

func (n *Cordon) set(v bool) {
	if n.cordoned.Swap(v) != v {
		n.log.Info("node schedulability changed", "node", n.node, "cordoned", v)
		if n.changed != nil {
			n.changed()
		}
	}
}

// Cordoned reads a Node object's schedulability.
func Cordoned(obj *unstructured.Unstructured) bool {
	if u, _, _ := unstructured.NestedBool(obj.Object, "spec", "unschedulable"); u {
		return true
	}
	taints, _, _ := unstructured.NestedSlice(obj.Object, "spec", "taints")
	for _, t := range taints {
		m, ok := t.(map[string]any)
		if ok && m["key"] == UnschedulableTaint && m["effect"] == "NoSchedule" {
			return true
		}
	}
	return false
}

// Start reads the node once, so that the pool's first look knows (a
// cordoned node whose ipamd restarts must not grow meanwhile), then
// follows it in the background with Run.
func (n *Cordon) Start(ctx context.Context) {
	if obj, err := n.c.dyn.Resource(nodes).Get(ctx, n.node, metav1.GetOptions{}); err != nil {
		n.log.Warn("read the node's schedulability; following it in the background", "node", n.node, "err", err)
	} else {
		n.set(Cordoned(obj))
	}
	go n.Run(ctx)
}

// Run reads the node and watches it until ctx ends, reading it again
// (with a backoff up to 30 s) whenever the watch ends or fails.
func (n *Cordon) Run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := n.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.log.Warn("follow the node's schedulability", "node", n.node, "err", err, "retry", backoff)
		} else {
			backoff = time.Second // a watch that ran and ended: again in a second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if err != nil {
			backoff = min(2*backoff, 30*time.Second)
		}
	}
}

// follow reads the node once, then applies its watch events until the
// watch ends.
func (n *Cordon) follow(ctx context.Context) error {
	obj, err := n.c.dyn.Resource(nodes).Get(ctx, n.node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read node %s: %w", n.node, err)
	}
	n.set(Cordoned(obj))
	// A watch outlives the client's request timeout, so it goes through
	// the client without one; the server ends it after TimeoutSeconds.
	timeout := int64(300)
	w, err := n.c.watch.Resource(nodes).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", n.node).String(),
		ResourceVersion: obj.GetResourceVersion(), TimeoutSeconds: &timeout,
	})
	if err != nil {
		return fmt.Errorf("watch node %s: %w", n.node, err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified:
			if o, ok := ev.Object.(*unstructured.Unstructured); ok {
				n.set(Cordoned(o))
			}
		case watch.Deleted:
			n.set(false)
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				return nil // the usual end of a long watch: read again
			}
			return fmt.Errorf("watch node %s: %w", n.node, err)
		}
	}
	return nil
}
