package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
)

// kube-proxy runs on each local node as EKS's kube-proxy add-on does: in
// iptables mode, as the service account kube-system/kube-proxy bound to
// system:node-proxier. Without images to run it as a DaemonSet, berth up
// runs it in the instance's network namespace beside berth-ipamd.

const kubeProxyRBAC = `apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-proxy, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "berth:kube-proxy"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-proxier"}
subjects: [{kind: ServiceAccount, name: kube-proxy, namespace: kube-system}]
`

// kubeProxyTokenLife is how long a kube-proxy token lives; each berth up
// writes a new one.
const kubeProxyTokenLife = "8760h"

// kubeProxyKubeconfig makes kube-proxy's identity and writes the
// kubeconfig every node's kube-proxy reads (mode 0600): the cluster's
// endpoint, which nodes reach, and a service-account token.
func kubeProxyKubeconfig(ctx context.Context, binDir, kubeconfig, state string, cl *ekstypes.Cluster) (string, error) {
	kubectl := func(stdin string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
		}
		return out, nil
	}
	if _, err := kubectl(kubeProxyRBAC, "apply", "-f", "-"); err != nil {
		return "", err
	}
	token, err := kubectl("", "create", "token", "kube-proxy", "--namespace", "kube-system", "--duration", kubeProxyTokenLife)
	if err != nil {
		return "", err
	}
	ca, err := base64.StdEncoding.DecodeString(aws.ToString(cl.CertificateAuthority.Data))
	if err != nil {
		return "", fmt.Errorf("cluster CA: %w", err)
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: kube-proxy
  user:
    token: %[4]s
contexts:
- name: kube-proxy@%[1]s
  context: {cluster: %[1]s, user: kube-proxy}
current-context: kube-proxy@%[1]s
`, aws.ToString(cl.Name), aws.ToString(cl.Endpoint), base64.StdEncoding.EncodeToString(ca), strings.TrimSpace(string(token)))
	path := filepath.Join(state, "kube-proxy.kubeconfig")
	return path, writeFileAtomic(path, []byte(kc), 0o600)
}

// kubeProxyComponent runs kube-proxy in a node's network namespace. It
// leaves the host kernel's conntrack table size and timeouts alone (they
// are not the node's to set) and its own OOM score (a negative one needs
// CAP_SYS_RESOURCE).
func kubeProxyComponent(state, binDir, instanceID, nodeName, kubeconfig string) component {
	return component{name: "node-" + instanceID + "-kube-proxy", bin: "nsenter", exe: "kube-proxy", env: nodeEnv(os.Getenv),
		args: func(string) []string {
			return []string{"--net=/var/run/netns/berth-" + instanceID, filepath.Join(binDir, "kube-proxy"),
				"--kubeconfig", kubeconfig, "--hostname-override", nodeName, "--proxy-mode", "iptables",
				"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
				"--oom-score-adj", "0", "--metrics-bind-address", net.JoinHostPort("127.0.0.1", "10249"),
				"--healthz-bind-address", net.JoinHostPort("127.0.0.1", "10256"), "--nodeport-addresses", "primary"}
		}}
}

// writeFileAtomic writes path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
