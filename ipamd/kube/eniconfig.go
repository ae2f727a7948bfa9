package kube

// A node's ENIConfig for custom networking
// (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG), found as the Amazon VPC CNI finds
// it: the ENIConfig object (crd.k8s.amazonaws.com/v1alpha1, cluster-scoped)
// named by the node's label vpc.amazonaws.com/externalEniConfig, else its
// annotation ENI_CONFIG_ANNOTATION_DEF, else its label ENI_CONFIG_LABEL_DEF,
// else "default". Read again before each new ENI.

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/berth-io/berth/ipamd/pool"
)

// GVR is the ENIConfig resource.
var GVR = schema.GroupVersionResource{Group: "crd.k8s.amazonaws.com", Version: "v1alpha1", Resource: "eniconfigs"}

var nodes = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}

// ExternalLabel, when a node has it, names its ENIConfig whatever the
// annotation and label say (set out of band, e.g. by kubelet's flags).
const ExternalLabel = "vpc.amazonaws.com/externalEniConfig"

// DefaultName is the ENIConfig of a node that names none.
const DefaultName = "default"

// ENIConfigs reads a node's ENIConfig.
type ENIConfigs struct {
	c                       *Client
	node                    string
	annotationKey, labelKey string
}

// ENIConfigs returns the source of node's ENIConfig (pool.ENIConfigs).
func (c *Client) ENIConfigs(node, annotationKey, labelKey string) *ENIConfigs {
	return &ENIConfigs{c: c, node: node, annotationKey: annotationKey, labelKey: labelKey}
}

// Name picks the ENIConfig name from a node's labels and annotations.
func Name(labels, annotations map[string]string, annotationKey, labelKey string) string {
	if n, ok := labels[ExternalLabel]; ok {
		return n
	}
	if n, ok := annotations[annotationKey]; ok {
		return n
	}
	if n, ok := labels[labelKey]; ok {
		return n
	}
	return DefaultName
}

// Name reads the node and returns the name of the ENIConfig it names.
func (s *ENIConfigs) Name(ctx context.Context) (string, error) {
	node, err := s.c.dyn.Resource(nodes).Get(ctx, s.node, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read node %s: %w", s.node, err)
	}
	return Name(node.GetLabels(), node.GetAnnotations(), s.annotationKey, s.labelKey), nil
}

// ENIConfig reads the node, then the ENIConfig it names.
func (s *ENIConfigs) ENIConfig(ctx context.Context) (pool.ENIConfig, error) {
	name, err := s.Name(ctx)
	if err != nil {
		return pool.ENIConfig{}, err
	}
	obj, err := s.c.dyn.Resource(GVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return pool.ENIConfig{}, fmt.Errorf("read eniconfig %q of node %s: %w", name, s.node, err)
	}
	return Parse(obj)
}

// Parse takes the spec of an ENIConfig object; a subnet is required.
func Parse(obj *unstructured.Unstructured) (pool.ENIConfig, error) {
	ec := pool.ENIConfig{Name: obj.GetName()}
	subnet, _, err := unstructured.NestedString(obj.Object, "spec", "subnet")
	if err != nil {
		return ec, fmt.Errorf("eniconfig %q: spec.subnet: %w", ec.Name, err)
	}
	if subnet == "" {
		return ec, fmt.Errorf("eniconfig %q has no spec.subnet", ec.Name)
	}
	groups, _, err := unstructured.NestedStringSlice(obj.Object, "spec", "securityGroups")
	if err != nil {
		return ec, fmt.Errorf("eniconfig %q: spec.securityGroups: %w", ec.Name, err)
	}
	ec.Subnet, ec.SecurityGroups = subnet, groups
	return ec, nil
}
