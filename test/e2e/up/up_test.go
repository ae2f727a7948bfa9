// Package up_test proves `berth up`, the README's first command: a local
// cluster whose node runs pods on VPC addresses.
package up_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/berth-io/berth/internal/ociimage"
	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/test/e2e"
)

// TestUpRunsPods: `berth up` starts localcloud and the control plane and
// boots two nodes (localcloud instances running berth-bootstrap with the
// real kubelet and containerd, berth-ipamd, kube-proxy and berth-netpol).
// The nodes register, the control plane's cloud node controller
// initializes them from EC2, and a pod of the local pause image runs on an
// address of its instance's ENIs that the host reaches through the VPC
// router, and a ClusterIP Service reaches a server pod on the other node
// from the client's node and from the client pod, which also finds it by
// name through the control plane's CoreDNS; berth-netpol enforces a
// NetworkPolicy on it. `berth down`
// removes the pods (their addresses go back to
// ipamd) and leaves no process behind; a second `berth up` brings the same
// node, its pods and the Service back.
func TestUpRunsPods(t *testing.T) {
	for _, tool := range []string{"containerd", "runc", "nsenter", "ctr"} {
		_, err := exec.LookPath(tool)
		e2e.Require(t, err == nil, tool+" not installed (make deps)")
	}
	berth, kubectl := e2e.Bin(t, "berth"), e2e.Bin(t, "kubectl")
	for _, b := range []string{"berth-localcloud", "berth-controlplane", "berth-bootstrap", "berth-ipamd", "berth-cni", "berth-pause", "berth-coredns", "metrics-server", "kubelet"} {
		e2e.Bin(t, b)
	}
	host := e2e.HostAddress(t)
	state := t.TempDir()
	// localcloud's port is also bound on the host address, for nodes.
	lcAddr := e2e.FreePort(t)
	for !freeOn(host, lcAddr) {
		lcAddr = e2e.FreePort(t)
	}
	vpc := netip.MustParsePrefix(e2e.LockCIDR(t))
	up := []string{"up", "--state-dir", state, "--bin-dir", filepath.Dir(berth), "--cluster-name", "uptest",
		"--localcloud-listen", lcAddr, "--eks-listen", e2e.FreePort(t), "--api-listen", e2e.FreePortOn(t, host),
		"--etcd-client-listen", e2e.FreePort(t), "--etcd-peer-listen", e2e.FreePort(t),
		"--vpc-cidr", vpc.String(), "--host-address", host, "--nodes", "2"}
	down := func() string {
		out, err := exec.Command(berth, "down", "--state-dir", state).CombinedOutput()
		if err != nil {
			t.Errorf("berth down: %v\n%s", err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		down()
		if left := e2e.ProcessesUnder(state); len(left) > 0 {
			t.Errorf("processes left behind after berth down: %v", left)
		}
	})
	run := func(args ...string) string {
		t.Helper()
		t0 := time.Now()
		cmd := exec.Command(berth, args...)
		// A developer's shell has AWS settings of its own: none of them may
		// reach the local cloud's clients, the control plane or the nodes.
		cmd.Env = append(e2e.WithoutAWS(os.Environ()), "AWS_PROFILE=berth-test-no-such-profile", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
			"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_REGION=eu-north-1", "AWS_ENDPOINT_URL_EC2=http://127.0.0.1:9")
		out, err := cmd.CombinedOutput()
		if err != nil {
			dumpNodeLogs(t, state)
			t.Fatalf("berth %s: %v\n%s", args[0], err, out)
		}
		t.Logf("berth %s took %s:\n%s", args[0], time.Since(t0).Round(time.Millisecond), out)
		return string(out)
	}
	kubeconfig := filepath.Join(state, "controlplane", "admin.kubeconfig")
	cache := t.TempDir()
	kc := func(args ...string) (string, error) {
		out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig, "--cache-dir", cache}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	out := run(up...)
	if !strings.Contains(out, "node ip-") || !strings.Contains(out, " ready: instance i-") {
		t.Fatalf("berth up did not report a ready node:\n%s", out)
	}

	// berth up again, as a user runs make up twice: everything is running
	// and stays as it is (its kubelets report Ready on their Leases, not
	// on the Nodes, which it must not wait for).
	if again := run(up...); !strings.Contains(again, "coredns ready") {
		t.Fatalf("a second berth up on the running cluster:\n%s", again)
	}

	// A second berth up with other settings does not take the running
	// control plane for what it asks.
	other := append([]string{}, up...)
	for i := range other {
		if other[i] == "--eks-listen" {
			other[i+1] = e2e.FreePort(t)
		}
	}
	if out, err := exec.Command(berth, other...).CombinedOutput(); err == nil || !strings.Contains(string(out), "berth-controlplane is running") ||
		!strings.Contains(string(out), "with other settings") {
		t.Fatalf("berth up with another --eks-listen: %v\n%s", err, out)
	}

	// The cloud node controller initialized the Nodes from EC2.
	names, err := kc("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
	nodes := strings.Fields(names)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("want two nodes, got %q (%v)", names, err)
	}
	instances := map[string]string{}
	for _, node := range nodes {
		for jp, want := range map[string]string{
			`{.metadata.labels.node\.kubernetes\.io/instance-type}`: "m5.large",
			`{.metadata.labels.topology\.kubernetes\.io/zone}`:      "us-west-2a",
			`{.metadata.labels.topology\.kubernetes\.io/region}`:    "us-west-2",
			`{.spec.taints}`: "",
		} {
			if got, err := kc("get", "node", node, "-o", "jsonpath="+jp); err != nil || got != want {
				t.Errorf("node %s %s = %q (%v), want %q", node, jp, got, err, want)
			}
		}
		providerID, _ := kc("get", "node", node, "-o", "jsonpath={.spec.providerID}")
		if !strings.HasPrefix(providerID, "aws:///us-west-2a/i-") {
			t.Fatalf("node %s providerID %q", node, providerID)
		}
		instances[node] = providerID[strings.LastIndex(providerID, "/")+1:]
	}
	// hold runs on one node, the echo server on the other: the Service
	// and the policy are crossed between them through the VPC router.
	node, instance := nodes[1], instances[nodes[1]]
	echoNode, echoInstance := nodes[0], instances[nodes[0]]

	// The IAM kubeconfig works with the environment berth up prints: a
	// token presigned for localcloud's loopback listener (nodes' are for
	// its host listener; the control plane takes both).
	lcState := filepath.Join(state, "localcloud")
	iam := exec.Command(kubectl, "--kubeconfig", filepath.Join(state, "controlplane", "iam.kubeconfig"), "--cache-dir", cache, "get", "node", node, "-o", "name")
	iam.Env = append(e2e.WithoutAWS(os.Environ()), "PATH="+filepath.Dir(berth)+":"+os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://"+lcAddr,
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(lcState, "credentials"), "AWS_CONFIG_FILE="+filepath.Join(lcState, "config"))
	if out, err := iam.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "node/"+node {
		t.Fatalf("kubectl with iam.kubeconfig: %v\n%s", err, out)
	}

	// A pod runs, on an address of the instance's ENIs.
	if out, err := kc("apply", "-f", writeFile(t, fmt.Sprintf(holdYAML, node))); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	podIP, container := waitPodRunning(t, kc, state, "hold", "")
	if !vpc.Contains(podIP) {
		t.Fatalf("pod IP %s outside the VPC %s", podIP, vpc)
	}
	lc := &e2e.Localcloud{StateDir: lcState, Endpoint: "http://" + lcAddr}
	if owner := eniOf(t, lc.EC2(t), podIP); owner != instance {
		t.Fatalf("pod IP %s is on an ENI of %q, want the node's instance %s", podIP, owner, instance)
	}
	// Connection refused is the pod's own kernel answering: the address
	// reaches the pod through the VPC router and the node's datapath.
	if err := refused(podIP); err != nil {
		t.Fatalf("TCP to the pod from the host: %v", err)
	}

	// A Service: kube-proxy on the node carries its cluster IP to a pod of
	// the test's own image (imported, as the node pulls from no registry),
	// from the node and from another pod.
	importImage(t, state, echoInstance, echoImage(t))
	if out, err := kc("apply", "-f", writeFile(t, fmt.Sprintf(echoYAML, echoNode))); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	echoIP, _ := waitPodRunning(t, kc, state, "echo", "")
	if body, err := get(echoIP.String() + ":8080"); err != nil || body != "echo" {
		t.Fatalf("GET the echo pod from the host: %q, %v", body, err)
	}
	clusterIP, err := kc("get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatal(err)
	}
	checkService(t, "berth-"+instance, podIP, clusterIP)
	// The control plane's CoreDNS add-on answers on kube-dns for pods, on
	// the address kubelets give them as their nameserver.
	dnsIP, err := kc("--namespace", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || !strings.HasSuffix(dnsIP, ".10") {
		t.Fatalf("kube-dns cluster IP %q: %v", dnsIP, err)
	}
	checkDNS(t, podIP, dnsIP, "echo.default.svc.cluster.local.", clusterIP)
	// The VPC's NAT gateway: a pod reaches a network past the host (as it
	// would the internet), which sees the host's address.
	outside := e2e.NewOutside(t)
	e2e.ServeRemoteAddr(t, outside.NS, outside.FarIP+":7070")
	if got, err := remoteAddrFrom(podIP, outside.FarIP+":7070"); err != nil || got != outside.HostIP {
		t.Fatalf("a pod past the host: seen as %q (%v), want the host's %s", got, err, outside.HostIP)
	}
	// kubectl logs and exec reach the kubelet, whose serving certificate
	// the control plane approved from EC2's facts about the instance; the
	// pod finds the Service by a partial name through the search domains
	// kubelet wrote into its resolv.conf.
	waitKubectl(t, kc, time.Minute, "logs", "echo listening on :8080", "logs", "echo")
	waitKubectl(t, kc, time.Minute, "exec", clusterIP, "exec", "echo", "--", "/echo", "lookup", "echo.default")
	if csr, err := kc("get", "csr", "-o", `jsonpath={range .items[*]}{.spec.signerName} {.status.conditions[0].type} {.status.conditions[0].reason}{"\n"}{end}`); err != nil ||
		!strings.Contains(csr, "kubernetes.io/kubelet-serving Approved AutoApproved") {
		t.Fatalf("kubelet serving CSRs: %q %v", csr, err)
	}

	// A NetworkPolicy, enforced by berth-netpol on the node: echo takes
	// ingress only from pods labelled role=client, and hold has no label
	// until it is given one.
	if out, err := kc("apply", "-f", writeFile(t, policyYAML)); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	waitReach(t, podIP, clusterIP, false)
	if out, err := kc("label", "pod", "hold", "role=client"); err != nil {
		t.Fatalf("kubectl label: %v\n%s", err, out)
	}
	waitReach(t, podIP, clusterIP, true)

	// An admission webhook served by a pod: the API server, outside the
	// cluster network, reaches it on the pod's address (aggregator
	// routing), as it must for any webhook users install.
	checkWebhook(t, kc, echoNode)

	// metrics-server, installed for berth up, serves the resource-metrics
	// API through the aggregator from what it scrapes off the kubelets: a
	// Node's usage needs two of its 15 s scrapes.
	waitKubectl(t, kc, 2*time.Minute, "top node", nodes[0], "top", "node", nodes[0], "--no-headers")
	waitKubectl(t, kc, time.Minute, "top pod", "echo", "top", "pod", "echo", "--no-headers")

	// berth down: the pod's sandbox is removed through CNI DEL, so ipamd's
	// checkpoint no longer holds its address.
	downAt := time.Now().Truncate(time.Second)
	out = down()
	if strings.Contains(out, "warning") {
		t.Errorf("berth down warned:\n%s", out)
	}
	want := []string{"stopped berth-controlplane", "stopped berth-localcloud"}
	for _, id := range instances {
		for _, c := range []string{"bootstrap", "kube-proxy", "netpol", "ipamd"} {
			want = append(want, "stopped node-"+id+"-"+c)
		}
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("berth down did not say %q:\n%s", w, out)
		}
	}
	if left := e2e.ProcessesUnder(state); len(left) > 0 {
		t.Fatalf("processes left behind after berth down: %v", left)
	}
	for _, id := range instances {
		if _, err := os.Stat("/sys/fs/bpf/berth-" + id); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("node %s's policy programs stay pinned after berth down: %v", id, err)
		}
	}
	checkpoint, err := os.ReadFile(filepath.Join(state, "nodes", instance, "var/run/aws-node/ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Allocations []struct {
			IPv4 string `json:"ipv4"`
		} `json:"allocations"`
	}
	if err := json.Unmarshal(checkpoint, &cp); err != nil {
		t.Fatalf("ipam.json: %v", err)
	}
	for _, a := range cp.Allocations {
		if a.IPv4 == podIP.String() {
			t.Fatalf("ipam.json still allocates %s after berth down: the pod was not DELeted", podIP)
		}
	}

	// The same nodes and pods come back.
	out = run(up...)
	for n, id := range instances {
		if !strings.Contains(out, "node "+n+" ready: instance "+id) {
			t.Fatalf("berth up did not bring node %s (%s) back:\n%s", n, id, out)
		}
	}
	// berth down marked the Nodes' Ready Unknown, so the new kubelets
	// posted Ready at once rather than at their next status period.
	for n := range instances {
		at, err := kc("get", "node", n, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
		if ts, perr := time.Parse(time.RFC3339, strings.TrimSpace(at)); err != nil || perr != nil || ts.Before(downAt) {
			t.Errorf("node %s: Ready since %q (%v), want a transition after berth down at %s", n, at, err, downAt.Format(time.RFC3339))
		}
	}
	// Until the new kubelet reports, the API still shows the pod as it was.
	podIP, _ = waitPodRunning(t, kc, state, "hold", container)
	if err := refused(podIP); err != nil {
		t.Fatalf("TCP to the pod after restart: %v", err)
	}
	waitPodRunning(t, kc, state, "echo", "")
	checkDNS(t, podIP, dnsIP, "echo.default.svc.cluster.local.", clusterIP)
	// From echo's own node now: the policy admits that node's address (for
	// kubelet's probes), not the other node's.
	checkService(t, "berth-"+echoInstance, podIP, clusterIP)
	// The restarted agent enforces the policy again.
	if out, err := kc("label", "pod", "hold", "role-"); err != nil {
		t.Fatalf("kubectl label: %v\n%s", err, out)
	}
	waitReach(t, podIP, clusterIP, false)
}

const policyYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: echo-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: echo}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
`

// waitReach waits until the pod holding from can (or cannot) GET the echo
// Service.
func waitReach(t *testing.T, from netip.Addr, clusterIP string, want bool) {
	t.Helper()
	ns, err := podNetNS(from)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var last error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		last = testenv.OnThreadIn(ns, func() error {
			body, err := getWithin(clusterIP+":80", 2*time.Second)
			if err == nil && body != "echo" {
				err = fmt.Errorf("body %q", body)
			}
			return err
		})
		if (last == nil) == want {
			return
		}
	}
	t.Fatalf("pod %s reaching the Service %s: want reachable %v, last: %v", from, clusterIP, want, last)
}

// checkWebhook runs echo as a validating webhook for pods labelled
// berth-test/webhook=on, with a serving certificate from a CA of the
// test's, and has the API server ask it (server-side dry runs).
func checkWebhook(t *testing.T, kc func(...string) (string, error), node string) {
	t.Helper()
	caPEM, certPEM, keyPEM := webhookCerts(t, "webhook.default.svc")
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := kc("create", "secret", "tls", "webhook-tls", "--cert", filepath.Join(dir, "tls.crt"), "--key", filepath.Join(dir, "tls.key")); err != nil {
		t.Fatalf("kubectl create secret: %v\n%s", err, out)
	}
	manifest := fmt.Sprintf(webhookYAML, node, base64.StdEncoding.EncodeToString(caPEM))
	if out, err := kc("apply", "-f", writeFile(t, manifest)); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = kc("delete", "validatingwebhookconfiguration", "berth-test") })
	dryRun := func(name, labels string) (string, error) {
		return kc("run", name, "--image", "localhost/berth/pause:3.10", "--labels", labels, "--dry-run=server")
	}
	// failurePolicy Fail: until the webhook answers, every labelled pod
	// is refused with "failed calling webhook".
	var out string
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, err = dryRun("allowed", "berth-test/webhook=on"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("a pod the webhook allows: %v\n%s", err, out)
	}
	out, err = dryRun("denied", "berth-test/webhook=on,berth-test/deny=yes")
	if err == nil || !strings.Contains(out, "denied by the echo webhook") {
		t.Fatalf("a pod the webhook denies: %v\n%s", err, out)
	}
}

// webhookCerts makes a CA and a serving certificate for host, in PEM.
func webhookCerts(t *testing.T, host string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth-test webhook CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		DNSNames: []string{host}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

const webhookYAML = `apiVersion: v1
kind: Pod
metadata: {name: webhook, namespace: default, labels: {app: webhook}}
spec:
  nodeName: %[1]s
  terminationGracePeriodSeconds: 1
  containers:
  - name: webhook
    image: localhost/berth/echo:test
    imagePullPolicy: Never
    args: [webhook, ":8443", /tls/tls.crt, /tls/tls.key]
    volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]
  volumes: [{name: tls, secret: {secretName: webhook-tls}}]
---
apiVersion: v1
kind: Service
metadata: {name: webhook, namespace: default}
spec:
  selector: {app: webhook}
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: berth-test}
webhooks:
- name: pods.berth-test.example.com
  objectSelector: {matchLabels: {berth-test/webhook: "on"}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
  clientConfig:
    service: {namespace: default, name: webhook, path: /validate, port: 443}
    caBundle: %[2]s
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
`

const holdYAML = `apiVersion: v1
kind: Pod
metadata: {name: hold, namespace: default}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: hold
    image: localhost/berth/pause:3.10
    imagePullPolicy: Never
`

const echoYAML = `apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: default, labels: {app: echo}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: localhost/berth/echo:test
    imagePullPolicy: Never
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// echoImage builds testdata/echo into an image tar.
func echoImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	build := exec.Command("go", "build", "-o", bin, "./testdata/echo")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build testdata/echo: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := ociimage.Image{Name: "localhost/berth/echo:test", Arch: runtime.GOARCH, Entrypoint: []string{"/echo"},
		Files: []ociimage.File{{Path: "/echo", Mode: 0o755, Data: data}}}
	var b bytes.Buffer
	if err := img.WriteLayout(&b); err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(dir, "echo.tar")
	if err := os.WriteFile(tar, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return tar
}

// importImage imports an image tar into a node's containerd, as its
// README says to.
func importImage(t *testing.T, state, instance, tar string) {
	t.Helper()
	sock := filepath.Join(state, "nodes", instance, "run/containerd/containerd.sock")
	if out, err := exec.Command("ctr", "--address", sock, "--namespace", "k8s.io", "images", "import", tar).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
}

// checkService GETs the echo Service's cluster IP from the node's network
// namespace and from the pod holding fromPod.
func checkService(t *testing.T, nodeNS string, fromPod netip.Addr, clusterIP string) {
	t.Helper()
	var body string
	var err error
	// kube-proxy programs a new Service or endpoint within its sync.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err = e2e.InNetNS(nodeNS, func() (err error) { body, err = get(clusterIP + ":80"); return err })
		if err == nil && body == "echo" || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || body != "echo" {
		t.Fatalf("GET the Service %s from the node: %q, %v", clusterIP, body, err)
	}
	ns, err := podNetNS(fromPod)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	err = testenv.OnThreadIn(ns, func() (err error) { body, err = get(clusterIP + ":80"); return err })
	if err != nil || body != "echo" {
		t.Fatalf("GET the Service %s from pod %s: %q, %v", clusterIP, fromPod, body, err)
	}
}

// remoteAddrFrom connects from the pod holding fromPod to addr, a
// ServeRemoteAddr listener, and returns the address it saw.
func remoteAddrFrom(fromPod netip.Addr, addr string) (string, error) {
	ns, err := podNetNS(fromPod)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	var got string
	err = testenv.OnThreadIn(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		got = strings.TrimSpace(string(b))
		return err
	})
	return got, err
}

// waitKubectl runs kubectl until its output contains want.
func waitKubectl(t *testing.T, kc func(...string) (string, error), timeout time.Duration, what, want string, args ...string) {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Second) {
		if out, err = kc(args...); err == nil && strings.Contains(out, want) {
			return
		}
	}
	t.Fatalf("kubectl %s: %q, %v; want %q", what, out, err, want)
}

// checkDNS asks the cluster DNS for name's A record from the pod holding
// fromPod until it answers want (kube-proxy and CoreDNS follow a new
// Service within seconds).
func checkDNS(t *testing.T, fromPod netip.Addr, dnsIP, name, want string) {
	t.Helper()
	ns, err := podNetNS(fromPod)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var got []string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		err = testenv.OnThreadIn(ns, func() (err error) { got, err = lookupA(dnsIP, name); return err })
		if err == nil && len(got) == 1 && got[0] == want {
			return
		}
	}
	t.Fatalf("DNS %s A from pod %s via %s: %v, %v; want %s", name, fromPod, dnsIP, got, err, want)
}

// lookupA sends one A query over UDP from the calling thread's network
// namespace (Go's resolver would ask from other threads).
func lookupA(server, name string) ([]string, error) {
	q, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0xbe47, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("udp", net.JoinHostPort(server, "53"), 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 1232)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	var p dnsmessage.Parser
	h, err := p.Start(buf[:n])
	if err != nil {
		return nil, err
	}
	if h.ID != 0xbe47 || h.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("answer id %#x rcode %v", h.ID, h.RCode)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, err
	}
	var addrs []string
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return addrs, nil
		} else if err != nil {
			return nil, err
		}
		if rh.Type != dnsmessage.TypeA {
			if err := p.SkipAnswer(); err != nil {
				return nil, err
			}
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, netip.AddrFrom4(a.A).String())
	}
}

// podNetNS finds the network namespace whose eth0 has ip, through the
// pause processes that hold pods' namespaces.
func podNetNS(ip netip.Addr) (netns.NsHandle, error) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "pause" {
			continue
		}
		ns, err := netns.GetFromPath(filepath.Join("/proc", p.Name(), "ns/net"))
		if err != nil {
			continue
		}
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			ns.Close()
			continue
		}
		addrs, _ := h.AddrList(nil, netlink.FAMILY_V4)
		h.Close()
		for _, a := range addrs {
			if a.IP.String() == ip.String() {
				return ns, nil
			}
		}
		ns.Close()
	}
	return 0, fmt.Errorf("no pause process holds a namespace with %s", ip)
}

// get makes an HTTP/1.0 GET of / on addr from the calling thread (its
// network namespace) and returns the body.
func get(addr string) (string, error) { return getWithin(addr, 5*time.Second) }

func getWithin(addr string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: echo\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	head, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.0 200") && !strings.HasPrefix(head, "HTTP/1.1 200") {
		return "", fmt.Errorf("response %q", resp)
	}
	return body, nil
}

// waitPodRunning waits for pod default/<name> to run in a container other
// than old, and returns its IP and container.
func waitPodRunning(t *testing.T, kc func(...string) (string, error), state, name, old string) (netip.Addr, string) {
	t.Helper()
	var got string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, _ = kc("get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].ready}")
		f := strings.Fields(got)
		if len(f) == 4 && f[0] == "Running" && f[2] != old && f[3] == "true" {
			if addr, err := netip.ParseAddr(f[1]); err == nil {
				return addr, f[2]
			}
		}
		if time.Now().After(deadline) {
			events, _ := kc("get", "events", "-A")
			dumpNodeLogs(t, state)
			t.Fatalf("pod not running after 2m: %q\n%s", got, events)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// eniOf returns the instance whose ENI holds ip.
func eniOf(t *testing.T, c *ec2sdk.Client, ip netip.Addr) string {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ni := range out.NetworkInterfaces {
		for _, a := range ni.PrivateIpAddresses {
			if a.PrivateIpAddress != nil && *a.PrivateIpAddress == ip.String() && ni.Attachment != nil && ni.Attachment.InstanceId != nil {
				return *ni.Attachment.InstanceId
			}
		}
	}
	return ""
}

func refused(ip netip.Addr) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), "80"), 5*time.Second)
	if err == nil {
		c.Close()
		return errors.New("something listens on port 80 of a pause container")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	return nil
}

// freeOn reports whether addr's port is free on ip too.
func freeOn(ip, addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// dumpNodeLogs logs the tails of the cluster's logs.
func dumpNodeLogs(t *testing.T, state string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(state, "*.log"))
	more, _ := filepath.Glob(filepath.Join(state, "nodes", "*", "var/log/berth/*.log"))
	for _, p := range append(logs, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("--- %s (tail)\n%s", p, b)
	}
}
