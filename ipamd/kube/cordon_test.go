package kube

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestCordoned: a node is cordoned when spec.unschedulable is set (what
// kubectl cordon writes) or it has the taint the node lifecycle controller
// derives from it (what the VPC CNI reads); other NoSchedule taints, or
// the unschedulable taint with another effect, do not count.
func TestCordoned(t *testing.T) {
	for _, c := range []struct {
		name string
		spec map[string]any
		want bool
	}{
		{"schedulable", map[string]any{}, false},
		{"spec.unschedulable", map[string]any{"unschedulable": true}, true},
		{"taint", map[string]any{"taints": []any{map[string]any{"key": UnschedulableTaint, "effect": "NoSchedule"}}}, true},
		{"other taint", map[string]any{"taints": []any{map[string]any{"key": "dedicated", "effect": "NoSchedule"}}}, false},
		{"other effect", map[string]any{"taints": []any{map[string]any{"key": UnschedulableTaint, "effect": "PreferNoSchedule"}}}, false},
		{"unschedulable false", map[string]any{"unschedulable": false}, false},
	} {
		obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node", "spec": c.spec}}
		if got := Cordoned(obj); got != c.want {
			t.Errorf("%s: cordoned %v, want %v", c.name, got, c.want)
		}
	}
}
