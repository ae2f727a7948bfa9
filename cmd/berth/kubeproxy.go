package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/berth-io/berth/internal/atomicfile"
)

// kube-proxy and berth-netpol run on each local node as EKS's add-ons do,
// as their service accounts; without images to run them as DaemonSets,
// berth up runs them in the instance's network namespace beside
// berth-ipamd. kube-proxy is in iptables mode, as
// kube-system/kube-proxy bound to system:node-proxier.

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

// agentTokenLife is how long a node agent's token lives. berth up writes
// a new one when the kept one has less than agentTokenRenew left, or the
// API no longer takes it.
const (
	agentTokenLife  = "8760h"
	agentTokenRenew = 30 * 24 * time.Hour
)

// serviceAccountKubeconfig applies rbacYAML (a ServiceAccount and its
// role) and writes a kubeconfig of that service account for the nodes'
// agents (mode 0600): the cluster's endpoint, which nodes reach, and a
// token. EKS runs these agents as DaemonSets of the same accounts.
func serviceAccountKubeconfig(ctx context.Context, binDir, kubeconfig, state string, cl *ekstypes.Cluster, rbacYAML, namespace, account string) (string, error) {
	path := filepath.Join(state, account+".kubeconfig")
	// The kubeconfig records what it was made for: the same RBAC, endpoint
	// and CA, a token far from expiry that the API still takes as the
	// account, and it is kept. A restarted cluster then makes no kubectl
	// calls here: those that need discovery can wait seconds on an
	// aggregated API whose pods are not back yet.
	made := fmt.Sprintf("%x", sha256.Sum256([]byte(rbacYAML+"\x00"+aws.ToString(cl.Endpoint)+"\x00"+aws.ToString(cl.CertificateAuthority.Data))))
	if keptKubeconfig(ctx, binDir, path, made, "system:serviceaccount:"+namespace+":"+account) {
		return path, nil
	}
	if _, err := kubectl(ctx, binDir, kubeconfig, rbacYAML, "apply", "-f", "-"); err != nil {
		return "", err
	}
	token, err := kubectl(ctx, binDir, kubeconfig, "", "create", "token", account, "--namespace", namespace, "--duration", agentTokenLife)
	if err != nil {
		return "", err
	}
	ca, err := base64.StdEncoding.DecodeString(aws.ToString(cl.CertificateAuthority.Data))
	if err != nil {
		return "", fmt.Errorf("cluster CA: %w", err)
	}
	kc := fmt.Sprintf(`# berth-made-for: %[6]s
apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[4]s
  user:
    token: %[5]s
contexts:
- name: %[4]s@%[1]s
  context: {cluster: %[1]s, user: %[4]s}
current-context: %[4]s@%[1]s
`, aws.ToString(cl.Name), aws.ToString(cl.Endpoint), base64.StdEncoding.EncodeToString(ca), account, strings.TrimSpace(string(token)), made)
	return path, atomicfile.WriteFile(path, []byte(kc), 0o600)
}

// keptKubeconfig says whether the agent kubeconfig at path can be used
// again: made for `made`, its token valid for agentTokenRenew more, and
// taken by the API as user.
func keptKubeconfig(ctx context.Context, binDir, path, made, user string) bool {
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("# berth-made-for: "+made+"\n")) {
		return false
	}
	_, rest, ok := bytes.Cut(b, []byte("\n    token: "))
	if !ok {
		return false
	}
	token, _, _ := bytes.Cut(rest, []byte("\n"))
	if exp, err := tokenExpiry(string(token)); err != nil || time.Until(exp) < agentTokenRenew {
		return false
	}
	out, err := kubectl(ctx, binDir, path, "", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	return err == nil && strings.TrimSpace(string(out)) == user
}

// tokenExpiry reads the exp claim of a JWT, unverified: the API server
// verifies it, this only decides when to ask for a new one.
func tokenExpiry(jwt string) (time.Time, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("token: not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("token payload: %w", err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == 0 {
		return time.Time{}, fmt.Errorf("token: no exp claim (%v)", err)
	}
	return time.Unix(claims.Exp, 0), nil
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

// netpolPinDir is where a node's policy agent pins its eBPF programs, maps
// and links; the node's `berth down` removes it, as a power-off would.
func netpolPinDir(instanceID string) string { return "/sys/fs/bpf/berth-" + instanceID }

// netpolComponent runs berth-netpol, the network policy agent, in a node's
// network namespace: berth-cni asks it on npa.sock to enforce a pod's
// policies before the pod's first packet.
func netpolComponent(state, binDir, instanceID, nodeName, kubeconfig string) component {
	root := nodeDir(state, instanceID)
	return component{name: "node-" + instanceID + "-netpol", bin: "nsenter", exe: "berth-netpol", env: nodeEnv(os.Getenv),
		args: func(string) []string {
			return []string{"--net=/var/run/netns/berth-" + instanceID, filepath.Join(binDir, "berth-netpol"),
				"--kubeconfig", kubeconfig, "--node-name", nodeName,
				"--ipamd-socket", filepath.Join(root, "var/run/aws-node/ipamd.sock"), "--socket", filepath.Join(root, "var/run/aws-node/npa.sock"),
				"--pin-dir", netpolPinDir(instanceID)}
		}}
}

// kubectl runs the bin dir's kubectl with stdin; its stderr goes into the
// error.
func kubectl(ctx context.Context, binDir, kubeconfig, stdin string, args ...string) ([]byte, error) {
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
