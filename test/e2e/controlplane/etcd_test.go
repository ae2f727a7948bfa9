package controlplane_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-io/berth/controlplane/etcd"
	"github.com/berth-io/berth/controlplane/pki"
	"github.com/berth-io/berth/test/e2e"
)

// TestExternalEtcd runs the control plane over an etcd member started
// separately (from the same etcd module, with its own CA), as users do
// when one box is outgrown, and proves objects live there across a
// restart of the control plane.
func TestExternalEtcd(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, "etcd-ca", "external-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoadOrIssue(dir, "server", pki.Spec{CommonName: "etcd", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.LoadOrIssue(dir, "client", pki.Spec{CommonName: "berth", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcd.Start(context.Background(), etcd.Config{DataDir: filepath.Join(dir, "etcd"), ClientAddr: e2e.FreePort(t), PeerAddr: e2e.FreePort(t),
		Server: etcd.TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: filepath.Join(dir, "etcd-ca.crt")}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath", "off")
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), cluster,
		"--etcd-servers", m.Endpoint, "--etcd-cafile", filepath.Join(dir, "etcd-ca.crt"),
		"--etcd-certfile", cli.CertFile, "--etcd-keyfile", cli.KeyFile, "--leader-elect")
	mustKubectl(t, cp, "create", "namespace", "outgrown")
	if _, err := os.Stat(filepath.Join(cp.DataDir, "etcd")); err == nil {
		t.Fatal("an embedded etcd was started although --etcd-servers was given")
	}
	// The object is in the external etcd: read it back with an etcd client.
	cfg, err := etcd.ClientConfig([]string{m.Endpoint}, etcd.TLS{CAFile: filepath.Join(dir, "etcd-ca.crt"), CertFile: cli.CertFile, KeyFile: cli.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "ext.db")
	if _, err := etcd.SaveSnapshot(context.Background(), cfg, snap); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(snap)
	if !strings.Contains(string(b), "/registry/namespaces/outgrown") {
		t.Fatal("namespace not found in the external etcd")
	}
	cp.Stop()
	cp.Start(t)
	if out := mustKubectl(t, cp, "get", "namespace", "outgrown", "-o", "name"); out != "namespace/outgrown" {
		t.Fatalf("after restart: %s", out)
	}
}

// TestSnapshotSaveRestore saves a snapshot of the embedded etcd, changes
// the cluster, restores and finds the state of the snapshot.
func TestSnapshotSaveRestore(t *testing.T) {
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath", "off")
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), cluster)
	bin := e2e.Bin(t, "berth-controlplane")
	mustKubectl(t, cp, "create", "namespace", "before")
	snap := filepath.Join(t.TempDir(), "snap.db")
	out, err := exec.Command(bin, "etcd", "snapshot", "save", snap, "--data-dir", cp.DataDir, "--etcd-client-listen", cp.EtcdClient).CombinedOutput()
	if err != nil {
		t.Fatalf("save: %v\n%s", err, out)
	}
	mustKubectl(t, cp, "create", "namespace", "after")
	restore := func() ([]byte, error) {
		return exec.Command(bin, "etcd", "snapshot", "restore", snap, "--data-dir", cp.DataDir,
			"--etcd-client-listen", cp.EtcdClient, "--etcd-peer-listen", cp.EtcdPeer).CombinedOutput()
	}
	if out, err := restore(); err == nil || !strings.Contains(string(out), "stop berth-controlplane") {
		t.Fatalf("restore under a running control plane: %v\n%s", err, out)
	}
	cp.Stop()
	if out, err := restore(); err != nil || !strings.Contains(string(out), "previous member is kept") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	cp.Start(t)
	if out := mustKubectl(t, cp, "get", "namespace", "before", "-o", "name"); out != "namespace/before" {
		t.Fatalf("before: %s", out)
	}
	if out, err := cp.Kubectl(t, "get", "namespace", "after"); err == nil || !strings.Contains(out, "NotFound") {
		t.Fatalf("namespace created after the snapshot survived the restore: %s", out)
	}
}

// TestAPIServerPortTaken starts the control plane on a port another
// process holds: it must exit at once with the bind error and leave its
// embedded etcd's ports free, not hang until killed (as it did while its
// goroutines waited for a context only a signal ended).
func TestAPIServerPortTaken(t *testing.T) {
	lc := e2e.StartLocalcloud(t, t.TempDir(), "--datapath", "off")
	ln, err := net.Listen("tcp", e2e.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	etcdClient, etcdPeer := e2e.FreePort(t), e2e.FreePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.Bin(t, "berth-controlplane"), "serve", "--data-dir", filepath.Join(t.TempDir(), "cp"),
		"--cluster-name", cluster, "--listen", ln.Addr().String(), "--eks-listen", e2e.FreePort(t),
		"--etcd-client-listen", etcdClient, "--etcd-peer-listen", etcdPeer)
	cmd.Env = append(os.Environ(), e2e.LocalcloudEnv(lc)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("berth-controlplane still running after 2m with its port taken\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "berth-controlplane: kube-apiserver: ") || !strings.Contains(last, "address already in use") {
		t.Errorf("last line %q, want the apiserver's bind error", last)
	}
	for _, addr := range []string{etcdClient, etcdPeer} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("etcd's %s still held after exit: %v", addr, err)
			continue
		}
		l.Close()
	}
	// Which is what lets the tests' harness start again on other ports
	// when another process wins the race for one.
	cp := e2e.StartControlplane(t, lc, filepath.Join(t.TempDir(), "cp"), cluster, "--listen", ln.Addr().String())
	if cp.APIServer == "https://"+ln.Addr().String() {
		t.Fatalf("control plane ready on %s, which the test holds", cp.APIServer)
	}
	mustKubectl(t, cp, "get", "namespace", "default")
}
