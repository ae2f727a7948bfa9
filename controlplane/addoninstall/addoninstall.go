// Package addoninstall installs the add-ons EKS gives every new cluster
// (deploy/addons: CoreDNS) into the cluster the control plane serves. As on
// EKS they are self-managed afterwards: a ConfigMap (the Corefile) is
// created once and then belongs to the user; the other objects are
// server-side applied again only when berth's manifest for them changed
// (an upgrade), and objects berth did not make are left alone.
package addoninstall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// AnnotationManifest records the hash of the manifest an object was last
// applied from.
const AnnotationManifest = "berth.io/manifest-sha256"

// FieldManager is the server-side apply manager of berth's writes.
const FieldManager = "berth-controlplane"

// kinds are the kinds add-on manifests may hold and where they live; an
// unknown kind is a manifest bug, refused before anything is written.
var kinds = map[schema.GroupVersionKind]struct {
	resource   string
	namespaced bool
}{
	{Version: "v1", Kind: "ServiceAccount"}:                                         {"serviceaccounts", true},
	{Version: "v1", Kind: "ConfigMap"}:                                              {"configmaps", true},
	{Version: "v1", Kind: "Service"}:                                                {"services", true},
	{Group: "apps", Version: "v1", Kind: "Deployment"}:                              {"deployments", true},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"}:                   {"poddisruptionbudgets", true},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}:        {"clusterroles", false},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}: {"clusterrolebindings", false},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}:        {"rolebindings", true},
	{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"}:            {"apiservices", false},
}

// object is one document of a manifest, ready to apply.
type object struct {
	u   *unstructured.Unstructured
	gvr schema.GroupVersionResource
	ns  bool
	sum string
}

func (o object) String() string {
	if o.u.GetNamespace() != "" {
		return o.u.GetKind() + " " + o.u.GetNamespace() + "/" + o.u.GetName()
	}
	return o.u.GetKind() + " " + o.u.GetName()
}

// parse splits a multi-document manifest into objects, each annotated with
// the hash of its own document.
func parse(manifest []byte) ([]object, error) {
	var objs []object
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for i := 1; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := u.GroupVersionKind()
		k, ok := kinds[gvk]
		if !ok {
			return nil, fmt.Errorf("manifest document %d: kind %s is not one add-ons may hold", i, gvk)
		}
		if u.GetName() == "" || k.namespaced != (u.GetNamespace() != "") {
			return nil, fmt.Errorf("manifest document %d (%s): want a name and a namespace only if namespaced", i, gvk.Kind)
		}
		canon, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", i, err)
		}
		sum := sha256.Sum256(canon)
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[AnnotationManifest] = hex.EncodeToString(sum[:])
		u.SetAnnotations(ann)
		objs = append(objs, object{u: u, gvr: gvk.GroupVersion().WithResource(k.resource), ns: k.namespaced, sum: ann[AnnotationManifest]})
	}
	if len(objs) == 0 {
		return nil, errors.New("manifest holds no objects")
	}
	return objs, nil
}

// Install applies a manifest's objects in order. A new cluster's apiserver
// may not have made kube-system yet: each object is retried for up to a
// minute.
func Install(ctx context.Context, client dynamic.Interface, manifest []byte, log *slog.Logger) error {
	objs, err := parse(manifest)
	if err != nil {
		return err
	}
	for _, o := range objs {
		var last error
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			last = install(ctx, client, o, log)
			return last == nil, nil
		})
		if err != nil {
			return fmt.Errorf("install %s: %w", o, errors.Join(last, err))
		}
	}
	return nil
}

func install(ctx context.Context, client dynamic.Interface, o object, log *slog.Logger) error {
	var r dynamic.ResourceInterface = client.Resource(o.gvr)
	if o.ns {
		r = client.Resource(o.gvr).Namespace(o.u.GetNamespace())
	}
	cur, err := r.Get(ctx, o.u.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		log.Info("installing add-on object", "object", o.String())
	case err != nil:
		return err
	default:
		was, ours := cur.GetAnnotations()[AnnotationManifest]
		switch {
		case was == o.sum:
			return nil
		case !ours:
			log.Info("add-on object exists and is not berth's: left alone", "object", o.String())
			return nil
		case o.u.GetKind() == "ConfigMap":
			// The user's configuration (a Corefile) outlives upgrades.
			return nil
		}
		log.Info("updating add-on object to this berth's manifest", "object", o.String())
	}
	_, err = r.Apply(ctx, o.u.GetName(), o.u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	return err
}
