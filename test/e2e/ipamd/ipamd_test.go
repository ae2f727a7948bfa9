// Package ipamd_test runs berth-ipamd inside localcloud instances and
// creates pods through libcni, as containerd does.
package ipamd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berth-io/berth/test/e2e"
)

// node is berth-ipamd running in one instance.
type node struct {
	inst             e2e.Instance
	pluginLog        string // berth-cni's log file (AWS_VPC_K8S_PLUGIN_LOG_FILE)
	binDir, confDir  string
	socket, stateDir string
	cmd              *exec.Cmd
	cni              *libcni.CNIConfig
}

type cluster struct {
	lc  *e2e.Localcloud
	ec2 *ec2sdk.Client
	vpc string
	sub string
	// prepare, when set, runs between an instance's launch and its ipamd's
	// start (what another provisioner would have done to it).
	prepare func(t testing.TB, inst e2e.Instance)
}

func newCluster(t testing.TB, cidr, subnet string) *cluster {
	t.Helper()
	e2e.Require(t, os.Geteuid() == 0, "needs root")
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath=on", "--instance-start-delay=0s", "--attach-delay-min=100ms",
		"--attach-delay-max=300ms", "--imds-lag=200ms")
	c := lc.EC2(t)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(subnet), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{lc: lc, ec2: c, vpc: *v.Vpc.VpcId, sub: *s.Subnet.SubnetId}
}

// startNode runs an instance and berth-ipamd inside it.
func (cl *cluster) startNode(t testing.TB, typ string, env ...string) *node {
	t.Helper()
	return cl.startNodeAt(t, typ, "", env...)
}

// startNodeAt is startNode with an explicit socket path ("" = a temp one).
func (cl *cluster) startNodeAt(t testing.TB, typ, socket string, env ...string) *node {
	t.Helper()
	return cl.startNodeWith(t, typ, socket, "", []string{"--chain-portmap=false"}, env...)
}

// startNodeWith also takes ipamd's state directory ("" = a temp one) and
// extra berth-ipamd flags.
func (cl *cluster) startNodeWith(t testing.TB, typ, socket, stateDir string, flags []string, env ...string) *node {
	t.Helper()
	inst := e2e.RunInstance(t, cl.ec2, cl.sub, typ)
	if cl.prepare != nil {
		cl.prepare(t, inst)
	}
	dir := t.TempDir()
	if socket == "" {
		socket = filepath.Join(dir, "ipamd.sock")
	}
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	n := &node{inst: inst, binDir: filepath.Join(dir, "bin"), confDir: filepath.Join(dir, "net.d"),
		socket: socket, stateDir: stateDir, pluginLog: filepath.Join(dir, "plugin.log")}
	ipamd := e2e.Bin(t, "berth-ipamd")
	e2e.Bin(t, "berth-cni") // must sit beside berth-ipamd
	base := []string{"PATH=" + os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://169.254.169.254:4566",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "IP_COOLDOWN_PERIOD=1",
		"AWS_VPC_K8S_PLUGIN_LOG_FILE=" + n.pluginLog}
	args := append([]string{"--cni-bin-dir", n.binDir, "--cni-conf-dir", n.confDir, "--socket", n.socket, "--state-dir", n.stateDir, "--log-level", "debug"}, flags...)
	n.cmd = e2e.StartIn(t, inst.NetNS, append(base, env...), ipamd, args...)
	e2e.WaitFor(t, "conflist of "+inst.ID, 60*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(n.confDir, "10-berth.conflist"))
		return err == nil
	})
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.binDir, "/usr/lib/cni"}, filepath.Join(dir, "cache"), nil)
	return n
}

func (n *node) conf(t testing.TB) *libcni.NetworkConfigList {
	t.Helper()
	c, err := libcni.ConfListFromFile(filepath.Join(n.confDir, "10-berth.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type pod struct {
	name, ns, netns string
	ip              netip.Addr
	rt              *libcni.RuntimeConf
}

// peerListening starts another m5.large node with a pod that accepts TCP
// on port: the far end of pods' traffic across the VPC router.
func (cl *cluster) peerListening(t testing.TB, port int) *pod {
	t.Helper()
	target, err := cl.startNode(t, "m5.large").add(t, "target")
	if err != nil {
		t.Fatal(err)
	}
	target.listen(t, port)
	return target
}

// add creates a pod through libcni from inside the node's namespace.
func (n *node) add(t testing.TB, name string) (*pod, error) {
	t.Helper()
	return n.addWith(t, n.conf(t), name)
}

// addWith creates a pod with conf (another plugin's, say).
func (n *node) addWith(t testing.TB, conf *libcni.NetworkConfigList, name string) (*pod, error) {
	t.Helper()
	nsName := fmt.Sprintf("pod-%s-%d", name, time.Now().UnixNano()%1e6)
	p := &pod{name: name, ns: "default", netns: e2e.NewNetNS(t, nsName)}
	p.rt = &libcni.RuntimeConf{ContainerID: "c-" + nsName, NetNS: p.netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", p.ns}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", "c-" + nsName}, {"IgnoreUnknown", "1"}}}
	var res *types100.Result
	err := e2e.InNetNS(n.inst.NetNS, func() error {
		r, err := n.cni.AddNetworkList(context.Background(), conf, p.rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return p, err // the runtime still DELs a failed sandbox
	}
	if len(res.IPs) != 1 {
		return nil, fmt.Errorf("result has %d IPs", len(res.IPs))
	}
	p.ip, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return p, nil
}

// del runs DEL and then, as a runtime does, deletes the pod's namespace.
func (n *node) del(t testing.TB, p *pod) error {
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), n.conf(t), p.rt) }); err != nil {
		return err
	}
	_ = exec.Command("ip", "netns", "del", filepath.Base(p.netns)).Run()
	return nil
}

func (n *node) check(t testing.TB, p *pod) error {
	return e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.CheckNetworkList(context.Background(), n.conf(t), p.rt) })
}

// listen serves TCP echo inside the pod.
func (p *pod) listen(t testing.TB, port int) {
	t.Helper()
	var ln net.Listener
	if err := e2e.InNetNS(filepath.Base(p.netns), func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

func (p *pod) dial(addr string) (net.Addr, error) {
	return e2e.DialFrom(filepath.Base(p.netns), addr, 2*time.Second)
}

// sourceOutside connects from the pod to a listener on the host, outside
// the VPC (169.254.123.1 is the host's side of the VPC router), and
// returns the source address the listener saw.
func (p *pod) sourceOutside(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	remote := make(chan string, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			remote <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	if _, err := p.dial(fmt.Sprintf("169.254.123.1:%d", ln.Addr().(*net.TCPAddr).Port)); err != nil {
		t.Fatalf("pod %s to outside the VPC: %v", p.name, err)
	}
	return <-remote
}

func TestPodsThroughLibcni(t *testing.T) {
	cl := newCluster(t, "10.61.0.0/16", "10.61.0.0/20")
	a := cl.startNode(t, "m5.large")
	b := cl.startNode(t, "m5.large")
	subnet := netip.MustParsePrefix("10.61.0.0/20")

	p1, err := a.add(t, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := a.add(t, "web-2")
	if err != nil {
		t.Fatal(err)
	}
	p3, err := b.add(t, "api-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*pod{p1, p2, p3} {
		if !subnet.Contains(p.ip) {
			t.Fatalf("pod %s got %s, not a VPC address", p.name, p.ip)
		}
	}
	// aws-node's start-up and connmark metrics, by its names and labels.
	_, m := nodeGet(t, a, "http://127.0.0.1:61678/metrics")
	for _, want := range []string{`awscni_connmark_backend{backend="nftables"} 1`, `awscni_connmark_reconcile_total{result="success"}`,
		`awscni_ipamd_startup_duration_seconds_count{failure_reason="",success="true",with_api_server="false"} 1`,
		`awscni_ipamd_node_initialization_duration_seconds_count{success="true"} 1`, "awscni_force_removed_ips 0", "awscni_force_removed_enis 0"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("ipamd's /metrics lacks %s", want)
		}
	}
	// aws-node's default plugin log level (Debug) logs every ADD.
	if logged, err := os.ReadFile(a.pluginLog); err != nil || !strings.Contains(string(logged), `"ip":"`+p1.ip.String()+`"`) {
		t.Errorf("berth-cni's log %s: %v; want the ADD of %s in it:\n%s", a.pluginLog, err, p1.ip, logged)
	}
	p2.listen(t, 8080)
	p3.listen(t, 8080)
	if _, err := p1.dial(net.JoinHostPort(p2.ip.String(), "8080")); err != nil {
		t.Fatalf("pod to pod on one node: %v", err)
	}
	if _, err := p1.dial(net.JoinHostPort(p3.ip.String(), "8080")); err != nil {
		t.Fatalf("pod to pod across nodes through the VPC router: %v", err)
	}

	// Leaving the VPC: SNAT to the node's primary address.
	if got := p1.sourceOutside(t); got != a.inst.PrimaryIP {
		t.Fatalf("outside saw source %s, want the node's primary %s (SNAT)", got, a.inst.PrimaryIP)
	}

	if err := a.check(t, p1); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// DEL while the pod's namespace is still there, as the runtime calls
	// it: the host side is gone at once (rules and route, by ipamd before
	// it released the address), the veth waits for the namespace.
	if err := e2e.InNetNS(a.inst.NetNS, func() error { return a.cni.DelNetworkList(context.Background(), a.conf(t), p2.rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if out := ipIn(t, a.inst.NetNS, "route", "show", p2.ip.String()); strings.TrimSpace(out) != "" {
		t.Errorf("host route to %s after DEL: %s", p2.ip, out)
	}
	if out := ipIn(t, a.inst.NetNS, "rule", "show"); strings.Contains(out, " "+p2.ip.String()+" ") {
		t.Errorf("rules of %s after DEL:\n%s", p2.ip, out)
	}
	if err := a.del(t, p1); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := a.del(t, p1); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	pods := introspectPods(t, a)
	for _, ip := range pods {
		if ip == p1.ip.String() {
			t.Fatalf("%s still allocated after DEL", p1.ip)
		}
	}
}

// introspectPods lists the addresses pods hold, read from /v1/enis inside
// the node the way a VPC CNI runbook does (an address is held while its
// IPAMKey is set).
func introspectPods(t testing.TB, n *node) []string {
	t.Helper()
	var cards map[string]struct {
		ENIs map[string]struct {
			AvailableIPv4Cidrs map[string]struct {
				IPAddresses map[string]struct {
					Address string
					IPAMKey struct {
						NetworkName string `json:"networkName"`
					}
				}
			}
		}
	}
	code, body := introspect(t, n, "/v1/enis")
	if code != http.StatusOK {
		t.Fatalf("/v1/enis: %d %s", code, body)
	}
	if err := json.Unmarshal(body, &cards); err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, card := range cards {
		for _, eni := range card.ENIs {
			for _, cidr := range eni.AvailableIPv4Cidrs {
				for _, a := range cidr.IPAddresses {
					if a.IPAMKey.NetworkName != "" {
						ips = append(ips, a.Address)
					}
				}
			}
		}
	}
	return ips
}

// introspect GETs path from the node's ipamd introspection API.
func introspect(t testing.TB, n *node, path string) (int, []byte) {
	t.Helper()
	return nodeGet(t, n, "http://127.0.0.1:61679"+path)
}

// nodeGet GETs url inside the node's namespace.
func nodeGet(t testing.TB, n *node, url string) (int, []byte) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := e2e.InNetNS(n.inst.NetNS, func() (err error) { c, err = net.Dial(network, addr); return err })
		return c, err
	}}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestSecondaryENIPods(t *testing.T) {
	cl := newCluster(t, "10.62.0.0/16", "10.62.0.0/20")
	// t3.medium: 3 ENIs x 6 addresses: the primary ENI holds 5 pods.
	a := cl.startNode(t, "t3.medium", "WARM_ENI_TARGET=1")
	b := cl.startNode(t, "t3.medium")
	target, err := b.add(t, "target")
	if err != nil {
		t.Fatal(err)
	}
	target.listen(t, 9000)
	var pods []*pod
	for i := 0; i < 8; i++ {
		p, err := a.add(t, fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		pods = append(pods, p)
	}
	// Every pod, including those on a secondary ENI, reaches the other
	// node: the router's source/dest check passes only when a pod's
	// traffic leaves through the ENI that owns its address.
	for _, p := range pods {
		if _, err := p.dial(net.JoinHostPort(target.ip.String(), "9000")); err != nil {
			t.Fatalf("pod %s (%s) to %s: %v", p.name, p.ip, target.ip, err)
		}
		// CHECK, with the "from" rule of a secondary ENI's address and the
		// reservation in ipamd's checkpoint.
		if err := a.check(t, p); err != nil {
			t.Fatalf("CHECK of pod %s (%s): %v", p.name, p.ip, err)
		}
	}
	enis, err := cl.ec2.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, e := range enis.NetworkInterfaces {
		if e.Attachment != nil && *e.Attachment.InstanceId == a.inst.ID {
			count++
		}
	}
	if count < 2 {
		t.Fatalf("8 pods on a t3.medium should need a second ENI; node has %d", count)
	}
}

func TestBurstWithThrottling(t *testing.T) {
	cl := newCluster(t, "10.63.0.0/16", "10.63.0.0/20")
	n := cl.startNode(t, "m5.4xlarge", "WARM_ENI_TARGET=0", "WARM_IP_TARGET=2")
	// From now on, 30% of EC2 calls are throttled.
	body := `{"ec2:AssignPrivateIpAddresses":{"errorRate":0.3,"errorCode":"RequestLimitExceeded"},` +
		`"ec2:CreateNetworkInterface":{"errorRate":0.3,"errorCode":"RequestLimitExceeded"},` +
		`"ec2:AttachNetworkInterface":{"errorRate":0.3,"errorCode":"RequestLimitExceeded"},` +
		`"ec2:DescribeNetworkInterfaces":{"errorRate":0.3,"errorCode":"RequestLimitExceeded"}}`
	req, _ := http.NewRequest(http.MethodPut, cl.lc.Endpoint+"/_localcloud/faults", strings.NewReader(body))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("inject faults: %v %v", err, resp)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	seen := sync.Map{}
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, err := n.add(t, fmt.Sprintf("burst-%d", i))
			if err != nil {
				errs <- fmt.Errorf("pod %d: %w", i, err)
				return
			}
			if other, dup := seen.LoadOrStore(p.ip, p.name); dup {
				errs <- fmt.Errorf("%s given to %s and %s", p.ip, other, p.name)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// ipIn runs ip(8) in the named namespace and returns its output.
func ipIn(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + ns, "ip"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v in %s: %v\n%s", args, ns, err, out)
	}
	return string(out)
}
