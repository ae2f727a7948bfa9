// Package crdinstall installs the CustomResourceDefinitions berth ships
// (deploy/crds) into the cluster it serves, as EKS clusters come with the
// VPC CNI's and the network policy controller's.
package crdinstall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextensionsv1client "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/typed/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// annotationManifest records the hash of the manifest a CRD was installed
// from, so an unchanged CRD is not rewritten at every start.
const annotationManifest = "berth.io/manifest-sha256"

// Install creates the CRD of manifest, or updates it when the manifest
// changed since it was installed, and waits until it is Established.
func Install(ctx context.Context, client apiextensionsclient.Interface, manifest []byte) error {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(manifest, &crd); err != nil {
		return fmt.Errorf("crd manifest: %w", err)
	}
	sum := sha256.Sum256(manifest)
	if crd.Annotations == nil {
		crd.Annotations = map[string]string{}
	}
	crd.Annotations[annotationManifest] = hex.EncodeToString(sum[:])
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	// Control planes starting together (one upgraded) write the same CRD:
	// whoever loses looks again.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return apply(ctx, api, &crd) }); err != nil {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("crd %s not established: %w", crd.Name, err)
	}
	return nil
}

// apply creates crd or updates it to the manifest; a conflict (someone
// else created or wrote it meanwhile) is returned as one, to be retried.
func apply(ctx context.Context, api apiextensionsv1client.CustomResourceDefinitionInterface, crd *apiextensionsv1.CustomResourceDefinition) error {
	cur, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err := api.Create(ctx, crd, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return apierrors.NewConflict(apiextensionsv1.Resource("customresourcedefinitions"), crd.Name, err)
		}
		if err != nil {
			return fmt.Errorf("create crd %s: %w", crd.Name, err)
		}
	case err != nil:
		return fmt.Errorf("get crd %s: %w", crd.Name, err)
	case cur.Annotations[annotationManifest] != crd.Annotations[annotationManifest]:
		next := crd.DeepCopy()
		next.ResourceVersion = cur.ResourceVersion
		if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update crd %s: %w", crd.Name, err)
		}
	}
	return nil
}
