// Package containerd renders containerd's configuration for a node:
// berth's base (CRI with runc, CNI paths) with the user's
// spec.containerd.config TOML appended, so later tables win.
package containerd

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ConfigPath is where containerd's configuration goes on a node.
const ConfigPath = "/etc/containerd/config.toml"

// Options say where containerd keeps its state.
type Options struct {
	// Root prefixes containerd's root, state, socket and opt directories:
	// "" on an AMI; the node's root in local mode, where several nodes and
	// the host share one machine.
	Root string
	// Local: no systemd, so runc uses cgroupfs.
	Local bool
}

// Socket is containerd's gRPC (CRI) socket under opts.Root.
func Socket(opts Options) string {
	return filepath.Join("/", opts.Root, "run/containerd/containerd.sock")
}

// GenerateConfig renders config.toml (schema version 2, which containerd
// 1.6 to 2.x read).
func GenerateConfig(userTOML string, opts Options) []byte {
	p := func(s string) string { return filepath.Join("/", opts.Root, s) }
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q

[grpc]
address = %q

[plugins."io.containerd.internal.v1.opt"]
path = %q

[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
discard_unpacked_layers = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = %t

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "/opt/cni/bin"
conf_dir = %q
`, p("/var/lib/containerd"), p("/run/containerd"), Socket(opts), p("/opt/containerd"), !opts.Local, p("/etc/cni/net.d"))
	if userTOML != "" {
		b.WriteString("\n# spec.containerd.config\n")
		b.WriteString(strings.TrimRight(userTOML, "\n"))
		b.WriteString("\n")
	}
	return []byte(b.String())
}
