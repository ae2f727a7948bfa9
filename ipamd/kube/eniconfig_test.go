package kube

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The VPC CNI's order: the external label, the annotation, the label,
// then "default".
func TestName(t *testing.T) {
	const ann, lab = "k8s.amazonaws.com/eniConfig", "topology.kubernetes.io/zone"
	for _, c := range []struct {
		labels, annotations map[string]string
		want                string
	}{
		{nil, nil, "default"},
		{map[string]string{lab: "us-west-2a"}, nil, "us-west-2a"},
		{map[string]string{lab: "us-west-2a"}, map[string]string{ann: "pods-a"}, "pods-a"},
		{map[string]string{lab: "us-west-2a", ExternalLabel: "ext"}, map[string]string{ann: "pods-a"}, "ext"},
	} {
		if got := Name(c.labels, c.annotations, ann, lab); got != c.want {
			t.Errorf("Name(%v, %v) = %q, want %q", c.labels, c.annotations, got, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	obj := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
			"metadata": map[string]any{"name": "a"}, "spec": spec}}
	}
	ec, err := Parse(obj(map[string]any{"subnet": "subnet-1", "securityGroups": []any{"sg-1", "sg-2"}}))
	if err != nil || ec.Subnet != "subnet-1" || fmt.Sprint(ec.SecurityGroups) != "[sg-1 sg-2]" || ec.Name != "a" {
		t.Fatalf("Parse = %+v, %v", ec, err)
	}
	if ec, err := Parse(obj(map[string]any{"subnet": "subnet-1"})); err != nil || ec.SecurityGroups != nil {
		t.Fatalf("without groups: %+v, %v", ec, err)
	}
	for _, spec := range []map[string]any{{}, {"subnet": 7}, {"subnet": "s", "securityGroups": "sg-1"}} {
		if _, err := Parse(obj(spec)); err == nil || !strings.Contains(err.Error(), `eniconfig "a"`) {
			t.Errorf("Parse(%v) = %v, want an error naming the object", spec, err)
		}
	}
}
