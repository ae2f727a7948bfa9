package ipamd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/test/e2e"
)

// Benchmarks of the CNI path, reported as ratios measured in the same run:
// to the floor (the netlink work of an ADD done in process, plus one exec
// of a minimal static Go binary) and to the peer (the reference ptp +
// host-local plugins through libcni).

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// minimalBinary builds `func main() {}` statically, once per run.
func minimalBinary(b *testing.B) string {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module minimal\n\ngo 1.26\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", "minimal", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build minimal binary: %v %s", err, out)
	}
	return filepath.Join(dir, "minimal")
}

// skelOnlyBinary builds testdata/skelonly (a plugin that is only the CNI
// library's dispatch) the way make builds berth-cni: static, stripped, with
// berth-cni's GOEXPERIMENT (read from berthCNI itself).
func skelOnlyBinary(b *testing.B, berthCNI string) string {
	_, settings := buildSettings(b, berthCNI)
	out := filepath.Join(b.TempDir(), "skelonly")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./testdata/skelonly")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOEXPERIMENT="+settings["GOEXPERIMENT"])
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build skelonly: %v %s", err, o)
	}
	return out
}

func execTime(b *testing.B, name string, env []string) time.Duration {
	cmd := exec.Command(name)
	cmd.Env = env
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return time.Since(start)
}

// floorAdd does an ADD's netlink work in process: veth with its peer in
// the pod namespace, addresses, routes, neighbour, rule.
func floorAdd(b *testing.B, podNS string, i int) time.Duration {
	start := time.Now()
	pns, err := ns.GetNS(podNS)
	if err != nil {
		b.Fatal(err)
	}
	defer pns.Close()
	host := fmt.Sprintf("flr%d", i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 9001}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pns.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		b.Fatal(err)
	}
	l, _ := netlink.LinkByName(host)
	_ = netlink.LinkSetUp(l)
	ip := net.IPv4(10, 200, byte(i>>8), byte(i))
	_ = pns.Do(func(ns.NetNS) error {
		pl, _ := netlink.LinkByName("eth0")
		_ = netlink.LinkSetUp(pl)
		_ = netlink.AddrAdd(pl, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}})
		gw := net.IPv4(169, 254, 1, 1)
		_ = netlink.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
		_ = netlink.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gw})
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: pl.Attrs().Index, IP: gw, HardwareAddr: l.Attrs().HardwareAddr, State: netlink.NUD_PERMANENT})
	})
	_ = netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	r := netlink.NewRule()
	r.Priority, r.Dst, r.Table = 512, &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, 254
	_ = netlink.RuleAdd(r)
	d := time.Since(start)
	_ = netlink.RuleDel(r)
	_ = netlink.LinkDel(l)
	return d
}

// BenchmarkCNIAddDel measures ADD and DEL with ipamd's state directory
// (its checkpoint, written with an fsync) on tmpfs, where the default
// /var/run/aws-node is on EKS nodes (/var/run is /run there), and on disk,
// where it is on this machine and any host whose /run is not tmpfs.
func BenchmarkCNIAddDel(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	b.Run("state=tmpfs", func(b *testing.B) { benchCNIAddDel(b, tmpfsDir(b)) })
	b.Run("state=disk", func(b *testing.B) { benchCNIAddDel(b, "") })
}

// tmpfsDir mounts a small tmpfs on a temp directory for the benchmark.
func tmpfsDir(b *testing.B) string {
	dir := b.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=16m,mode=0755"); err != nil {
		b.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	b.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			b.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// benchCNIAddDel runs the ADDs with ipamd's state in stateDir ("" = a temp
// directory on disk).
func benchCNIAddDel(b *testing.B, stateDir string) {
	const n = 60
	minimal := minimalBinary(b)
	cl := newCluster(b, "10.70.0.0/16", "10.70.0.0/20")
	node := cl.startNodeWith(b, "m5.4xlarge", "", stateDir, []string{"--chain-portmap=false"}, "WARM_IP_TARGET=70", "WARM_ENI_TARGET=0")
	// Warm the pool completely before timing.
	time.Sleep(2 * time.Second)
	conf := node.conf(b)
	ptpDir := b.TempDir()
	ptp, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ptp-peer","plugins":[{"type":"ptp","mtu":9001,
		"ipam":{"type":"host-local","subnet":"10.201.0.0/16","dataDir":%q}}]}`, ptpDir)))
	if err != nil {
		b.Fatal(err)
	}
	peerCNI := libcni.NewCNIConfigWithCacheDir([]string{"/usr/lib/cni"}, b.TempDir(), nil)

	berthCNI := filepath.Join(node.binDir, "berth-cni")
	skelOnly := skelOnlyBinary(b, berthCNI)
	// BERTH_BENCH_CNI_ALT names another berth-cni build (of the same
	// version stamp as ipamd: make build VERSION=...) to time beside this
	// one, ADD for ADD, for comparing two plugins in the same minutes.
	skelConf := altConflist(b, node, conf, skelOnly, "skelonly")
	which := []string{"berth", "ptp", "floor", "skel"}
	var altConf *libcni.NetworkConfigList
	if alt := os.Getenv("BERTH_BENCH_CNI_ALT"); alt != "" {
		altConf = altConflist(b, node, conf, alt, "berth-cni-alt")
		which = append(which, "alt")
	}
	var add, del, peerAdd, peerDel, floor, execMin, version, skelVersion, altAdd, skelAdd []time.Duration
	for i := 0; i < n; i++ {
		order := slices.Clone(which)
		if i%2 == 1 {
			// Every other round in reverse: the first and the last
			// plugin of a round do not run under the same conditions
			// (~0.5 ms apart here).
			slices.Reverse(order)
		}
		for _, which := range order {
			name := fmt.Sprintf("bench-%s-%d-%d", which, os.Getpid(), i)
			nsPath := e2e.NewNetNS(b, name)
			rt := &libcni.RuntimeConf{ContainerID: "c-" + name, NetNS: nsPath, IfName: "eth0",
				Args: [][2]string{{"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", "c-" + name}, {"IgnoreUnknown", "1"}}}
			switch which {
			case "berth":
				_ = e2e.InNetNS(node.inst.NetNS, func() error {
					start := time.Now()
					if _, err := node.cni.AddNetworkList(context.Background(), conf, rt); err != nil {
						b.Fatal(err)
					}
					add = append(add, time.Since(start))
					start = time.Now()
					if err := node.cni.DelNetworkList(context.Background(), conf, rt); err != nil {
						b.Fatal(err)
					}
					del = append(del, time.Since(start))
					return nil
				})
			case "alt":
				altAdd = append(altAdd, timeAdd(b, node, altConf, rt))
			case "skel":
				skelAdd = append(skelAdd, timeAdd(b, node, skelConf, rt))
			case "ptp":
				_ = e2e.InNetNS(node.inst.NetNS, func() error {
					start := time.Now()
					if _, err := peerCNI.AddNetworkList(context.Background(), ptp, rt); err != nil {
						b.Fatal(err)
					}
					peerAdd = append(peerAdd, time.Since(start))
					start = time.Now()
					if err := peerCNI.DelNetworkList(context.Background(), ptp, rt); err != nil {
						b.Fatal(err)
					}
					peerDel = append(peerDel, time.Since(start))
					return nil
				})
			case "floor":
				_ = e2e.InNetNS(node.inst.NetNS, func() error {
					floor = append(floor, floorAdd(b, nsPath, i))
					return nil
				})
				// The floor's exec and the VERSION comparison run in the
				// same minutes as the ADDs, pairwise, so that a change of
				// load on a shared host moves both sides of each ratio.
				execMin = append(execMin, execTime(b, minimal, nil))
				version = append(version, execTime(b, berthCNI, []string{"CNI_COMMAND=VERSION"}))
				skelVersion = append(skelVersion, execTime(b, skelOnly, []string{"CNI_COMMAND=VERSION"}))
			}
		}
	}
	// ipamd's own share of ADD, from its histogram.
	if sum, count := histogram(b, node, "berth_cni_add_seconds"); count > 0 {
		b.ReportMetric(sum/count*1000, "ipamd-add-mean-ms")
	}
	// A second floor, for reading the first: the same netlink work plus a
	// VERSION of a plugin that is only skel, which #6 requires. No plugin
	// on skel starts faster.
	skelFloor := make([]time.Duration, len(floor))
	for i := range floor {
		skelFloor[i] = floor[i] + skelVersion[i]
		floor[i] += execMin[i]
	}
	p50, p99 := percentile(add, .5), percentile(add, .99)
	f50 := percentile(floor, .5)
	if altConf != nil {
		b.ReportMetric(float64(percentile(altAdd, .5).Microseconds())/1000, "alt-add-p50-ms")
		b.ReportMetric(percentile(altAdd, .5).Seconds()/f50.Seconds(), "alt-add-p50-x-floor")
	}
	b.ReportMetric(float64(p50.Microseconds())/1000, "add-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "add-p99-ms")
	b.ReportMetric(float64(percentile(del, .5).Microseconds())/1000, "del-p50-ms")
	b.ReportMetric(float64(f50.Microseconds())/1000, "floor-p50-ms")
	b.ReportMetric(float64(percentile(peerAdd, .5).Microseconds())/1000, "ptp-add-p50-ms")
	b.ReportMetric(float64(percentile(peerDel, .5).Microseconds())/1000, "ptp-del-p50-ms")
	b.ReportMetric(p50.Seconds()/f50.Seconds(), "add-p50-x-floor")
	b.ReportMetric(p99.Seconds()/f50.Seconds(), "add-p99-x-floor")
	b.ReportMetric(p50.Seconds()/percentile(peerAdd, .5).Seconds(), "add-p50-x-ptp")
	b.ReportMetric(percentile(version, .5).Seconds()/percentile(execMin, .5).Seconds(), "version-x-minimal")
	b.ReportMetric(float64(percentile(version, .5).Microseconds())/1000, "version-p50-ms")
	b.ReportMetric(float64(percentile(skelVersion, .5).Microseconds())/1000, "skelonly-version-p50-ms")
	b.ReportMetric(percentile(version, .5).Seconds()/percentile(skelVersion, .5).Seconds(), "version-x-skelonly")
	b.ReportMetric(p50.Seconds()/percentile(skelFloor, .5).Seconds(), "add-p50-x-skel-floor")
	b.ReportMetric(float64(percentile(skelAdd, .5).Microseconds())/1000, "skelonly-add-p50-ms")
	b.ReportMetric(p50.Seconds()/percentile(skelAdd, .5).Seconds(), "add-p50-x-skelonly-add")
	b.ReportMetric(percentile(skelAdd, .5).Seconds()/f50.Seconds(), "skelonly-add-p50-x-floor")
}

// BenchmarkColdBurst: 100 concurrent ADDs on a fresh node; counts EC2
// mutating calls and the time to the last address.
func BenchmarkColdBurst(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, mode := range []struct {
		name string
		env  []string
	}{{"prefix", []string{"ENABLE_PREFIX_DELEGATION=true"}}, {"secondary-ip", nil}} {
		b.Run(mode.name, func(b *testing.B) {
			cl := newCluster(b, "10.71.0.0/16", "10.71.0.0/18")
			node := cl.startNode(b, "c5n.18xlarge", mode.env...)
			resetCalls(b, cl)
			start := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			failures := 0
			for i := 0; i < 100; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					if _, err := node.add(b, fmt.Sprintf("cold-%d", i)); err != nil {
						mu.Lock()
						failures++
						mu.Unlock()
					}
				}(i)
			}
			wg.Wait()
			took := time.Since(start)
			mutating := mutatingCalls(b, cl)
			b.ReportMetric(float64(failures), "failures")
			b.ReportMetric(float64(mutating), "ec2-mutating-calls")
			b.ReportMetric(took.Seconds(), "s-to-last-ip")
			if failures > 0 {
				b.Errorf("%d of 100 ADDs failed", failures)
			}
		})
	}
}

// BenchmarkSteadyState: ADD/DEL inside the warm target make no EC2 calls;
// ipamd's RSS with 250 pods.
func BenchmarkSteadyState(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	cl := newCluster(b, "10.72.0.0/16", "10.72.0.0/18")
	node := cl.startNode(b, "c5n.18xlarge", "ENABLE_PREFIX_DELEGATION=true", "WARM_PREFIX_TARGET=2")
	var pods []*pod
	addN := func(from, to int) {
		for i := from; i < to; i++ {
			p, err := node.add(b, fmt.Sprintf("ss-%d", i))
			if err != nil {
				b.Fatalf("pod %d: %v", i, err)
			}
			pods = append(pods, p)
		}
	}
	// Churn inside the warm target (100 pods, two spare prefixes): no EC2.
	addN(0, 100)
	time.Sleep(6 * time.Second) // let the pool settle at its target
	resetCalls(b, cl)
	for i := 0; i < 10; i++ {
		if err := node.del(b, pods[i]); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		if _, err := node.add(b, fmt.Sprintf("ss2-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(allCalls(b, cl)), "ec2-calls-per-20-ops")
	b.Logf("EC2 calls during the steady-state operations: %v", calls(b, cl))
	// Memory with 250 pods.
	addN(100, 250)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", node.cmd.Process.Pid))
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%f", &kb)
			b.ReportMetric(kb/1024, "ipamd-rss-MiB-250-pods")
		}
	}
}

func resetCalls(b *testing.B, cl *cluster) {
	req, _ := http.NewRequest(http.MethodDelete, cl.lc.Endpoint+"/_localcloud/calls", nil)
	if _, err := http.DefaultClient.Do(req); err != nil {
		b.Fatal(err)
	}
}

func calls(b *testing.B, cl *cluster) map[string]int {
	resp, err := http.Get(cl.lc.Endpoint + "/_localcloud/calls")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Calls map[string]int }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		b.Fatal(err)
	}
	return v.Calls
}

func mutatingCalls(b *testing.B, cl *cluster) int {
	n := 0
	for k, v := range calls(b, cl) {
		op := strings.TrimPrefix(k, "ec2:")
		if strings.HasPrefix(k, "ec2:") && !strings.HasPrefix(op, "Describe") {
			n += v
		}
	}
	return n
}

func allCalls(b *testing.B, cl *cluster) int {
	n := 0
	for k, v := range calls(b, cl) {
		if strings.HasPrefix(k, "ec2:") {
			n += v
		}
	}
	return n
}

// histogram reads a histogram's sum and count from ipamd's metrics.
func histogram(b *testing.B, n *node, name string) (sum, count float64) {
	var body string
	err := e2e.InNetNS(n.inst.NetNS, func() error {
		tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := e2e.InNetNS(n.inst.NetNS, func() (err error) { c, err = net.Dial(network, addr); return err })
			return c, err
		}}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://127.0.0.1:61678/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		bb, err := io.ReadAll(resp.Body)
		body = string(bb)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+"_sum ") {
			fmt.Sscanf(strings.TrimPrefix(l, name+"_sum "), "%g", &sum)
		}
		if strings.HasPrefix(l, name+"_count ") {
			fmt.Sscanf(strings.TrimPrefix(l, name+"_count "), "%g", &count)
		}
	}
	return sum, count
}

// altConflist installs the plugin at path as typ beside berth-cni and
// returns conf with it in berth-cni's place.
func altConflist(b *testing.B, node *node, conf *libcni.NetworkConfigList, path, typ string) *libcni.NetworkConfigList {
	b.Helper()
	bin, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node.binDir, typ), bin, 0o755); err != nil {
		b.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(conf.Bytes, &raw); err != nil {
		b.Fatal(err)
	}
	raw["plugins"].([]any)[0].(map[string]any)["type"] = typ
	out, err := json.Marshal(raw)
	if err != nil {
		b.Fatal(err)
	}
	alt, err := libcni.ConfListFromBytes(out)
	if err != nil {
		b.Fatal(err)
	}
	return alt
}

// timeAdd times an ADD of conf through libcni in the node, as a runtime
// does, then DELs it untimed.
func timeAdd(b *testing.B, node *node, conf *libcni.NetworkConfigList, rt *libcni.RuntimeConf) time.Duration {
	var took time.Duration
	_ = e2e.InNetNS(node.inst.NetNS, func() error {
		start := time.Now()
		if _, err := node.cni.AddNetworkList(context.Background(), conf, rt); err != nil {
			b.Fatal(err)
		}
		took = time.Since(start)
		if err := node.cni.DelNetworkList(context.Background(), conf, rt); err != nil {
			b.Fatal(err)
		}
		return nil
	})
	return took
}
