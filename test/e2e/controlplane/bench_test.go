package controlplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/controlplane/pki"
	"github.com/berth-io/berth/test/e2e"
)

// peerBinaries builds the upstream kube-apiserver and etcd (the same
// module versions berth links) into the user cache once.
func peerBinaries(b *testing.B) (apiserver, etcdBin string) {
	b.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(cache, "berth-bench", "peers-v1.37.2-v3.7.3")
	apiserver, etcdBin = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd")
	for bin, pkg := range map[string]string{apiserver: "k8s.io/kubernetes/cmd/kube-apiserver", etcdBin: "go.etcd.io/etcd/server/v3"} {
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		cmd := exec.Command("go", "build", "-ldflags", "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37", "-o", bin, pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return apiserver, etcdBin
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

var insecure = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

func waitReadyz(b *testing.B, url string, cmd *exec.Cmd) time.Time {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if code, err := e2e.Get(insecure, url+"/readyz", ""); err == nil && code == http.StatusOK {
			return time.Now()
		}
		if cmd.ProcessState != nil {
			b.Fatalf("%s exited", cmd.Path)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s not ready", url)
	return time.Time{}
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// startPeer starts etcd and the upstream kube-apiserver the same way and
// returns the time to /readyz and their RSS after idling.
func startPeer(b *testing.B, apiserverBin, etcdBin string) (time.Duration, float64) {
	dir := b.TempDir()
	client, peer, secure := e2e.FreePort(b), e2e.FreePort(b), e2e.FreePort(b)
	key, err := pki.LoadOrCreateRSAKey(filepath.Join(dir, "sa.key"))
	if err != nil || len(key) == 0 {
		b.Fatal(err)
	}
	start := time.Now()
	etcdCmd := exec.Command(etcdBin, "--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", "http://"+client,
		"--advertise-client-urls", "http://"+client, "--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "default=http://"+peer, "--log-level", "error")
	if err := etcdCmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer stop(etcdCmd)
	_, port, _ := strings.Cut(secure, ":")
	api := exec.Command(apiserverBin, "--etcd-servers", "http://"+client, "--bind-address", "127.0.0.1", "--secure-port", port,
		"--advertise-address", "10.0.0.1", "--cert-dir", filepath.Join(dir, "certs"), "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.key"), "--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.100.0.0/16", "--authorization-mode", "Node,RBAC", "--profiling=false")
	if err := api.Start(); err != nil {
		b.Fatal(err)
	}
	defer stop(api)
	ready := waitReadyz(b, "https://"+secure, api)
	time.Sleep(5 * time.Second)
	return ready.Sub(start), rssMiB(api.Process.Pid) + rssMiB(etcdCmd.Process.Pid)
}

func startBerth(b *testing.B, lc *e2e.Localcloud) (time.Duration, float64) {
	dir := b.TempDir()
	listen := e2e.FreePort(b)
	cmd := exec.Command(e2e.Bin(b, "berth-controlplane"), "serve", "--data-dir", dir, "--cluster-name", "bench", "--listen", listen,
		"--eks-listen", e2e.FreePort(b), "--etcd-client-listen", e2e.FreePort(b), "--etcd-peer-listen", e2e.FreePort(b), "--log-level", "error")
	cmd.Env = append(os.Environ(), e2e.LocalcloudEnv(lc)...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer stop(cmd)
	ready := waitReadyz(b, "https://"+listen, cmd)
	time.Sleep(5 * time.Second)
	return ready.Sub(start), rssMiB(cmd.Process.Pid)
}

// BenchmarkColdStart compares berth-controlplane (etcd, apiserver,
// controller manager and scheduler in one process) with the upstream
// kube-apiserver plus an etcd process started the same way, in one run:
// time from exec to /readyz OK, and RSS after 5 s idle.
func BenchmarkColdStart(b *testing.B) {
	apiserverBin, etcdBin := peerBinaries(b)
	lc := e2e.StartLocalcloud(b, b.TempDir(), "--datapath", "off")
	var ours, peer time.Duration
	var oursRSS, peerRSS float64
	for i := 0; i < b.N; i++ {
		d, r := startPeer(b, apiserverBin, etcdBin)
		peer += d
		peerRSS += r
		d, r = startBerth(b, lc)
		ours += d
		oursRSS += r
	}
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "berth-s")
	b.ReportMetric(peer.Seconds()/n, "upstream-s")
	b.ReportMetric(float64(ours)/float64(peer), "start-ratio")
	b.ReportMetric(oursRSS/n, "berth-MiB")
	b.ReportMetric(peerRSS/n, "upstream-MiB")
	b.ReportMetric(oursRSS/peerRSS, "rss-ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkTokenVerify measures the authenticator against localcloud's
// STS: p99 of a cached verify, and an uncached verify as a ratio to one
// bare STS round trip of the same presigned request.
func BenchmarkTokenVerify(b *testing.B) {
	lc := e2e.StartLocalcloud(b, b.TempDir(), "--datapath", "off")
	e := &env{lc: lc}
	creds := rootCreds(b, e)
	// Every token differs in its signed X-Amz-Expires, so none is a cache
	// hit by accident (X-Amz-Date has only second resolution).
	seq := 0
	fresh := func() string {
		seq++
		u := fmt.Sprintf("%s/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=%d", lc.Endpoint, 300+seq%600)
		return forge(b, creds, u, map[string]string{"x-k8s-aws-id": cluster}, time.Now())
	}
	host := strings.TrimPrefix(lc.Endpoint, "http://")
	a := &authn.Authenticator{ClusterID: cluster, Endpoints: []authn.Endpoint{{Host: host, Insecure: true}},
		STS: &http.Client{Timeout: 10 * time.Second}, Mode: authn.ModeAPI}
	ctx := context.Background()
	const rounds = 300
	tokens := make([]string, rounds)
	for i := range tokens {
		tokens[i] = fresh()
	}
	var cached, uncached, bare []time.Duration
	for i := 0; i < b.N; i++ {
		for _, tok := range tokens {
			t0 := time.Now()
			if _, _, err := a.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			uncached = append(uncached, time.Since(t0))
			t0 = time.Now()
			if _, _, err := a.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			cached = append(cached, time.Since(t0))
		}
		for _, tok := range tokens {
			p, err := authn.Parse(tok, a.Endpoints, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, p.URL.String(), nil)
			req.Header.Set("x-k8s-aws-id", cluster)
			t0 := time.Now()
			resp, err := a.STS.Do(req)
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("bare sts: %v", err)
			}
			// Read to the end, as the authenticator does, so the connection is reused.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			bare = append(bare, time.Since(t0))
		}
		// Fresh tokens for the next round: the cache would answer otherwise.
		for j := range tokens {
			tokens[j] = fresh()
		}
	}
	pct := func(d []time.Duration, p float64) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[int(float64(len(d)-1)*p)].Microseconds())
	}
	b.ReportMetric(pct(cached, 0.99), "cached-p99-µs")
	b.ReportMetric(pct(uncached, 0.50), "uncached-p50-µs")
	b.ReportMetric(pct(bare, 0.50), "sts-p50-µs")
	b.ReportMetric(pct(uncached, 0.50)/pct(bare, 0.50), "uncached/sts")
	b.ReportMetric(0, "ns/op")
}
