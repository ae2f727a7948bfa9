// Package kubelet renders what kubelet needs on a node: its configuration
// (a KubeletConfiguration with the user's drop-in merged over berth's
// defaults), its kubeconfig (authenticating with the `berth token` exec
// plugin), the cluster CA and its flags. Each file has one pure generator
// beside the function that writes it.
package kubelet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
	"github.com/berth-io/berth/internal/maxpods"
)

// Paths of the files berth-bootstrap writes (under --root).
const (
	ConfigPath     = "/etc/kubernetes/kubelet/config.json"
	KubeconfigPath = "/var/lib/kubelet/kubeconfig"
	CAPath         = "/etc/kubernetes/pki/ca.crt"
	FlagsPath      = "/etc/berth/kubelet.flags"
)

// Node is what discovery found out about the instance.
type Node struct {
	InstanceID, AvailabilityZone, PrivateIP, NodeName string
}

// ClusterDNS is the tenth address of the service CIDR, as EKS uses.
func ClusterDNS(serviceCIDR string) (string, error) {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return "", fmt.Errorf("service cidr %q: %w", serviceCIDR, err)
	}
	a := p.Masked().Addr()
	for i := 0; i < 10; i++ {
		a = a.Next()
	}
	return a.String(), nil
}

// GenerateConfig renders config.json: berth's defaults, then the user's
// kubelet.config merged key by key (validated against
// KubeletConfiguration: a misspelt key is an error), with maxPods and
// kube-reserved from the one resolver so they always agree.
func GenerateConfig(nc *v1alpha1.NodeConfig, node Node, mp maxpods.Result) ([]byte, error) {
	dns, err := ClusterDNS(nc.Spec.Cluster.CIDR)
	if err != nil {
		return nil, err
	}
	// Only what berth sets is written (kubelet defaults the rest); the
	// result is validated against KubeletConfiguration below.
	base := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  "0.0.0.0",
		"authentication":           map[string]any{"anonymous": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": true, "cacheTTL": "2m0s"}, "x509": map[string]any{"clientCAFile": CAPath}},
		"authorization":            map[string]any{"mode": "Webhook", "webhook": map[string]any{"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}},
		"cgroupDriver":             "systemd",
		"clusterDNS":               []string{dns},
		"clusterDomain":            "cluster.local",
		"containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
		"evictionHard":             map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%"},
		"hairpinMode":              "hairpin-veth",
		"maxPods":                  mp.MaxPods,
		"protectKernelDefaults":    true,
		"providerID":               fmt.Sprintf("aws:///%s/%s", node.AvailabilityZone, node.InstanceID),
		"readOnlyPort":             0,
		"serializeImagePulls":      false,
		"serverTLSBootstrap":       true,
		"kubeReserved": map[string]string{
			"cpu":               fmt.Sprintf("%dm", mp.KubeReservedCPUMilli),
			"memory":            fmt.Sprintf("%dMi", mp.KubeReservedMemoryMiB),
			"ephemeral-storage": "1Gi",
		},
	}
	b, err := json.Marshal(base)
	if err != nil {
		return nil, fmt.Errorf("encode kubelet config: %w", err)
	}
	var merged map[string]json.RawMessage
	if err := json.Unmarshal(b, &merged); err != nil {
		return nil, err
	}
	for k, v := range nc.Spec.Kubelet.Config {
		merged[k] = v
	}
	b, err = json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	// Validate the result strictly against the type.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var final kubeletv1beta1.KubeletConfiguration
	if err := dec.Decode(&final); err != nil {
		return nil, fmt.Errorf("spec.kubelet.config: %w", err)
	}
	if int(final.MaxPods) != mp.MaxPods {
		return nil, fmt.Errorf("spec.kubelet.config.maxPods %d disagrees with the resolved %d", final.MaxPods, mp.MaxPods)
	}
	// json.MarshalIndent of a map sorts keys: deterministic output.
	return json.MarshalIndent(merged, "", "  ")
}

// GenerateKubeconfig renders kubelet's kubeconfig: the cluster's endpoint
// and CA, and the berth token exec plugin for the node's IAM identity.
func GenerateKubeconfig(nc *v1alpha1.NodeConfig, region string) ([]byte, error) {
	c := nc.Spec.Cluster
	if c.APIServerEndpoint == "" || c.Name == "" {
		return nil, fmt.Errorf("kubeconfig needs spec.cluster.name and apiServerEndpoint")
	}
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority: %[3]s
contexts:
- name: kubelet
  context:
    cluster: %[1]s
    user: kubelet
current-context: kubelet
users:
- name: kubelet
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: /usr/bin/berth
      args: ["token", "--cluster-name", %[4]q, "--region", %[5]q]
      interactiveMode: Never
      provideClusterInfo: false
`, c.Name, c.APIServerEndpoint, CAPath, c.Name, region)), nil
}

// GenerateFlags renders kubelet's command line: berth's flags, then the
// user's (later flags win in kubelet), sorted within berth's own set.
func GenerateFlags(nc *v1alpha1.NodeConfig, node Node) []byte {
	own := []string{
		"--config=" + ConfigPath,
		"--kubeconfig=" + KubeconfigPath,
		"--node-ip=" + node.PrivateIP,
		"--hostname-override=" + node.NodeName,
		"--cloud-provider=external",
	}
	sort.Strings(own)
	return []byte(strings.Join(append(own, nc.Spec.Kubelet.Flags...), "\n") + "\n")
}
