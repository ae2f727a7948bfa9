package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// CNINode is a localcloud instance running berth-ipamd, ready for pods
// made through libcni as containerd makes them.
type CNINode struct {
	Inst                 Instance
	Dir, BinDir, ConfDir string
	Socket, StateDir     string
	Cmd                  *exec.Cmd
	CNI                  *libcni.CNIConfig
	ConfList             *libcni.NetworkConfigList
	podSeq               atomic.Int64
}

// StartCNINode runs an instance and berth-ipamd inside it, and waits for the
// conflist ipamd writes when it is ready.
func StartCNINode(t testing.TB, c *ec2sdk.Client, subnet, typ string, flags []string, env ...string) *CNINode {
	t.Helper()
	inst := RunInstance(t, c, subnet, typ)
	dir := t.TempDir()
	n := &CNINode{Inst: inst, Dir: dir, BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"),
		Socket: filepath.Join(dir, "ipamd.sock"), StateDir: filepath.Join(dir, "state")}
	ipamd := Bin(t, "berth-ipamd")
	Bin(t, "berth-cni") // must sit beside berth-ipamd
	base := []string{"PATH=" + os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://169.254.169.254:4566",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "IP_COOLDOWN_PERIOD=1",
		// The plugin's log stays with the test, not in the host's /var/log.
		"AWS_VPC_K8S_PLUGIN_LOG_FILE=" + filepath.Join(dir, "plugin.log")}
	args := append([]string{"--cni-bin-dir", n.BinDir, "--cni-conf-dir", n.ConfDir, "--socket", n.Socket,
		"--state-dir", n.StateDir, "--chain-portmap=false", "--introspection-addr=", "--metrics-addr="}, flags...)
	n.Cmd = StartIn(t, inst.NetNS, append(base, env...), ipamd, args...)
	WaitFor(t, "conflist of "+inst.ID, 60*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(n.ConfDir, "10-berth.conflist"))
		return err == nil
	})
	cl, err := libcni.ConfListFromFile(filepath.Join(n.ConfDir, "10-berth.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	n.ConfList = cl
	n.CNI = libcni.NewCNIConfigWithCacheDir([]string{n.BinDir, "/usr/lib/cni"}, filepath.Join(dir, "cache"), nil)
	return n
}

// CNIPod is a pod network namespace set up through berth-cni.
type CNIPod struct {
	Namespace, Name string
	NetNS           string // the namespace's name under /var/run/netns
	IP              netip.Addr
	rt              *libcni.RuntimeConf
}

// AddPod makes a network namespace for pod namespace/name and runs ADD on
// it from inside the node. On error the pod is still returned, for DelPod,
// as a runtime DELs a failed sandbox.
func (n *CNINode) AddPod(t testing.TB, namespace, name string) (*CNIPod, error) {
	t.Helper()
	return n.AddPodAfter(t, namespace, name, nil)
}

// AddPodAfter is AddPod that first calls before with the new namespace's
// name, as a test that must act inside the pod while ADD runs needs.
func (n *CNINode) AddPodAfter(t testing.TB, namespace, name string, before func(netns string)) (*CNIPod, error) {
	t.Helper()
	nsName := fmt.Sprintf("pod-%s-%s-%d-%d", namespace, name, os.Getpid()%1000, n.podSeq.Add(1))
	if len(nsName) > 40 {
		nsName = nsName[:40]
	}
	NewNetNS(t, nsName)
	p := &CNIPod{Namespace: namespace, Name: name, NetNS: nsName}
	if before != nil {
		before(nsName)
	}
	id := "c-" + nsName
	p.rt = &libcni.RuntimeConf{ContainerID: id, NetNS: "/var/run/netns/" + nsName, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", namespace}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", id}, {"IgnoreUnknown", "1"}}}
	var res *types100.Result
	err := InNetNS(n.Inst.NetNS, func() error {
		r, err := n.CNI.AddNetworkList(context.Background(), n.ConfList, p.rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return p, err
	}
	if len(res.IPs) != 1 {
		return p, fmt.Errorf("result has %d IPs", len(res.IPs))
	}
	p.IP, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return p, nil
}

// DelPod runs DEL and then, as a runtime does, deletes the namespace.
func (n *CNINode) DelPod(p *CNIPod) error {
	if err := InNetNS(n.Inst.NetNS, func() error { return n.CNI.DelNetworkList(context.Background(), n.ConfList, p.rt) }); err != nil {
		return err
	}
	_ = exec.Command("ip", "netns", "del", p.NetNS).Run()
	return nil
}
