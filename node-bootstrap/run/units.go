// Package run starts containerd and kubelet once their files are written:
// on an AMI as systemd units (one writer per unit, golden-tested), in local
// mode as children of berth-bootstrap, supervised and restarted with
// backoff. The only wait is the one kubelet needs: it exits at once when
// containerd's CRI socket does not answer, so it starts the moment the
// socket does (systemd: After= a Type=notify containerd; supervisor: a
// socket probe), not after a fixed delay.
package run

import (
	"fmt"
	"strings"
)

// Paths of what the systemd mode writes.
const (
	KubeletUnitPath       = "/etc/systemd/system/kubelet.service"
	KubeletEnvPath        = "/etc/berth/kubelet.env"
	ContainerdDropInPath  = "/etc/systemd/system/containerd.service.d/10-berth.conf"
	DefaultKubeletBin     = "/usr/bin/kubelet"
	DefaultContainerdBin  = "/usr/bin/containerd"
	kubeletArgsVar        = "BERTH_KUBELET_ARGS"
	containerdConfigParam = "--config"
)

// UnitOptions are the binaries and files the units refer to.
type UnitOptions struct {
	KubeletBin, ContainerdBin, ContainerdConfig string
}

// GenerateKubeletUnit renders kubelet.service, ordered after containerd
// (Type=notify: ready once its socket serves), since kubelet exits at once
// when the CRI socket does not answer.
func GenerateKubeletUnit(o UnitOptions) []byte {
	return []byte(fmt.Sprintf(`# Written by berth-bootstrap init; rewritten at every boot.
[Unit]
Description=Kubernetes kubelet (berth node)
Documentation=https://github.com/berth-io/berth/tree/main/node-bootstrap
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
EnvironmentFile=%s
ExecStart=%s $%s
Restart=always
RestartSec=2s
RestartForceExitStatus=SIGPIPE
KillMode=process
CPUAccounting=true
MemoryAccounting=true
Slice=runtime.slice

[Install]
WantedBy=multi-user.target
`, KubeletEnvPath, o.KubeletBin, kubeletArgsVar))
}

// GenerateKubeletEnv renders the EnvironmentFile that carries kubelet's
// flags (one per line in the flags file) into ExecStart.
func GenerateKubeletEnv(flags []byte) ([]byte, error) {
	var args []string
	for _, f := range strings.Split(strings.TrimSpace(string(flags)), "\n") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if strings.ContainsAny(f, " \t\"'\\") {
			return nil, fmt.Errorf("kubelet flag %q: whitespace, quotes and backslashes are not allowed", f)
		}
		args = append(args, f)
	}
	return []byte(fmt.Sprintf("# Written by berth-bootstrap init from /etc/berth/kubelet.flags.\n%s=\"%s\"\n", kubeletArgsVar, strings.Join(args, " "))), nil
}

// GenerateContainerdDropIn renders the drop-in that points the
// distribution's containerd.service at berth's configuration.
func GenerateContainerdDropIn(o UnitOptions) []byte {
	return []byte(fmt.Sprintf(`# Written by berth-bootstrap init.
[Unit]
Description=containerd (berth node)

[Service]
ExecStart=
ExecStart=%s %s %s
Slice=runtime.slice
`, o.ContainerdBin, containerdConfigParam, o.ContainerdConfig))
}
