// Package v1alpha1 is the PolicyEndpoint API (networking.k8s.aws/v1alpha1): a
// NetworkPolicy resolved to addresses and port numbers, written by the
// controller in berth-controlplane and read by berth-netpol on each node.
// Field names and JSON match the AWS network policy controller's CRD so its
// agent and ours can read each other's objects.
package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group, Version and Resource name the API.
const (
	Group    = "networking.k8s.aws"
	Version  = "v1alpha1"
	Kind     = "PolicyEndpoint"
	Resource = "policyendpoints"
)

// GroupVersionResource is what dynamic clients and informers need.
var GroupVersionResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Labels and annotations berth puts on every PolicyEndpoint. A policy's
// endpoints may be split into several chunks; the agent treats a policy as
// known only when it holds all ChunkCount chunks of one Generation, so a
// half-written set is never enforced (the old complete set stays in force).
const (
	// LabelPolicyName is the NetworkPolicy's name (its namespace is the object's).
	LabelPolicyName = "berth.io/policy-name"
	// AnnotationGeneration is the controller's revision of the whole set.
	AnnotationGeneration = "berth.io/generation"
	// AnnotationChunkCount is how many chunks form that generation.
	AnnotationChunkCount = "berth.io/chunk-count"
)

// PolicyEndpoint is one chunk of a NetworkPolicy's resolved endpoints.
type PolicyEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec PolicyEndpointSpec `json:"spec"`
}

// PolicyEndpointList is a list of PolicyEndpoints.
type PolicyEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []PolicyEndpoint `json:"items"`
}

// PolicyEndpointSpec is the resolved policy.
type PolicyEndpointSpec struct {
	// PodSelector is the policy's pod selector, so an agent can match a pod
	// that started before the controller listed it.
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// PodSelectorEndpoints are the pods the policy applies to.
	PodSelectorEndpoints []PodEndpoint `json:"podSelectorEndpoints,omitempty"`
	// PolicyRef names the NetworkPolicy.
	PolicyRef PolicyReference `json:"policyRef"`
	// PodIsolation are the directions the policy isolates (its policyTypes).
	PodIsolation []networkingv1.PolicyType `json:"podIsolation,omitempty"`
	// Ingress are the sources allowed in; each entry stands alone.
	Ingress []EndpointInfo `json:"ingress,omitempty"`
	// Egress are the destinations allowed out; each entry stands alone.
	Egress []EndpointInfo `json:"egress,omitempty"`
}

// NetworkAddress is an IP address or a CIDR.
type NetworkAddress string

// PolicyReference names a NetworkPolicy.
type PolicyReference struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// PodEndpoint is one pod a policy applies to.
type PodEndpoint struct {
	HostIP    NetworkAddress `json:"hostIP"`
	PodIP     NetworkAddress `json:"podIP"`
	Name      string         `json:"name"`
	Namespace string         `json:"namespace"`
}

// EndpointInfo allows a CIDR minus its exceptions on some ports. An entry is
// evaluated on its own: the exceptions of one entry never remove addresses
// another entry allows.
type EndpointInfo struct {
	CIDR   NetworkAddress   `json:"cidr"`
	Except []NetworkAddress `json:"except,omitempty"`
	// Ports empty means every port of every protocol.
	Ports []Port `json:"ports,omitempty"`
}

// Port is a protocol and a port or port range; a nil Port is every port of
// the protocol, a nil Protocol is TCP (as in NetworkPolicy).
type Port struct {
	Protocol *corev1.Protocol `json:"protocol,omitempty"`
	Port     *int32           `json:"port,omitempty"`
	EndPort  *int32           `json:"endPort,omitempty"`
}
