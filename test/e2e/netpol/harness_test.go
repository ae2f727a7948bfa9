// Package netpol_test proves NetworkPolicy enforcement end to end: a real
// control plane runs the PolicyEndpoint controller, a localcloud instance
// runs berth-ipamd and berth-netpol, pods are network namespaces made by
// berth-cni through libcni, and every ordered pair of pods is probed.
package netpol_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/test/e2e"
)

// harness is one node with the x, y, z × a, b, c pods of the upstream
// NetworkPolicy suite.
type harness struct {
	t         testing.TB
	kube      kubernetes.Interface
	dyn       dynamic.Interface
	node      *e2e.CNINode
	nodeName  string
	nodeIP    string
	npa       string
	pods      []*hpod
	m         *model
	sctpPort  atomic.Uint32
	agent     *exec.Cmd
	agentArgs []string
	// changed is when the test last changed a policy or a label.
	changed time.Time
}

// settle is how long a change is given to reach every datapath before the
// first probe: a probe made earlier could see the old state and, when the
// old state happens to equal the expected one, pass for the wrong reason.
const settle = time.Second

type hpod struct {
	*mpod
	cni  *e2e.CNIPod
	sctp sync.Map // "srcIP srcPort dstPort" of SCTP packets received
	seen sync.Map // netip.Addr → *atomic.Int64: TCP connections and UDP datagrams received
}

func (p *hpod) count(a netip.Addr) {
	v, _ := p.seen.LoadOrStore(a.Unmap(), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// received is how many connections and datagrams came from a.
func (p *hpod) received(a netip.Addr) int64 {
	if v, ok := p.seen.Load(a); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

var namespaces = []string{"x", "y", "z"}
var podNames = []string{"a", "b", "c"}

// servedPorts are the pods' listeners, named as upstream names them.
var servedPorts = func() []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, port := range []int32{80, 81} {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			out = append(out, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))),
				ContainerPort: port, Protocol: proto})
		}
	}
	return out
}()

func newHarness(t testing.TB, mode, instanceType string) *harness {
	t.Helper()
	e2e.Require(t, os.Geteuid() == 0, "needs root for namespaces, veths and eBPF")
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=on", "--instance-start-delay=0s", "--attach-delay-min=50ms",
		"--attach-delay-max=100ms")
	ec2 := lc.EC2(t)
	subnet, _ := e2e.OwnSubnet(t, ec2, 0, 20)
	hostIP := e2e.HostAddress(t)
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), "netpol", "--listen", e2e.FreePortOn(t, hostIP))
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 200, 400
	h := &harness{t: t, kube: kubernetes.NewForConfigOrDie(rc), dyn: dynamic.NewForConfigOrDie(rc), m: &model{nsLabels: map[string]map[string]string{},
		policies: map[string]*networkingv1.NetworkPolicy{}}}
	h.sctpPort.Store(20000)
	h.node = e2e.StartCNINode(t, ec2, subnet, instanceType, nil, "NETWORK_POLICY_ENFORCING_MODE="+mode)
	h.nodeName = "ip-" + strings.ReplaceAll(h.node.Inst.PrimaryIP, ".", "-") + ".us-west-2.compute.internal"
	h.nodeIP = h.node.Inst.PrimaryIP
	h.npa = filepath.Join(h.node.Dir, "npa.sock")
	h.pointCNIAtAgent()
	h.createNode()
	h.startAgent(agentKubeconfig(t, cp), mode)
	return h
}

// agentKubeconfig is a kubeconfig of the ServiceAccount deploy/rbac gives
// the agent: the tests prove that role is enough.
func agentKubeconfig(t testing.TB, cp *e2e.Controlplane) string {
	t.Helper()
	wd, err := os.Getwd() // go test runs in the package's directory
	if err != nil {
		t.Fatal(err)
	}
	rbac := filepath.Join(wd, "..", "..", "..", "deploy", "rbac", "netpol-agent.yaml")
	if out, err := cp.Kubectl(t, "apply", "-f", rbac); err != nil {
		t.Fatalf("kubectl apply %s: %v\n%s", rbac, err, out)
	}
	return cp.ServiceAccountKubeconfig(t, "kube-system", "berth-netpol")
}

// pointCNIAtAgent sets npaSocket in the conflist libcni uses.
func (h *harness) pointCNIAtAgent() {
	var raw map[string]any
	if err := json.Unmarshal(h.node.ConfList.Bytes, &raw); err != nil {
		h.t.Fatal(err)
	}
	raw["plugins"].([]any)[0].(map[string]any)["npaSocket"] = h.npa
	b, _ := json.Marshal(raw)
	cl, err := libcni.ConfListFromBytes(b)
	if err != nil {
		h.t.Fatal(err)
	}
	h.node.ConfList = cl
}

func (h *harness) createNode() {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.nodeName}}
	if _, err := h.kube.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) startAgent(kubeconfig, mode string) {
	pin := fmt.Sprintf("/sys/fs/bpf/berth-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	h.t.Cleanup(func() { _ = os.RemoveAll(pin) })
	h.agentArgs = []string{"--kubeconfig", kubeconfig, "--node-name", h.nodeName, "--ipamd-socket", h.node.Socket,
		"--socket", h.npa, "--pin-dir", pin, "--metrics-addr", h.agentMetrics(), "--mode", mode}
	h.runAgent()
}

func (h *harness) runAgent() {
	_ = os.Remove(h.npa)
	env := []string{"PATH=" + os.Getenv("PATH")}
	h.agent = e2e.StartIn(h.t, h.node.Inst.NetNS, env, e2e.Bin(h.t, "berth-netpol"), h.agentArgs...)
	e2e.WaitFor(h.t, "npa.sock", 60*time.Second, func() bool {
		_, err := os.Stat(h.npa)
		return err == nil
	})
}

// killAgent stops the agent as a crash or an upgrade would: SIGKILL.
func (h *harness) killAgent() {
	_ = h.agent.Process.Kill()
	_ = h.agent.Wait()
}

// addNamespaces creates x, y, z labelled ns=<name>.
func (h *harness) addNamespaces() { h.addNamespacesNamed(namespaces...) }

func (h *harness) addNamespacesNamed(names ...string) {
	for _, ns := range names {
		l := map[string]string{"ns": ns}
		o := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}}
		if _, err := h.kube.CoreV1().Namespaces().Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			h.t.Fatal(err)
		}
		h.m.nsLabels[ns] = map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}
	}
	// Pods can be created once the namespace's default service account exists.
	for _, ns := range names {
		e2e.WaitFor(h.t, "service account "+ns+"/default", 30*time.Second, func() bool {
			_, err := h.kube.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{})
			return err == nil
		})
	}
}

// addPod creates the Pod object, then its network through berth-cni (ADD
// returns only once the agent enforces the pod), then reports its IP in
// the pod's status as kubelet would.
func (h *harness) addPod(ns, name string, extraLabels map[string]string) *hpod {
	h.t.Helper()
	return h.addPodAfter(ns, name, extraLabels, nil)
}

// addPodAfter is addPod with a hook that runs inside the new pod's
// namespace before ADD.
func (h *harness) addPodAfter(ns, name string, extraLabels map[string]string, before func(netns string)) *hpod {
	h.t.Helper()
	ctx := context.Background()
	l := map[string]string{"pod": name}
	for k, v := range extraLabels {
		l[k] = v
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l},
		Spec: corev1.PodSpec{NodeName: h.nodeName, Containers: []corev1.Container{{Name: "serve", Image: "agnhost", Ports: servedPorts}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}},
	}
	if _, err := h.kube.CoreV1().Pods(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	cp, err := h.node.AddPodAfter(h.t, ns, name, before)
	if err != nil {
		h.t.Fatalf("ADD %s/%s: %v", ns, name, err)
	}
	h.t.Cleanup(func() { _ = h.node.DelPod(cp) })
	p := &hpod{mpod: &mpod{ns: ns, name: name, labels: l, ip: cp.IP, ports: servedPorts}, cni: cp}
	h.serve(p)
	st, err := h.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	st.Status.Phase = corev1.PodRunning
	st.Status.PodIP = cp.IP.String()
	st.Status.PodIPs = []corev1.PodIP{{IP: cp.IP.String()}}
	st.Status.HostIP = h.nodeIP
	st.Status.HostIPs = []corev1.HostIP{{IP: h.nodeIP}}
	if _, err := h.kube.CoreV1().Pods(ns).UpdateStatus(ctx, st, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.pods = append(h.pods, p)
	h.m.pods = append(h.m.pods, p.mpod)
	return p
}

// serve listens inside the pod on TCP and UDP 80 and 81 (echo) and on a
// raw SCTP socket: this kernel has no SCTP stack, so SCTP reachability is
// whether an SCTP packet arrives.
func (h *harness) serve(p *hpod) {
	h.t.Helper()
	var closers []io.Closer
	err := e2e.InNetNS(p.cni.NetNS, func() error {
		for _, port := range []int{80, 81} {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closers = append(closers, ln)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
						p.count(ra.AddrPort().Addr())
					}
					go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
				}
			}()
			pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closers = append(closers, pc)
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					if ua, ok := from.(*net.UDPAddr); ok {
						p.count(ua.AddrPort().Addr())
					}
					_, _ = pc.WriteTo(buf[:n], from)
				}
			}()
		}
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132)
		if err != nil {
			return fmt.Errorf("raw SCTP socket: %w", err)
		}
		f := os.NewFile(uintptr(fd), "sctp-raw")
		closers = append(closers, f)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, err := f.Read(buf)
				if err != nil {
					return
				}
				if n < 20 {
					continue
				}
				ihl := int(buf[0]&0x0f) * 4
				if n < ihl+4 {
					continue
				}
				src := netip.AddrFrom4([4]byte(buf[12:16]))
				sport := binary.BigEndian.Uint16(buf[ihl:])
				dport := binary.BigEndian.Uint16(buf[ihl+2:])
				p.sctp.Store(fmt.Sprintf("%s %d %d", src, sport, dport), true)
			}
		}()
		return nil
	})
	if err != nil {
		h.t.Fatalf("serve in %s/%s: %v", p.ns, p.name, err)
	}
	h.t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
}

const probeTimeout = 500 * time.Millisecond

// agentMetrics is where berth-netpol serves metrics inside the instance
// (on its primary address: the instance's loopback is down).
func (h *harness) agentMetrics() string { return net.JoinHostPort(h.nodeIP, "18162") }

// metric reads one sample of the agent's metrics (0 when absent).
func (h *harness) metric(name string) float64 {
	h.t.Helper()
	var body []byte
	err := e2e.InNetNS(h.node.Inst.NetNS, func() error {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		r, err := c.Get("http://" + h.agentMetrics() + "/metrics")
		if err != nil {
			return err
		}
		defer r.Body.Close()
		body, err = io.ReadAll(r.Body)
		return err
	})
	if err != nil {
		h.t.Fatalf("agent metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				h.t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// programmed is how many PolicyEndpoint changes the agent has enforced.
func (h *harness) programmed() int64 {
	return int64(h.metric("berth_netpol_programming_seconds_count"))
}

// probe tries one connection from → to.
func (h *harness) probe(from, to *hpod, proto corev1.Protocol, port int32) bool {
	addr := netip.AddrPortFrom(to.ip, uint16(port)).String()
	switch proto {
	case corev1.ProtocolTCP:
		_, err := e2e.DialFrom(from.cni.NetNS, addr, probeTimeout)
		return err == nil
	case corev1.ProtocolUDP:
		ok := false
		_ = e2e.InNetNS(from.cni.NetNS, func() error {
			c, err := net.Dial("udp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(probeTimeout))
			buf := make([]byte, 16)
			for i := 0; i < 3 && !ok; i++ {
				if _, err := c.Write([]byte("probe")); err != nil {
					return err
				}
				_ = c.SetReadDeadline(time.Now().Add(probeTimeout / 3))
				if n, err := c.Read(buf); err == nil && string(buf[:n]) == "probe" {
					ok = true
				}
			}
			return nil
		})
		return ok
	default:
		sport := uint16(h.sctpPort.Add(1)%40000 + 20000)
		key := fmt.Sprintf("%s %d %d", from.ip, sport, port)
		err := e2e.InNetNS(from.cni.NetNS, func() error {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132)
			if err != nil {
				return err
			}
			defer syscall.Close(fd)
			sa := &syscall.SockaddrInet4{Addr: to.ip.As4()}
			return syscall.Sendto(fd, sctpInit(sport, uint16(port)), 0, sa)
		})
		if err != nil {
			return false
		}
		deadline := time.Now().Add(probeTimeout)
		for time.Now().Before(deadline) {
			if _, ok := to.sctp.Load(key); ok {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	}
}

// sctpInit is an SCTP common header and an INIT chunk, with its CRC32c.
func sctpInit(sport, dport uint16) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 1 // INIT
	binary.BigEndian.PutUint16(b[14:], 20)
	binary.BigEndian.PutUint32(b[16:], rand.Uint32()|1) // initiate tag
	binary.BigEndian.PutUint32(b[20:], 65535)           // a_rwnd
	binary.BigEndian.PutUint16(b[24:], 1)
	binary.BigEndian.PutUint16(b[26:], 1)
	binary.BigEndian.PutUint32(b[28:], rand.Uint32())
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return b
}

type probeSpec struct {
	proto corev1.Protocol
	port  int32
}

func (p probeSpec) String() string { return fmt.Sprintf("%s/%d", p.proto, p.port) }

// matrix probes every ordered pair of distinct pods at once.
func (h *harness) matrix(ps probeSpec) map[[2]int]bool {
	out := map[[2]int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 24)
	for i, from := range h.pods {
		for j, to := range h.pods {
			if i == j {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				ok := h.probe(from, to, ps.proto, ps.port)
				<-sem
				mu.Lock()
				out[[2]int{i, j}] = ok
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return out
}

func (h *harness) expected(ps probeSpec) map[[2]int]bool {
	out := map[[2]int]bool{}
	for i, from := range h.pods {
		for j, to := range h.pods {
			if i != j {
				out[[2]int{i, j}] = h.m.allowed(from.mpod, to.mpod, ps.proto, ps.port)
			}
		}
	}
	return out
}

// expect probes until the observed matrix equals the oracle's, and fails
// with both tables when it does not within the propagation deadline.
func (h *harness) expect(what string, ps probeSpec) {
	h.t.Helper()
	want := h.expected(ps)
	time.Sleep(time.Until(h.changed.Add(settle)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.matrix(ps)
		diff := h.diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s %s: observed reachability differs from the oracle (row from, column to; X = reached, . = blocked, ! = wrong):\n%s", what, ps, diff)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (h *harness) diff(want, got map[[2]int]bool) string {
	wrong := false
	var b strings.Builder
	b.WriteString("      ")
	for _, p := range h.pods {
		fmt.Fprintf(&b, "%-4s", p.ns+"/"+p.name)
	}
	b.WriteString("\n")
	for i, from := range h.pods {
		fmt.Fprintf(&b, "%-6s", from.ns+"/"+from.name)
		for j := range h.pods {
			c := "-"
			if i != j {
				w, g := want[[2]int{i, j}], got[[2]int{i, j}]
				switch {
				case w != g:
					c, wrong = "!", true
				case g:
					c = "X"
				default:
					c = "."
				}
			}
			fmt.Fprintf(&b, "%-4s", c)
		}
		b.WriteString("\n")
	}
	if !wrong {
		return ""
	}
	return b.String()
}

// apply creates or updates a policy in the cluster and in the oracle.
func (h *harness) apply(np *networkingv1.NetworkPolicy) {
	h.t.Helper()
	ctx := context.Background()
	c := h.kube.NetworkingV1().NetworkPolicies(np.Namespace)
	cur, err := c.Get(ctx, np.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, np, metav1.CreateOptions{})
	case err == nil:
		np.ResourceVersion = cur.ResourceVersion
		_, err = c.Update(ctx, np, metav1.UpdateOptions{})
	}
	if err != nil {
		h.t.Fatalf("apply policy %s/%s: %v", np.Namespace, np.Name, err)
	}
	h.m.policies[np.Namespace+"/"+np.Name] = np.DeepCopy()
	h.changed = time.Now()
}

func (h *harness) deletePolicy(ns, name string) {
	h.t.Helper()
	if err := h.kube.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatal(err)
	}
	delete(h.m.policies, ns+"/"+name)
	h.changed = time.Now()
}

// deleteAllPolicies resets the cluster between scenarios.
func (h *harness) deleteAllPolicies() {
	h.t.Helper()
	keys := make([]string, 0, len(h.m.policies))
	for k := range h.m.policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		h.deletePolicy(ns, name)
	}
}

func (h *harness) pod(ns, name string) *hpod {
	for _, p := range h.pods {
		if p.ns == ns && p.name == name {
			return p
		}
	}
	h.t.Fatalf("no pod %s/%s", ns, name)
	return nil
}

// labelPod replaces a pod's labels in the cluster and in the oracle.
func (h *harness) labelPod(ns, name string, l map[string]string) {
	h.t.Helper()
	ctx := context.Background()
	p, err := h.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	p.Labels = l
	if _, err := h.kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.pod(ns, name).labels = l
	h.changed = time.Now()
}

// labelNamespace replaces a namespace's labels (the apiserver keeps
// kubernetes.io/metadata.name).
func (h *harness) labelNamespace(ns string, l map[string]string) {
	h.t.Helper()
	ctx := context.Background()
	o, err := h.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	o.Labels = map[string]string{"kubernetes.io/metadata.name": ns}
	for k, v := range l {
		o.Labels[k] = v
	}
	if _, err := h.kube.CoreV1().Namespaces().Update(ctx, o, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.m.nsLabels[ns] = o.Labels
	h.changed = time.Now()
}

// waitPolicyEndpoints waits until the controller wrote the policy's
// PolicyEndpoints.
func (h *harness) waitPolicyEndpoints(ns, name string) {
	h.t.Helper()
	e2e.WaitFor(h.t, "PolicyEndpoints of "+ns+"/"+name, 30*time.Second, func() bool {
		l, err := h.dyn.Resource(pe.GroupVersionResource).Namespace(ns).List(context.Background(),
			metav1.ListOptions{LabelSelector: pe.LabelPolicyName + "=" + name})
		return err == nil && len(l.Items) > 0
	})
}

// metricQuantile is the upper bound of the histogram bucket holding the
// q-quantile of one of the agent's histograms.
func (h *harness) metricQuantile(name string, q float64) time.Duration {
	h.t.Helper()
	total := h.metric(name + "_count")
	if total == 0 {
		return 0
	}
	for _, le := range []string{"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"} {
		if h.metric(name+`_bucket{le="`+le+`"}`) >= q*total {
			if le == "+Inf" {
				return time.Duration(1<<63 - 1)
			}
			f, _ := strconv.ParseFloat(le, 64)
			return time.Duration(f * float64(time.Second))
		}
	}
	return 0
}
