// Package accesspolicy turns the access policies associated with EKS access
// entries into RBAC bindings: each entry's users carry the entry's own group
// (eks.EntryGroup), and a ClusterRoleBinding (cluster scope) or RoleBindings
// (namespace scope) bind that group to the ClusterRole granting the
// policy's permissions. Bindings are labelled, so stale ones are removed.
package accesspolicy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-io/berth/controlplane/eks"
)

const (
	labelKey   = "eks.berth.io/access-policy"
	labelValue = "true"
)

// binding is one desired RBAC binding.
type binding struct {
	namespace string // "" for a ClusterRoleBinding
	name      string
	group     string
	role      string
}

func desired(entries []eks.AccessEntry) map[string]binding {
	out := map[string]binding{}
	for _, e := range entries {
		group := eks.EntryGroup(e.PrincipalARN)
		for _, a := range e.Policies {
			p, ok := eks.PolicyByARN(a.PolicyARN)
			if !ok {
				continue
			}
			name := "eks-access:" + strings.TrimPrefix(group, "eks:access-entry:") + ":" + strings.ToLower(strings.TrimPrefix(strings.TrimSuffix(p.Name, "Policy"), "AmazonEKS"))
			if a.ScopeType == "cluster" {
				out["/"+name] = binding{name: name, group: group, role: p.ClusterRole}
				continue
			}
			for _, ns := range a.Namespaces {
				out[ns+"/"+name] = binding{namespace: ns, name: name, group: group, role: p.ClusterRole}
			}
		}
	}
	return out
}

// Reconciler keeps the bindings in step with the store.
type Reconciler struct {
	Client kubernetes.Interface
	Store  *eks.Store
	Log    *slog.Logger
	// Resync is how often bindings are checked without a change (default 1m);
	// it also creates RoleBindings for namespaces created after the policy.
	Resync time.Duration
}

// Run reconciles on every store change and every Resync until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	resync := r.Resync
	if resync == 0 {
		resync = time.Minute
	}
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("access policy bindings", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.Store.Changed():
		case <-t.C:
		}
	}
}

// Reconcile makes one pass. Errors of single bindings (a namespace that
// does not exist yet) do not stop the others.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	want := desired(r.Store.Entries())
	sel := metav1.ListOptions{LabelSelector: labelKey + "=" + labelValue}
	crbs, err := r.Client.RbacV1().ClusterRoleBindings().List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list clusterrolebindings: %w", err)
	}
	rbs, err := r.Client.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list rolebindings: %w", err)
	}
	have := map[string]bool{}
	var errs []string
	for _, b := range crbs.Items {
		k := "/" + b.Name
		if w, ok := want[k]; ok && matches(b.RoleRef, b.Subjects, w) {
			have[k] = true
			continue
		}
		if err := r.Client.RbacV1().ClusterRoleBindings().Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err.Error())
		}
	}
	for _, b := range rbs.Items {
		k := b.Namespace + "/" + b.Name
		if w, ok := want[k]; ok && matches(b.RoleRef, b.Subjects, w) {
			have[k] = true
			continue
		}
		if err := r.Client.RbacV1().RoleBindings(b.Namespace).Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err.Error())
		}
	}
	for k, w := range want {
		if have[k] {
			continue
		}
		meta := metav1.ObjectMeta{Name: w.name, Namespace: w.namespace, Labels: map[string]string{labelKey: labelValue}}
		ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: w.role}
		subj := []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: w.group}}
		if w.namespace == "" {
			_, err = r.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subj}, metav1.CreateOptions{})
		} else {
			_, err = r.Client.RbacV1().RoleBindings(w.namespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subj}, metav1.CreateOptions{})
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Sprintf("bind %s: %v", k, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func matches(ref rbacv1.RoleRef, subj []rbacv1.Subject, w binding) bool {
	return ref.Kind == "ClusterRole" && ref.Name == w.role && len(subj) == 1 && subj[0].Kind == rbacv1.GroupKind && subj[0].Name == w.group
}
