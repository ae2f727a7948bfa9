// Package controlplane_test drives berth-controlplane as users do: kubectl
// (built from the same Kubernetes version), IAM tokens from `berth token`,
// forged tokens signed with aws-sdk-go-v2's SigV4 signer, and the EKS API
// through aws-sdk-go-v2 and the Debian aws CLI, all against localcloud.
package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-io/berth/deploy/addons"
	"github.com/berth-io/berth/test/e2e"
)

const cluster = "berth-e2e"

type env struct {
	lc *e2e.Localcloud
	cp *e2e.Controlplane
}

func setup(t *testing.T, flags ...string) *env {
	t.Helper()
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath", "off")
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), cluster, flags...)
	return &env{lc: lc, cp: cp}
}

func mustKubectl(t *testing.T, cp *e2e.Controlplane, args ...string) string {
	t.Helper()
	out, err := cp.Kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestControlplane(t *testing.T) {
	e := setup(t, "--log-types", "audit,authenticator,scheduler")
	t.Run("kubectl", func(t *testing.T) { testKubectl(t, e) })
	t.Run("iam-auth", func(t *testing.T) { testIAMAuth(t, e) })
	t.Run("forged-tokens", func(t *testing.T) { testForgedTokens(t, e) })
	t.Run("aws-eks-get-token", func(t *testing.T) { testAWSGetToken(t, e) })
	t.Run("node-restriction", func(t *testing.T) { testNodeRestriction(t, e) })
	t.Run("berth-kubeconfig", func(t *testing.T) { testBerthKubeconfig(t, e) })
	t.Run("logs-and-metrics", func(t *testing.T) { testLogsAndMetrics(t, e) })
	t.Run("coredns-addon", func(t *testing.T) { testCoreDNSAddon(t, e) })
	t.Run("restart-keeps-objects", func(t *testing.T) { testRestart(t, e) })
}

// testBerthKubeconfig: `berth kubeconfig` asks the EKS API for the cluster
// and writes a kubeconfig that authenticates through berth token.
func testBerthKubeconfig(t *testing.T, e *env) {
	kc := filepath.Join(t.TempDir(), "sub", "config")
	cmd := exec.Command(e2e.Bin(t, "berth"), "kubeconfig", "--cluster-name", cluster, "--kubeconfig", kc, "--alias", "local")
	cmd.Env = append(append(os.Environ(), e.cp.Env...), "AWS_ENDPOINT_URL_EKS="+e.cp.EKS)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Added context local") {
		t.Fatalf("berth kubeconfig: %v\n%s", err, out)
	}
	out, err := e2e.Kubectl(t, kc, e.cp.Env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil || out != "arn:aws:iam::000000000000:root" {
		t.Fatalf("kubectl with the written kubeconfig: %q %v", out, err)
	}
	cmd = exec.Command(e2e.Bin(t, "berth"), "kubeconfig", "--cluster-name", "missing", "--kubeconfig", kc)
	cmd.Env = append(append(os.Environ(), e.cp.Env...), "AWS_ENDPOINT_URL_EKS="+e.cp.EKS)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "ResourceNotFoundException") {
		t.Fatalf("unknown cluster: %v\n%s", err, out)
	}
}

// testLogsAndMetrics checks the EKS log types chosen with --log-types and
// the single /metrics endpoint of the process.
func testLogsAndMetrics(t *testing.T, e *env) {
	logs := filepath.Join(e.cp.DataDir, "logs")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(logs, name))
		if err != nil {
			t.Fatalf("log type file: %v", err)
		}
		return string(b)
	}
	if a := read("authenticator.log"); !strings.Contains(a, `"token rejected"`) || !strings.Contains(a, `"token accepted"`) ||
		!strings.Contains(a, `"logType":"authenticator"`) || strings.Contains(a, "k8s-aws-v1.") {
		t.Errorf("authenticator log lacks decisions or leaks a token:\n%.2000s", a)
	}
	if a := read("audit.log"); !strings.Contains(a, `"kind":"Event"`) || !strings.Contains(a, `"verb":"create"`) {
		t.Errorf("audit log: %.1000s", a)
	}
	if s := read("scheduler.log"); !strings.Contains(s, `"logType":"scheduler"`) {
		t.Errorf("scheduler log: %.1000s", s)
	}
	for _, off := range []string{"controllerManager.log", "api.log"} {
		if _, err := os.Stat(filepath.Join(logs, off)); err == nil {
			t.Errorf("%s written although not enabled", off)
		}
	}
	m := mustKubectl(t, e.cp, "get", "--raw", "/metrics")
	for _, want := range []string{"berth_authenticator_requests_total{result=\"rejected\"}", "apiserver_request_total", "scheduler_schedule_attempts_total", "workqueue_adds_total"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func testKubectl(t *testing.T, e *env) {
	cp := e.cp
	v := mustKubectl(t, cp, "version", "-o", "json")
	var ver struct {
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(v[strings.Index(v, "{"):]), &ver); err != nil || ver.ServerVersion.GitVersion != "v1.37.2" {
		t.Fatalf("server version %q (%v): %s", ver.ServerVersion.GitVersion, err, v)
	}
	// admin.kubeconfig is cluster-admin through a group RBAC can revoke,
	// not system:masters.
	if who := mustKubectl(t, cp, "auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"); !strings.Contains(who, "berth:cluster-admins") || strings.Contains(who, "system:masters") {
		t.Fatalf("admin groups: %s", who)
	}
	mustKubectl(t, cp, "create", "namespace", "shop")
	mustKubectl(t, cp, "-n", "shop", "create", "deployment", "web", "--image=registry.k8s.io/pause:3.10", "--replicas=2")
	// The controller manager turns the deployment into a replica set and pods.
	e2e.WaitFor(t, "replica set and 2 pods", 60*time.Second, func() bool {
		rs, _ := cp.Kubectl(t, "-n", "shop", "get", "rs", "-l", "app=web", "-o", "name")
		pods, _ := cp.Kubectl(t, "-n", "shop", "get", "pods", "-l", "app=web", "-o", "name")
		return strings.HasPrefix(rs, "replicaset.apps/web-") && len(strings.Fields(pods)) == 2
	})
	mustKubectl(t, cp, "-n", "shop", "create", "role", "reader", "--verb=get,list", "--resource=pods")
	mustKubectl(t, cp, "-n", "shop", "create", "rolebinding", "reader", "--role=reader", "--user=jane")
	if out := mustKubectl(t, cp, "-n", "shop", "auth", "can-i", "list", "pods", "--as=jane"); out != "yes" {
		t.Fatalf("jane can list pods: %s", out)
	}
	if out, _ := cp.Kubectl(t, "-n", "shop", "auth", "can-i", "delete", "pods", "--as=jane"); out != "no" {
		t.Fatalf("jane can delete pods: %s", out)
	}

	// A registered node (no kubelet: its status is written by hand) gets
	// the pods bound by the scheduler.
	node := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"fake-node-1","labels":{"kubernetes.io/hostname":"fake-node-1"}}}`
	f := filepath.Join(t.TempDir(), "node.json")
	os.WriteFile(f, []byte(node), 0o600)
	mustKubectl(t, cp, "create", "-f", f)
	status := `{"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"110"},"allocatable":{"cpu":"4","memory":"8Gi","pods":"110"},` +
		`"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"fake","lastHeartbeatTime":"` + time.Now().UTC().Format(time.RFC3339) + `","lastTransitionTime":"` + time.Now().UTC().Format(time.RFC3339) + `"}]}}`
	mustKubectl(t, cp, "patch", "node", "fake-node-1", "--subresource=status", "--type=merge", "-p", status)
	// The node lifecycle controller may have tainted it not-ready before
	// the status arrived; it lifts the taint itself, this only speeds it up.
	_, _ = cp.Kubectl(t, "taint", "node", "fake-node-1", "node.kubernetes.io/not-ready-")
	e2e.WaitFor(t, "pods bound to fake-node-1", 60*time.Second, func() bool {
		out, _ := cp.Kubectl(t, "-n", "shop", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.nodeName}")
		return out == "fake-node-1 fake-node-1"
	})
}

// iamKubeconfig writes a kubeconfig whose user runs `berth token`.
func iamKubeconfig(t *testing.T, e *env, clusterName string, tokenArgs ...string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range kc.Clusters {
		c.Server = e.cp.APIServer
	}
	for name, a := range kc.AuthInfos {
		a.ClientCertificateData, a.ClientKeyData = nil, nil
		a.Exec = clientcmdapiExec{}.build(e2e.Bin(t, "berth"), append([]string{"token", "--cluster-name", clusterName}, tokenArgs...))
		kc.AuthInfos[name] = a
	}
	p := filepath.Join(t.TempDir(), "iam.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func roleARN(name string) string { return "arn:aws:iam::000000000000:role/" + name }

func testIAMAuth(t *testing.T, e *env) {
	cp := e.cp
	// The creator (localcloud's root) got an admin access entry.
	root := iamKubeconfig(t, e, cluster)
	out, err := e2e.Kubectl(t, root, cp.Env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil || out != "arn:aws:iam::000000000000:root" {
		t.Fatalf("creator whoami: %q %v", out, err)
	}
	if _, err := e2e.Kubectl(t, root, cp.Env, "create", "namespace", "by-creator"); err != nil {
		t.Fatalf("creator cannot create: %v", err)
	}

	// aws-auth mapping for a role.
	awsAuth := `apiVersion: v1
kind: ConfigMap
metadata: {name: aws-auth, namespace: kube-system}
data:
  mapRoles: |
    - rolearn: arn:aws:iam::000000000000:role/teams/Dev
      username: dev:{{SessionName}}
      groups: [developers]
`
	f := filepath.Join(t.TempDir(), "aws-auth.yaml")
	os.WriteFile(f, []byte(awsAuth), 0o600)
	mustKubectl(t, cp, "apply", "-f", f)
	dev := iamKubeconfig(t, e, cluster, "--role-arn", roleARN("Dev"), "--session-name", "alice")
	e2e.WaitFor(t, "aws-auth mapping applied", 20*time.Second, func() bool {
		out, _ := e2e.Kubectl(t, dev, cp.Env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
		return strings.HasPrefix(out, "dev:alice ") && strings.Contains(out, "developers")
	})

	// An access entry with the view policy: get works, create does not.
	eksc := eksClient(t, e)
	ctx := context.Background()
	if _, err := eksc.CreateAccessEntry(ctx, createEntry(roleARN("Viewer"))); err != nil {
		t.Fatal(err)
	}
	if _, err := eksc.AssociateAccessPolicy(ctx, associate(roleARN("Viewer"), "AmazonEKSViewPolicy")); err != nil {
		t.Fatal(err)
	}
	viewer := iamKubeconfig(t, e, cluster, "--role-arn", roleARN("Viewer"), "--session-name", "victor")
	e2e.WaitFor(t, "view policy bound", 20*time.Second, func() bool {
		_, err := e2e.Kubectl(t, viewer, cp.Env, "-n", "shop", "get", "pods")
		return err == nil
	})
	if out, err := e2e.Kubectl(t, viewer, cp.Env, "-n", "shop", "create", "configmap", "x"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("viewer could create: %v %s", err, out)
	}
	if out, _ := e2e.Kubectl(t, viewer, cp.Env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); out != "arn:aws:sts::000000000000:assumed-role/Viewer/victor" {
		t.Fatalf("viewer username %q", out)
	}
	// An unmapped role is refused.
	stranger := iamKubeconfig(t, e, cluster, "--role-arn", roleARN("Stranger"))
	if out, err := e2e.Kubectl(t, stranger, cp.Env, "get", "ns"); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Fatalf("unmapped role: %v %s", err, out)
	}
	// A token for another cluster is refused (the signed x-k8s-aws-id differs).
	other := iamKubeconfig(t, e, "other-cluster")
	if out, err := e2e.Kubectl(t, other, cp.Env, "get", "ns"); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Fatalf("token for another cluster: %v %s", err, out)
	}
}

// rootCreds are localcloud's root keys.
func rootCreds(t testing.TB, e *env) aws.Credentials {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithSharedCredentialsFiles([]string{filepath.Join(e.lc.StateDir, "credentials")}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// forge presigns an STS request as a client would, with full control over
// what is signed.
func forge(t testing.TB, creds aws.Credentials, rawURL string, headers map[string]string, at time.Time) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, emptySHA256, "sts", "us-west-2", at)
	if err != nil {
		t.Fatal(err)
	}
	return "k8s-aws-v1." + base64.RawURLEncoding.EncodeToString([]byte(u))
}

func apiClient(t *testing.T, e *env) *http.Client {
	kc, err := clientcmd.LoadFromFile(e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range kc.Clusters {
		pool.AppendCertsFromPEM(c.CertificateAuthorityData)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func testForgedTokens(t *testing.T, e *env) {
	creds := rootCreds(t, e)
	client := apiClient(t, e)
	base := e.lc.Endpoint + "/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=60"
	hdr := map[string]string{"x-k8s-aws-id": cluster}
	now := time.Now()
	good := forge(t, creds, base, hdr, now)
	check := func(name, token string, want int) {
		t.Helper()
		code, err := e2e.Get(client, e.cp.APIServer+"/api/v1/namespaces", token)
		if err != nil || code != want {
			t.Errorf("%s: status %d (%v), want %d", name, code, err, want)
		}
	}
	check("well-formed root token", good, http.StatusOK)
	u, _ := url.Parse(e.lc.Endpoint)
	evil := strings.Replace(base, u.Host, "127.0.0.2:"+u.Port(), 1)
	check("wrong host", forge(t, creds, evil, hdr, now), http.StatusUnauthorized)
	check("extra parameter", forge(t, creds, base+"&Foo=bar", hdr, now), http.StatusUnauthorized)
	check("duplicated parameter", forge(t, creds, base+"&Action=GetCallerIdentity", hdr, now), http.StatusUnauthorized)
	check("unsigned cluster header", forge(t, creds, base, nil, now), http.StatusUnauthorized)
	check("wrong cluster header", forge(t, creds, base, map[string]string{"x-k8s-aws-id": "other"}, now), http.StatusUnauthorized)
	check("expired", forge(t, creds, base, hdr, now.Add(-16*time.Minute)), http.StatusUnauthorized)
	check("oversized", forge(t, creds, base+"&X-Amz-Security-Token="+strings.Repeat("A", 4000), hdr, now), http.StatusUnauthorized)
	check("other action", forge(t, creds, strings.Replace(base, "GetCallerIdentity", "AssumeRole", 1), hdr, now), http.StatusUnauthorized)
	bad := creds
	bad.SecretAccessKey = "wrong-secret"
	check("STS denial (bad signature)", forge(t, bad, base, hdr, now), http.StatusUnauthorized)
	unknown := creds
	unknown.AccessKeyID = "AKIAUNKNOWNKEY000000"
	check("STS denial (unknown key)", forge(t, unknown, base, hdr, now), http.StatusUnauthorized)
	// A tampered token (signature no longer matches) is refused.
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(good, "k8s-aws-v1."))
	tampered := strings.Replace(string(raw), "X-Amz-Expires=60", "X-Amz-Expires=61", 1)
	check("tampered", "k8s-aws-v1."+base64.RawURLEncoding.EncodeToString([]byte(tampered)), http.StatusUnauthorized)
	check("good token still works", good, http.StatusOK)
}

// testAWSGetToken: a token from the real aws CLI's `eks get-token`, which
// presigns for AWS's regional STS host, is verified through localcloud's
// STS (the control plane forwards STS hosts to the STS it trusts).
func testAWSGetToken(t *testing.T, e *env) {
	_, err := exec.LookPath("aws")
	e2e.Require(t, err == nil, "aws CLI not installed (make deps)")
	cmd := exec.Command("aws", "eks", "get-token", "--cluster-name", cluster, "--region", "us-west-2", "--output", "json")
	for _, kv := range e.cp.Env {
		if !strings.HasPrefix(kv, "AWS_ENDPOINT_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("aws eks get-token: %v", err)
	}
	var cred struct{ Status struct{ Token string } }
	if err := json.Unmarshal(out, &cred); err != nil || !strings.HasPrefix(cred.Status.Token, "k8s-aws-v1.") {
		t.Fatalf("aws eks get-token output %s (%v)", out, err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimPrefix(cred.Status.Token, "k8s-aws-v1."), "="))
	if !strings.Contains(string(raw), "sts.us-west-2.amazonaws.com") {
		t.Fatalf("token not presigned for AWS's STS host: %s", raw)
	}
	if code, err := e2e.Get(apiClient(t, e), e.cp.APIServer+"/api/v1/namespaces", cred.Status.Token); err != nil || code != http.StatusOK {
		t.Fatalf("aws eks get-token token: %d %v", code, err)
	}
}

func testNodeRestriction(t *testing.T, e *env) {
	ctx := context.Background()
	eksc := eksClient(t, e)
	in := createEntry(roleARN("NodeRole"))
	in.Type = aws.String("EC2_LINUX")
	if _, err := eksc.CreateAccessEntry(ctx, in); err != nil {
		t.Fatal(err)
	}
	inst := runInstance(t, e)
	node := iamKubeconfig(t, e, cluster, "--role-arn", roleARN("NodeRole"), "--session-name", inst.id)
	out, err := e2e.Kubectl(t, node, e.cp.Env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
	if err != nil || out != "system:node:"+inst.dns+" [\"system:nodes\",\"system:authenticated\"]" && !strings.HasPrefix(out, "system:node:"+inst.dns+" ") {
		t.Fatalf("node identity %q %v", out, err)
	}
	own := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q}}`, inst.dns)
	f := filepath.Join(t.TempDir(), "own.json")
	os.WriteFile(f, []byte(own), 0o600)
	if out, err := e2e.Kubectl(t, node, e.cp.Env, "create", "-f", f); err != nil {
		t.Fatalf("node cannot register itself: %v %s", err, out)
	}
	// NodeRestriction: a node may not modify another node.
	if out, err := e2e.Kubectl(t, node, e.cp.Env, "label", "node", "fake-node-1", "evil=true"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("node modified another node: %v %s", err, out)
	}
	// Nor set node-restriction labels on itself.
	if out, err := e2e.Kubectl(t, node, e.cp.Env, "label", "node", inst.dns, "node-restriction.kubernetes.io/x=y"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("node set a restricted label: %v %s", err, out)
	}
	// And reads only what its pods need: secrets are not listable.
	if out, err := e2e.Kubectl(t, node, e.cp.Env, "get", "secrets", "-A"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("node listed secrets: %v %s", err, out)
	}
}

// testCoreDNSAddon: the control plane installs CoreDNS as EKS installs it
// with a cluster: on the service CIDR's tenth address (kubelets'
// clusterDNS), with the least privilege its kubernetes plugin needs.
func testCoreDNSAddon(t *testing.T, e *env) {
	cp := e.cp
	for args, want := range map[[2]string]string{
		{"service/kube-dns", "{.spec.clusterIP} {.spec.ports[*].name}"}:                      "10.100.0.10 dns dns-tcp metrics",
		{"deployment/coredns", "{.spec.template.spec.containers[0].image} {.spec.replicas}"}: addons.CoreDNSImage + " 2",
		{"configmap/coredns", "{.data.Corefile}"}:                                            "",
		{"serviceaccount/coredns", "{.metadata.name}"}:                                       "coredns",
		{"poddisruptionbudget/coredns", "{.spec.maxUnavailable}"}:                            "1",
	} {
		out := mustKubectl(t, cp, "-n", "kube-system", "get", args[0], "-o", "jsonpath="+args[1])
		if want == "" && !strings.Contains(out, "kubernetes cluster.local in-addr.arpa ip6.arpa") || want != "" && out != want {
			t.Errorf("%s %s = %q, want %q", args[0], args[1], out, want)
		}
	}
	sa := "system:serviceaccount:kube-system:coredns"
	for verb, want := range map[[2]string]string{
		{"watch", "endpointslices.discovery.k8s.io"}: "yes", {"list", "services"}: "yes", {"list", "namespaces"}: "yes",
		{"get", "secrets"}: "no", {"create", "services"}: "no", {"list", "configmaps"}: "no",
	} {
		out, _ := cp.Kubectl(t, "auth", "can-i", verb[0], verb[1], "--all-namespaces", "--as", sa)
		if out != want {
			t.Errorf("%s can %s %s: %q, want %q", sa, verb[0], verb[1], out, want)
		}
	}
}

func testRestart(t *testing.T, e *env) {
	cp := e.cp
	mustKubectl(t, cp, "-n", "shop", "create", "configmap", "survivor", "--from-literal=k=v")
	// The Corefile is the user's once installed, as on EKS; the add-on's
	// other objects follow berth's manifest when it changes.
	corefile := ".:53 {\n    errors\n    kubernetes cluster.local\n    forward . 192.0.2.53\n}\n"
	patch, _ := json.Marshal(map[string]any{"data": map[string]string{"Corefile": corefile}})
	mustKubectl(t, cp, "-n", "kube-system", "patch", "configmap", "coredns", "--type", "merge", "-p", string(patch))
	cp.Stop()
	cp.StartWith(t, "--coredns-image", "registry.example/coredns:v9.9.9")
	if out := mustKubectl(t, cp, "-n", "kube-system", "get", "configmap", "coredns", "-o", "jsonpath={.data.Corefile}"); out+"\n" != corefile {
		t.Errorf("the user's Corefile after restart: %q", out)
	}
	if out := mustKubectl(t, cp, "-n", "kube-system", "get", "deployment", "coredns", "-o", "jsonpath={.spec.template.spec.containers[0].image}"); out != "registry.example/coredns:v9.9.9" {
		t.Errorf("coredns image after a restart with another --coredns-image: %q", out)
	}
	if out := mustKubectl(t, cp, "-n", "shop", "get", "configmap", "survivor", "-o", "jsonpath={.data.k}"); out != "v" {
		t.Fatalf("configmap after restart: %q", out)
	}
	if out := mustKubectl(t, cp, "-n", "shop", "get", "deployment", "web", "-o", "name"); out != "deployment.apps/web" {
		t.Fatalf("deployment after restart: %q", out)
	}
	// Access entries survive too.
	out, err := eksClient(t, e).ListAccessEntries(context.Background(), listEntries())
	if err != nil || len(out.AccessEntries) < 3 {
		t.Fatalf("access entries after restart: %v %v", out, err)
	}
}

func awsCLI(t *testing.T, e *env, args ...string) (string, error) {
	t.Helper()
	_, err := exec.LookPath("aws")
	e2e.Require(t, err == nil, "aws CLI not installed (make deps)")
	cmd := exec.Command("aws", append(args, "--endpoint-url", e.cp.EKS, "--region", "us-west-2", "--output", "json")...)
	cmd.Env = append(os.Environ(), e.cp.Env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
