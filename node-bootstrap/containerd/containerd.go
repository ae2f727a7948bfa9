// Package containerd renders containerd's configuration for a node:
// berth's base (CRI with runc, CNI paths) with the user's
// spec.containerd.config TOML deep-merged over it, table by table (the
// user's keys win; containerd's own imports would replace whole tables).
package containerd

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// ConfigPath is where containerd's configuration goes on a node.
const ConfigPath = "/etc/containerd/config.toml"

// Options say where containerd keeps its state.
type Options struct {
	// Root prefixes containerd's root, state, socket and opt directories:
	// "" on an AMI; the node's root in local mode, where several nodes and
	// the host share one machine.
	Root string
	// Local: no systemd, so runc uses cgroupfs; the CNI plugins are the
	// node's own (under Root); and containerd gives sandboxes no lower OOM
	// score than its own, since a negative oom_score_adj needs
	// CAP_SYS_RESOURCE, which a shared host may not grant.
	Local bool
}

// CNIBinDir is where containerd looks for CNI plugins: the host's
// /opt/cni/bin on an AMI, the node's own under Root in local mode.
func CNIBinDir(opts Options) string {
	if opts.Local {
		return filepath.Join("/", opts.Root, "opt/cni/bin")
	}
	return "/opt/cni/bin"
}

// Socket is containerd's gRPC (CRI) socket under opts.Root.
func Socket(opts Options) string {
	return filepath.Join("/", opts.Root, "run/containerd/containerd.sock")
}

// GenerateConfig renders config.toml (schema version 2, which containerd
// 1.6 to 2.x read). Bad user TOML is an error naming the field, so nothing
// is written.
func GenerateConfig(userTOML string, opts Options) ([]byte, error) {
	p := func(s string) string { return filepath.Join("/", opts.Root, s) }
	cniBin := CNIBinDir(opts)
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q

[grpc]
address = %q

[plugins."io.containerd.internal.v1.opt"]
path = %q

[plugins."io.containerd.grpc.v1.cri"]
restrict_oom_score_adj = %t

[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
discard_unpacked_layers = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = %t

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = %q
conf_dir = %q
`, p("/var/lib/containerd"), p("/run/containerd"), Socket(opts), p("/opt/containerd"), opts.Local, !opts.Local, cniBin, p("/etc/cni/net.d"))
	if strings.TrimSpace(userTOML) == "" {
		return []byte(b.String()), nil
	}
	var base, user map[string]any
	if err := toml.Unmarshal([]byte(b.String()), &base); err != nil {
		return nil, fmt.Errorf("berth's containerd config: %w", err)
	}
	if err := toml.Unmarshal([]byte(userTOML), &user); err != nil {
		return nil, fmt.Errorf("spec.containerd.config: %w", err)
	}
	merge(base, user)
	var out bytes.Buffer
	out.WriteString("# berth's containerd configuration with spec.containerd.config merged over it.\n")
	enc := toml.NewEncoder(&out)
	enc.SetIndentTables(false)
	if err := enc.Encode(base); err != nil {
		return nil, fmt.Errorf("encode containerd config: %w", err)
	}
	return out.Bytes(), nil
}

// merge copies src into dst: tables merge key by key, anything else
// (values, arrays) is replaced.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}
