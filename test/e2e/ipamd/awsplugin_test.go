package ipamd_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/berth-io/berth/test/e2e"
)

const awsCNIVersion = "v1.23.2"

// buildAWSPlugin builds the Amazon VPC CNI plugin binary of v1.23.2 from
// the Go module proxy in a throwaway module (cached across runs).
func buildAWSPlugin(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "berth-test", "aws-cni-"+awsCNIVersion)
	bin := filepath.Join(dir, "aws-cni")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The two replace lines come from the plugin's own go.mod.
	gomod := `module awscniplugin

go 1.26

replace gopkg.in/yaml.v3 v3.0.0-20200615113413-eeeca48fe776 => gopkg.in/yaml.v3 v3.0.1

replace github.com/veraison/go-cose => github.com/veraison/go-cose v1.1.0
`
	tools := "//go:build tools\n\npackage tools\n\nimport _ \"github.com/aws/amazon-vpc-cni-k8s/cmd/routed-eni-cni-plugin\"\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	run("get", "github.com/aws/amazon-vpc-cni-k8s@"+awsCNIVersion)
	run("build", "-ldflags", "-X main.version="+awsCNIVersion, "-o", bin+".tmp", "github.com/aws/amazon-vpc-cni-k8s/cmd/routed-eni-cni-plugin")
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// awsPluginTest starts a test that drives ipamd with the VPC CNI plugin,
// which dials the fixed /var/run/aws-node/ipamd.sock: only one such ipamd
// can run on the machine. It returns the plugin binary.
func awsPluginTest(t *testing.T) string {
	t.Helper()
	e2e.Require(t, os.Geteuid() == 0, "needs root")
	if _, err := os.Stat("/var/run/aws-node/ipamd.sock"); err == nil {
		t.Fatal("/var/run/aws-node/ipamd.sock exists: another ipamd runs on this machine")
	}
	return buildAWSPlugin(t)
}

// TestAmazonVPCCNIPluginWireCompatibility drives berth-ipamd with the real
// Amazon VPC CNI plugin binary: ADD gives the pod a working VPC address,
// DEL releases it. The plugin dials the fixed socket
// /var/run/aws-node/ipamd.sock, so this node's ipamd listens there.
func TestAmazonVPCCNIPluginWireCompatibility(t *testing.T) {
	plugin := awsPluginTest(t)
	cl := newCluster(t, "10.64.0.0/16", "10.64.0.0/20")
	n := cl.startNodeAt(t, "m5.large", "/var/run/aws-node/ipamd.sock")
	target := cl.peerListening(t, 7070)

	installAWSPlugin(t, n, plugin)
	logFile := filepath.Join(t.TempDir(), "aws-plugin.log")
	conf, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,
		"plugins":[{"type":"aws-cni","vethPrefix":"eni","mtu":"9001","podSGEnforcingMode":"strict","pluginLogFile":%q,"pluginLogLevel":"Debug",
		"capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}`, logFile)))
	if err != nil {
		t.Fatal(err)
	}
	awsPod, err := n.addWith(t, conf, "aws-plugin-pod")
	if err != nil {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("ADD through the Amazon VPC CNI plugin: %v\n%s", err, b)
	}
	ip := awsPod.ip
	if !netip.MustParsePrefix("10.64.0.0/20").Contains(ip) {
		t.Fatalf("pod got %s", ip)
	}
	if _, err := awsPod.dial(net.JoinHostPort(target.ip.String(), "7070")); err != nil {
		t.Fatalf("a pod set up by the AWS plugin cannot reach another node: %v", err)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), conf, awsPod.rt) }); err != nil {
		t.Fatalf("DEL through the Amazon VPC CNI plugin: %v", err)
	}
	for _, held := range introspectPods(t, n) {
		if held == ip.String() {
			t.Fatalf("%s still allocated after the AWS plugin's DEL", ip)
		}
	}
	multiNICRefused(t, n, "aws-plugin", conf)
	multiNICRefused(t, n, "berth-cni", n.conf(t))

	// A pod berth-cni made, deleted by aws-cni (a node handed back to
	// aws-node): libcni gives it berth's result as prevResult. aws-cni
	// reads the dummy interface's "mac" as a VLAN, and any but 0 makes it
	// tear the pod down as a branch-ENI pod without asking ipamd, whose
	// address would then stay allocated.
	berthPod, err := n.add(t, "made-by-berth")
	if err != nil {
		t.Fatal(err)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), conf, berthPod.rt) }); err != nil {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("aws-cni's DEL of a pod berth-cni made: %v\n%s", err, b)
	}
	for _, held := range introspectPods(t, n) {
		if held == berthPod.ip.String() {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("%s still allocated after aws-cni's DEL of a pod berth-cni made\n%s", berthPod.ip, b)
		}
	}
}

// multiNICRefused creates a pod annotated for an interface on every
// network card through conf (the runtime passes the annotations because
// the plugin declares the capability): ipamd, without ENABLE_MULTI_NIC,
// must fail the ADD naming the annotation and hold no address for it,
// and the runtime's DEL that follows must succeed.
func multiNICRefused(t *testing.T, n *node, name string, conf *libcni.NetworkConfigList) {
	t.Helper()
	nsName := fmt.Sprintf("pod-mnic-%d", time.Now().UnixNano()%1e6)
	rt := &libcni.RuntimeConf{ContainerID: "c-" + nsName, NetNS: e2e.NewNetNS(t, nsName), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "multi-nic-" + name}, {"K8S_POD_INFRA_CONTAINER_ID", "c-" + nsName}, {"IgnoreUnknown", "1"}},
		CapabilityArgs: map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{
			"k8s.amazonaws.com/nicConfig": "multi-nic-attachment", "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}
	before := len(introspectPods(t, n))
	err := e2e.InNetNS(n.inst.NetNS, func() error {
		_, err := n.cni.AddNetworkList(context.Background(), conf, rt)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "multi-nic-attachment") {
		t.Fatalf("%s: ADD of a multi-NIC pod: %v, want the refusal naming the annotation", name, err)
	}
	if after := len(introspectPods(t, n)); after != before {
		t.Fatalf("%s: a refused multi-NIC pod holds an address (%d allocations, %d before)", name, after, before)
	}
	var eth0 bool
	if err := e2e.InNetNS(nsName, func() error { _, lerr := net.InterfaceByName("eth0"); eth0 = lerr == nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if eth0 {
		t.Fatalf("%s: a refused multi-NIC pod has an eth0", name)
	}
	if err := e2e.InNetNS(n.inst.NetNS, func() error { return n.cni.DelNetworkList(context.Background(), conf, rt) }); err != nil {
		t.Fatalf("%s: DEL after the refused ADD: %v", name, err)
	}
}
