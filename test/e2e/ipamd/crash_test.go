package ipamd_test

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-io/berth/test/e2e"
)

// TestCrashDuringBurst kills ipamd with SIGKILL in the middle of 50
// concurrent ADD/DEL cycles, restarts it, lets the runtime retry as
// kubelet would (DEL for every sandbox that did not finish), and checks
// that no address is held twice and none leaked.
func TestCrashDuringBurst(t *testing.T) {
	cl := newCluster(t, "10.65.0.0/16", "10.65.0.0/20")
	n := cl.startNode(t, "m5.4xlarge", "WARM_IP_TARGET=10")
	var mu sync.Mutex
	live := map[string]*pod{}    // pods whose ADD succeeded and DEL did not run
	pending := map[string]*pod{} // pods whose outcome is unknown (crash)
	var wg sync.WaitGroup
	var completed atomic.Int32
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("crash-%d", i)
			p, err := n.add(t, name)
			completed.Add(1)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				pending[name] = p // may be nil: ADD failed before a pod existed
				return
			}
			if i%2 == 0 {
				live[name] = p
				return
			}
			mu.Unlock()
			derr := n.del(t, p)
			mu.Lock()
			if derr != nil {
				pending[name] = p
			}
		}(i)
	}
	// SIGKILL once a few ADDs are through and most are in flight.
	e2e.WaitFor(t, "first ADDs", 30*time.Second, func() bool { return completed.Load() >= 5 })
	_ = n.cmd.Process.Kill() // nsenter exec'd ipamd: this is ipamd
	wg.Wait()
	failed := 0
	for range pending {
		failed++
	}
	t.Logf("killed ipamd with %d of 50 ADDs completed; %d pods ended unknown", 5, failed)
	if failed == 0 {
		t.Fatal("the kill did not land during the burst (no ADD or DEL failed)")
	}
	_ = n.cmd.Wait()
	// A runtime restarts ipamd after seconds, by which time the kernel has
	// destroyed the namespaces of deleted pods and their veths with them;
	// wait for that instead of racing the kernel's async netns cleanup.
	e2e.WaitFor(t, "veths of deleted pods to go", 10*time.Second, func() bool {
		gone := true
		_ = e2e.InNetNS(n.inst.NetNS, func() error {
			for i := 0; i < 50; i++ {
				name := fmt.Sprintf("crash-%d", i)
				mu.Lock()
				_, isLive := live[name]
				mu.Unlock()
				if isLive {
					continue
				}
				if _, err := netlink.LinkByName(vethName("default", name)); err == nil {
					if _, err := os.Stat("/var/run/netns/" + podNetnsName(name, pending, live)); err != nil {
						gone = false
					}
				}
			}
			return nil
		})
		return gone
	})
	n.restart(t)
	// The runtime retries: every pod that did not finish gets a DEL.
	for name, p := range pending {
		if p != nil {
			if err := n.del(t, p); err != nil {
				t.Fatalf("DEL of %s after restart: %v", name, err)
			}
		}
	}
	// Addresses whose DEL found no ipamd (the plugin then succeeds and the
	// runtime does not DEL again) go with the orphan sweep, once their
	// veth is gone and they are 30 s old: a restart keeps younger ones,
	// which may be a VPC CNI plugin's ADD still wiring its pod.
	want := map[string]bool{}
	for _, p := range live {
		want[p.ip.String()] = true
	}
	var leaked []string
	settled := func() bool {
		held := introspectPods(t, n)
		sort.Strings(held)
		seen := map[string]bool{}
		for _, ip := range held {
			if seen[ip] {
				t.Fatalf("%s held twice: %v", ip, held)
			}
			seen[ip] = true
		}
		for _, p := range live {
			if !seen[p.ip.String()] {
				t.Fatalf("live pod %s lost its address %s", p.name, p.ip)
			}
		}
		leaked = leaked[:0]
		for _, ip := range held {
			if !want[ip] {
				leaked = append(leaked, ip)
			}
		}
		return len(leaked) == 0
	}
	for deadline := time.Now().Add(90 * time.Second); !settled(); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("leaked: %v allocated 90 s after the restart, held by no live pod", leaked)
		}
	}
}

func vethName(ns, pod string) string {
	h := sha1.Sum([]byte(ns + "." + pod))
	return "eni" + hex.EncodeToString(h[:])[:11]
}

// podNetnsName returns the namespace name of a pod, "" when unknown (then
// its netns was deleted by del or never existed).
func podNetnsName(name string, maps ...map[string]*pod) string {
	for _, m := range maps {
		if p := m[name]; p != nil {
			return filepath.Base(p.netns)
		}
	}
	return "-gone-"
}

// restart starts a new ipamd in the node with the same directories.
func (n *node) restart(t testing.TB, env ...string) {
	t.Helper()
	ipamd := e2e.Bin(t, "berth-ipamd")
	base := append([]string{"PATH=" + os.Getenv("PATH"), "AWS_ENDPOINT_URL=http://169.254.169.254:4566",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", "IP_COOLDOWN_PERIOD=1", "WARM_IP_TARGET=10",
		"AWS_VPC_K8S_PLUGIN_LOG_FILE=" + n.pluginLog}, env...)
	_ = os.Remove(n.confDir + "/10-berth.conflist")
	n.cmd = e2e.StartIn(t, n.inst.NetNS, base, ipamd, "--cni-bin-dir", n.binDir, "--cni-conf-dir", n.confDir,
		"--socket", n.socket, "--state-dir", n.stateDir, "--chain-portmap=false")
	e2e.WaitFor(t, "conflist after restart", 60*time.Second, func() bool {
		_, err := os.Stat(n.confDir + "/10-berth.conflist")
		return err == nil
	})
}
