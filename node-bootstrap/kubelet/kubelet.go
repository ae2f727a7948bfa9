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
	"path/filepath"
	"sort"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
	"github.com/berth-io/berth/deploy/addons"
	"github.com/berth-io/berth/internal/maxpods"
)

// Paths of the files berth-bootstrap writes on a node (under --root).
const (
	ConfigPath     = "/etc/kubernetes/kubelet/config.json"
	KubeconfigPath = "/var/lib/kubelet/kubeconfig"
	CAPath         = "/etc/kubernetes/pki/ca.crt"
	FlagsPath      = "/etc/berth/kubelet.flags"
	RootDir        = "/var/lib/kubelet"
	PodLogsDir     = "/var/log/pods"
	VolumePlugins  = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
	// ContainerdSocket is containerd's CRI endpoint.
	ContainerdSocket = "/run/containerd/containerd.sock"
	// TokenCommand is the berth CLI an AMI installs.
	TokenCommand = "/usr/bin/berth"
)

// Paths are where kubelet finds its files. On an AMI (and in image builds
// under --root) they are the absolute paths above; in local mode, where
// several nodes share one host, they are prefixed with the node's root.
type Paths struct {
	Config, Kubeconfig, CA, Flags, RootDir, PodLogsDir, VolumePlugins, ContainerdSocket string
}

// DefaultPaths are a node's paths.
func DefaultPaths() Paths {
	return Paths{Config: ConfigPath, Kubeconfig: KubeconfigPath, CA: CAPath, Flags: FlagsPath, RootDir: RootDir,
		PodLogsDir: PodLogsDir, VolumePlugins: VolumePlugins, ContainerdSocket: ContainerdSocket}
}

// Under prefixes every path with root.
func (p Paths) Under(root string) Paths {
	j := func(s string) string { return filepath.Join(root, s) }
	return Paths{Config: j(p.Config), Kubeconfig: j(p.Kubeconfig), CA: j(p.CA), Flags: j(p.Flags), RootDir: j(p.RootDir),
		PodLogsDir: j(p.PodLogsDir), VolumePlugins: j(p.VolumePlugins), ContainerdSocket: j(p.ContainerdSocket)}
}

// Options are the facts of the host kubelet runs on.
type Options struct {
	Paths Paths
	// Local: the node is a network namespace on a shared host, kubelet a
	// child of berth-bootstrap: the cgroupfs driver (no systemd), no QoS
	// or node-allocatable cgroups (several kubelets share the host's
	// cgroups), oomScoreAdj 0 (a negative score needs CAP_SYS_RESOURCE).
	Local bool
	// CgroupV1 is set when the host has cgroup v1, which kubelet refuses
	// unless failCgroupV1 is false; berth sets that only in local mode.
	CgroupV1 bool
	// TokenCommand is the berth binary kubelet's exec plugin runs.
	TokenCommand string
	// Region is the region the token is signed for.
	Region string
}

// Node is what discovery found out about the instance.
type Node struct {
	InstanceID, AvailabilityZone, PrivateIP, NodeName string
}

// ClusterDNS is the tenth address of the service CIDR, as EKS uses (and
// the control plane's kube-dns Service takes).
func ClusterDNS(serviceCIDR string) (string, error) {
	a, err := addons.ClusterDNS(serviceCIDR)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// GenerateConfig renders config.json: berth's defaults, then the user's
// kubelet.config merged key by key (validated against
// KubeletConfiguration: a misspelt key is an error), with maxPods and
// kube-reserved from the one resolver so they always agree.
func GenerateConfig(nc *v1alpha1.NodeConfig, node Node, mp maxpods.Result, opts Options) ([]byte, error) {
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
		"authentication":           map[string]any{"anonymous": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": true, "cacheTTL": "2m0s"}, "x509": map[string]any{"clientCAFile": opts.Paths.CA}},
		"authorization":            map[string]any{"mode": "Webhook", "webhook": map[string]any{"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}},
		"cgroupDriver":             "systemd",
		"clusterDNS":               []string{dns},
		"clusterDomain":            "cluster.local",
		"containerRuntimeEndpoint": "unix://" + opts.Paths.ContainerdSocket,
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
	if opts.Paths.PodLogsDir != PodLogsDir {
		base["podLogsDir"] = opts.Paths.PodLogsDir
	}
	if opts.Paths.VolumePlugins != VolumePlugins {
		base["volumePluginDir"] = opts.Paths.VolumePlugins
	}
	if opts.Local {
		base["cgroupDriver"] = "cgroupfs"
		base["cgroupsPerQOS"] = false
		base["enforceNodeAllocatable"] = []string{}
		base["oomScoreAdj"] = 0
		if opts.CgroupV1 {
			base["failCgroupV1"] = false
		}
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
func GenerateKubeconfig(nc *v1alpha1.NodeConfig, opts Options) ([]byte, error) {
	c := nc.Spec.Cluster
	if c.APIServerEndpoint == "" || c.Name == "" {
		return nil, fmt.Errorf("kubeconfig needs spec.cluster.name and apiServerEndpoint")
	}
	if opts.Region == "" || opts.TokenCommand == "" {
		return nil, fmt.Errorf("kubeconfig needs the region and the token command")
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
      apiVersion: client.authentication.k8s.io/v1
      command: %[6]s
      args: ["token", "--cluster-name", %[4]q, "--region", %[5]q]
      interactiveMode: Never
      provideClusterInfo: false
`, c.Name, c.APIServerEndpoint, opts.Paths.CA, c.Name, opts.Region, opts.TokenCommand)), nil
}

// GenerateFlags renders kubelet's command line: berth's flags, then the
// user's (later flags win in kubelet), sorted within berth's own set.
func GenerateFlags(nc *v1alpha1.NodeConfig, node Node, opts Options) []byte {
	own := []string{
		"--config=" + opts.Paths.Config,
		"--kubeconfig=" + opts.Paths.Kubeconfig,
		"--node-ip=" + node.PrivateIP,
		"--hostname-override=" + node.NodeName,
		"--cloud-provider=external",
	}
	if opts.Paths.RootDir != RootDir {
		own = append(own, "--root-dir="+opts.Paths.RootDir)
	}
	sort.Strings(own)
	return []byte(strings.Join(append(own, nc.Spec.Kubelet.Flags...), "\n") + "\n")
}
