package crdinstall

import (
	"context"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/berth-io/berth/deploy/crds"
)

// Two control planes of different versions start together: the update of
// the one that loses the race conflicts, and it looks again instead of
// failing `serve`.
func TestInstallRetriesAConflict(t *testing.T) {
	name := "eniconfigs.crd.k8s.amazonaws.com"
	old := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name,
		Annotations: map[string]string{annotationManifest: "an older manifest"}, ResourceVersion: "1"}}
	client := fake.NewClientset(old)
	conflicts := 0
	client.PrependReactor("update", "customresourcedefinitions", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			conflicts++ // the other control plane wrote it first
			return true, nil, apierrors.NewConflict(apiextensionsv1.Resource("customresourcedefinitions"), name, nil)
		}
		return false, nil, nil
	})
	// The fake has no apiextensions controller: a stored CRD reads as
	// Established.
	client.PrependReactor("get", "customresourcedefinitions", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj, err := client.Tracker().Get(a.GetResource(), "", a.(k8stesting.GetAction).GetName())
		if err != nil {
			return true, nil, err
		}
		crd := obj.(*apiextensionsv1.CustomResourceDefinition).DeepCopy()
		crd.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}
		return true, crd, nil
	})
	if err := Install(context.Background(), client, crds.ENIConfig); err != nil {
		t.Fatalf("Install: %v", err)
	}
	got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || got.Annotations[annotationManifest] == "an older manifest" || got.Spec.Group != "crd.k8s.amazonaws.com" || conflicts != 1 {
		t.Fatalf("after the conflict: %v %+v %v (%d conflicts)", got.Annotations, got.Spec.Names, err, conflicts)
	}
}
