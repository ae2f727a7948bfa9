package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/ipamd/config"
)

// ConflistName is the file ipamd writes into the CNI config dir.
const ConflistName = "10-berth.conflist"

// DefaultStateDir holds CheckpointName, as on the VPC CNI's nodes.
const (
	DefaultStateDir = "/var/run/aws-node"
	CheckpointName  = "ipam.json"
)

// NetworkName is the CNI network name (kept from the VPC CNI, so
// checkpoints and GC match).
const NetworkName = "aws-cni"

// DefaultNPASocket is where berth-cni finds the network policy agent
// (aws-node's path).
const DefaultNPASocket = "/var/run/aws-node/npa.sock"

func conflist(socket, datapathSocket, npaSocket, checkpoint, cniVersion string, cfg config.Config, portmap bool) ([]byte, error) {
	plugin := map[string]any{
		"type":           "berth-cni",
		"vethPrefix":     cfg.VethPrefix,
		"mtu":            cfg.PodMTU, // the pod veth's (POD_MTU); ENIs keep AWS_VPC_ENI_MTU
		"pluginLogFile":  cfg.PluginLogFile,
		"pluginLogLevel": cfg.PluginLogLevel,
		// The runtime passes the pod's annotations: berth-cni reads the
		// multi-NIC one (k8s.amazonaws.com/nicConfig), as aws-cni does.
		"capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true},
	}
	if socket != DefaultSocket {
		plugin["ipamdSocket"] = socket
	}
	if datapathSocket != podwire.DefaultSocket {
		plugin["datapathSocket"] = datapathSocket
	}
	if npaSocket != "" && npaSocket != DefaultNPASocket {
		plugin["npaSocket"] = npaSocket
	}
	if checkpoint != filepath.Join(DefaultStateDir, CheckpointName) {
		// GC and CHECK read the checkpoint.
		plugin["ipamStateFile"] = checkpoint
	}
	plugins := []any{plugin}
	// In aws-node's order: portmap, then bandwidth, then tuning.
	if portmap {
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true})
	}
	if cfg.BandwidthPlugin {
		plugins = append(plugins, map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	}
	if cfg.DisablePodV6 {
		plugins = append(plugins, map[string]any{"type": "tuning", "sysctl": map[string]string{
			"net.ipv6.conf.all.disable_ipv6":     "1",
			"net.ipv6.conf.default.disable_ipv6": "1",
			"net.ipv6.conf.lo.disable_ipv6":      "1",
		}})
	}
	list := map[string]any{"cniVersion": cniVersion, "name": NetworkName, "plugins": plugins}
	if cniVersion == "1.1.0" {
		// CNI 1.1's negotiation: a runtime takes the highest of
		// cniVersions it implements (containerd 2: 1.1.0, with STATUS
		// and GC); one from before 1.1 reads cniVersion (containerd 1.6
		// and 1.7 refuse a 1.1.0 result).
		list["cniVersion"], list["cniVersions"] = "1.0.0", []string{"1.0.0", "1.1.0"}
	}
	return json.MarshalIndent(list, "", "  ")
}

// writeConflist writes the conflist atomically.
func writeConflist(dir, socket, datapathSocket, npaSocket, checkpoint, cniVersion string, cfg config.Config, portmap bool) error {
	b, err := conflist(socket, datapathSocket, npaSocket, checkpoint, cniVersion, cfg, portmap)
	if err != nil {
		return err
	}
	return atomicWrite(filepath.Join(dir, ConflistName), append(b, '\n'), 0o644)
}

// VPCCNIConflist is the conflist aws-node writes. It sorts before berth's,
// and the runtime uses the first file of the directory.
const VPCCNIConflist = "10-aws.conflist"

// retireVPCCNIConflist renames aws-node's conflist out of the runtime's
// sight (a name without .conf/.conflist/.json), so that a node taken over
// from aws-node uses berth-cni; "" when there was none. Only a file that
// is the VPC CNI's (network aws-cni, its aws-cni plugin) is touched. An
// aws-node started again writes it anew and, sorting first, takes over.
func retireVPCCNIConflist(dir string) (string, error) {
	path := filepath.Join(dir, VPCCNIConflist)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	type plugin struct {
		Type string `json:"type"`
	}
	var c struct {
		Name    string   `json:"name"`
		Plugins []plugin `json:"plugins"`
	}
	if json.Unmarshal(b, &c) != nil || c.Name != NetworkName || !slices.Contains(c.Plugins, plugin{Type: "aws-cni"}) {
		return "", nil // not the VPC CNI's: leave it to its owner
	}
	aside := path + ".berth-bak"
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("move aws-node's conflist aside: %w", err)
	}
	return aside, nil
}

// installPlugin copies berth-cni from beside this binary into dir.
func installPlugin(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find berth-cni: %w", err)
	}
	src := filepath.Join(filepath.Dir(self), "berth-cni")
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("berth-cni must be installed beside berth-ipamd: %w", err)
	}
	defer in.Close()
	b, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	return atomicWrite(filepath.Join(dir, "berth-cni"), b, 0o755)
}

func atomicWrite(path string, data []byte, perm os.FileMode) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("mkdir for %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}
