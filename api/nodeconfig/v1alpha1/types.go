// Package v1alpha1 is the NodeConfig API (node.eks.aws/v1alpha1), the
// node configuration EKS AMIs read from user data, kept field-compatible
// so existing launch templates work with berth-bootstrap.
package v1alpha1

import "encoding/json"

// GroupVersion is the apiVersion of NodeConfig.
const GroupVersion = "node.eks.aws/v1alpha1"

// Kind is the kind of NodeConfig.
const Kind = "NodeConfig"

// NodeConfig configures a node.
type NodeConfig struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Spec       NodeConfigSpec `json:"spec"`
}

// NodeConfigSpec is the desired node configuration.
type NodeConfigSpec struct {
	Cluster    ClusterDetails    `json:"cluster,omitempty"`
	Kubelet    KubeletOptions    `json:"kubelet,omitempty"`
	Containerd ContainerdOptions `json:"containerd,omitempty"`
	Instance   InstanceOptions   `json:"instance,omitempty"`
}

// ClusterDetails say which cluster to join.
type ClusterDetails struct {
	Name                 string `json:"name,omitempty"`
	APIServerEndpoint    string `json:"apiServerEndpoint,omitempty"`
	CertificateAuthority []byte `json:"certificateAuthority,omitempty"` // base64 in YAML, PEM once decoded
	CIDR                 string `json:"cidr,omitempty"`
	// ID is the cluster ID of local (Outposts) clusters.
	ID string `json:"id,omitempty"`
}

// KubeletOptions adjust kubelet.
type KubeletOptions struct {
	// Config is merged over berth's KubeletConfiguration (a drop-in).
	Config map[string]json.RawMessage `json:"config,omitempty"`
	// Flags are extra kubelet command-line flags.
	Flags []string `json:"flags,omitempty"`
}

// ContainerdOptions adjust containerd.
type ContainerdOptions struct {
	// Config is TOML merged over berth's containerd configuration.
	Config string `json:"config,omitempty"`
}

// InstanceOptions configure the instance itself.
type InstanceOptions struct {
	LocalStorage LocalStorageOptions `json:"localStorage,omitempty"`
}

// LocalStorageOptions configure instance-store volumes.
type LocalStorageOptions struct {
	// Strategy is "RAID0", "RAID10", "Mount" or empty (leave them alone).
	Strategy string `json:"strategy,omitempty"`
}
