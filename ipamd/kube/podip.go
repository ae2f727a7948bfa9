package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// PodIPsAnnotation is where ANNOTATE_POD_IP puts a pod's address, as the
// VPC CNI does: policy engines (Calico) read it before the kubelet reports
// the pod's status.
const PodIPsAnnotation = "vpc.amazonaws.com/pod-ips"

var pods = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// PodIPs annotates pods with their addresses.
type PodIPs struct{ c *Client }

// PodIPs returns the annotator of ANNOTATE_POD_IP.
func (c *Client) PodIPs() *PodIPs { return &PodIPs{c: c} }

// Set writes ip into the pod's annotation (a merge patch: one request,
// whatever else the pod's annotations hold).
func (p *PodIPs) Set(ctx context.Context, namespace, name, ip string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{PodIPsAnnotation: ip}}})
	if err != nil {
		return err
	}
	if _, err := p.c.dyn.Resource(pods).Namespace(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate pod %s/%s with %s: %w", namespace, name, ip, err)
	}
	return nil
}

// Clear empties the annotation if it still holds ip, in one request (a
// JSON patch whose test fails when the pod's newer ADD has changed it). A
// pod that is gone, or whose annotation is another address, is success.
func (p *PodIPs) Clear(ctx context.Context, namespace, name, ip string) error {
	path := "/metadata/annotations/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(PodIPsAnnotation)
	patch, err := json.Marshal([]map[string]string{
		{"op": "test", "path": path, "value": ip},
		{"op": "replace", "path": path, "value": ""},
	})
	if err != nil {
		return err
	}
	_, err = p.c.dyn.Resource(pods).Namespace(namespace).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case unprocessable(err):
		return nil // the test failed: not this address any more, or no annotation
	}
	return fmt.Errorf("clear the address annotation of pod %s/%s: %w", namespace, name, err)
}

// unprocessable reports the API server's 422: a JSON patch whose test
// failed.
func unprocessable(err error) bool {
	var s apierrors.APIStatus
	return errors.As(err, &s) && s.Status().Code == http.StatusUnprocessableEntity
}
