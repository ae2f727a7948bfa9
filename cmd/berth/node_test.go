package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/vishvananda/netlink"

	"github.com/berth-io/berth/internal/testenv"
	"github.com/berth-io/berth/test/e2e"
)

// TestUserDataIsANodeConfig: what berth up gives its instances is user
// data that berth-bootstrap reads and validates (the binary, as on an
// instance), with the cluster from DescribeCluster and the local pause
// image in the containerd configuration.
func TestUserDataIsANodeConfig(t *testing.T) {
	bootstrap := e2e.Bin(t, "berth-bootstrap")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cl := &ekstypes.Cluster{Name: aws.String("demo"), Endpoint: aws.String("https://192.0.2.2:6443"),
		CertificateAuthority:    &ekstypes.Certificate{Data: aws.String(base64.StdEncoding.EncodeToString(caPEM))},
		KubernetesNetworkConfig: &ekstypes.KubernetesNetworkConfigResponse{ServiceIpv4Cidr: aws.String("10.96.0.0/16")}}
	ud, err := userData(cl, "/run/berth/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(file, []byte(ud), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bootstrap, "config", "explain", "--instance-type", "m5.large", "--config-source", "file://"+file).CombinedOutput()
	if err != nil {
		t.Fatalf("berth-bootstrap config explain: %v\n%s", err, out)
	}
	toml := `[plugins."io.containerd.grpc.v1.cri"]` + "\n" + `sandbox_image = "` + pauseImage + `"` + "\n"
	if !strings.Contains(ud, "      "+strings.ReplaceAll(strings.TrimSpace(toml), "\n", "\n      ")) {
		t.Fatalf("user data lacks the pause image:\n%s", ud)
	}
	for _, want := range []string{
		`spec.cluster.name\s+demo\s+from file`,
		`spec.cluster.apiServerEndpoint\s+https://192\.0\.2\.2:6443\s+from file`,
		fmt.Sprintf(`spec.cluster.certificateAuthority\s+%d bytes of PEM\s+from file`, len(caPEM)),
		`spec.cluster.cidr\s+10\.96\.0\.0/16\s+from file`,
		fmt.Sprintf(`spec.containerd.config\s+%d bytes of TOML\s+from file`, len(toml)),
		`spec.kubelet.config.resolvConf\s+"/run/berth/resolv.conf"\s+from file`,
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("config explain lacks %s:\n%s", want, out)
		}
	}
	if _, err := userData(&ekstypes.Cluster{Name: aws.String("new")}, ""); err == nil {
		t.Fatal("a cluster without endpoint gave user data")
	}
}

// TestCheckVPCCIDR: berth up refuses a VPC CIDR that is malformed, too
// large or small, or overlaps a route of the host (here one the test makes
// on an ifb link).
func TestCheckVPCCIDR(t *testing.T) {
	for _, bad := range []string{"x", "10.0.0.0/8", "10.1.2.0/28", "fd00::/64"} {
		if _, err := checkVPCCIDR(bad); err == nil {
			t.Errorf("checkVPCCIDR(%q) accepted", bad)
		}
	}
	p, err := checkVPCCIDR("10.251.7.9/16")
	if err != nil || p.String() != "10.251.0.0/16" {
		t.Fatalf("checkVPCCIDR: %s, %v", p, err)
	}
	testenv.RequireRoot(t, "a route in a network namespace")
	// In a namespace of its own, so the host's routes stay as they are.
	ns, h := testenv.NewNetNS(t)
	link := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "upcidr0"}}
	if err := h.LinkAdd(link); err != nil {
		t.Fatalf("add ifb: %v", err)
	}
	addr, _ := netlink.ParseAddr("10.251.40.1/24")
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	err = testenv.OnThreadIn(ns, func() error {
		_, err := checkVPCCIDR("10.251.0.0/16")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "10.251.40.0/24") {
		t.Fatalf("a CIDR over the host's 10.251.40.0/24 route: %v", err)
	}
	if err := testenv.OnThreadIn(ns, func() error { _, err := checkVPCCIDR("10.252.0.0/16"); return err }); err != nil {
		t.Fatalf("a CIDR beside the route: %v", err)
	}
	// A route in a policy table (a VPN's, say) counts too.
	_, dst, _ := net.ParseCIDR("10.252.9.0/24")
	if err := h.RouteAdd(&netlink.Route{Dst: dst, LinkIndex: link.Attrs().Index, Table: 52}); err != nil {
		t.Fatal(err)
	}
	err = testenv.OnThreadIn(ns, func() error { _, err := checkVPCCIDR("10.252.0.0/16"); return err })
	if err == nil || !strings.Contains(err.Error(), "10.252.9.0/24") {
		t.Fatalf("a CIDR over a table-52 route: %v", err)
	}
}

// A host whose resolv.conf names systemd-resolved's stub gives its pods
// the stub's upstream list; one that names none usable is an error that
// says what to do, not a CoreDNS that stops on its own loop.
func TestNodeResolvConf(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lan := file("lan", "search example.internal\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\noptions edns0\n")
	stub := file("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	mixed := file("mixed", "nameserver 10.0.0.2\nnameserver ::1\n")
	empty := file("empty", "search x\n")
	bad := file("bad", "nameserver dns.example\n")
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		flag       string
		candidates []string
		want, err  string
	}{
		{candidates: []string{lan, stub}, want: lan},
		{candidates: []string{stub, lan}, want: lan},
		{candidates: []string{stub, missing}, err: "names a loopback nameserver"},
		{candidates: []string{mixed, empty}, err: "--resolv-conf"},
		{candidates: []string{missing, lan}, want: lan},
		{candidates: []string{bad, lan}, err: `nameserver "dns.example"`},
		{flag: lan, candidates: []string{stub}, want: lan},
		{flag: stub, candidates: []string{lan}, err: "loopback"},
		{flag: missing, candidates: []string{lan}, err: "no such file"},
	} {
		got, err := nodeResolvConf(c.flag, c.candidates...)
		if c.err == "" && (err != nil || got != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("nodeResolvConf(%q, %q) = %q, %v; want %q, error %q", c.flag, c.candidates, got, err, c.want, c.err)
		}
	}
}

// TestWatchKubectl runs the watch against a stand-in kubectl: it returns
// at the first line accepted, starts a watch again when kubectl exits
// (a server ending the watch), and gives up at its timeout with the last
// thing kubectl said.
func TestWatchKubectl(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	// Each run appends its arguments; the second run and later print Ready.
	script := `#!/bin/sh
echo "$@" >> ` + calls + `
n=$(wc -l < ` + calls + `)
echo "False 2026-01-01T00:00:00Z"
if [ "$n" -ge 2 ]; then echo "True 2026-01-01T00:00:05Z"; exec sleep 30; fi
echo "watch closed" >&2
exit 1
`
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	start := time.Now()
	if err := watchKubectl(ctx, dir, "kc", 10*time.Second, "True", func(s string) bool { return strings.HasPrefix(s, "True") },
		"get", "nodes"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %s: the accepted line should end the wait (and kill the watch)", d)
	}
	b, _ := os.ReadFile(calls)
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); len(got) != 2 || got[0] != "--kubeconfig kc get nodes --watch" {
		t.Errorf("kubectl runs: %q, want two of --kubeconfig kc get nodes --watch", got)
	}

	err := watchKubectl(ctx, dir, "kc", 1500*time.Millisecond, "Ready", func(string) bool { return false }, "get", "nodes")
	if err == nil || !strings.Contains(err.Error(), "not Ready after 1.5s") || !strings.Contains(err.Error(), "True 2026-01-01T00:00:05Z") {
		t.Errorf("timeout error: %v", err)
	}
}

// TestKeptKubeconfig: an agent's kubeconfig is used again only when made
// for the same RBAC, endpoint and CA, its token is far from expiry, and
// the API (asked through a stand-in kubectl) takes it as the account.
func TestKeptKubeconfig(t *testing.T) {
	dir := t.TempDir()
	answer := filepath.Join(dir, "answer")
	script := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(dir, "calls") + "\ncat " + answer + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	jwt := func(exp time.Time) string {
		claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"x","exp":%d}`, exp.Unix())))
		return "eyJhbGciOiJSUzI1NiJ9." + claims + ".c2ln"
	}
	user := "system:serviceaccount:kube-system:kube-proxy"
	write := func(made, token, who string) string {
		p := filepath.Join(dir, "kube-proxy.kubeconfig")
		kc := "# berth-made-for: " + made + "\napiVersion: v1\nkind: Config\nusers:\n- name: kube-proxy\n  user:\n    token: " + token + "\ncontexts: []\n"
		if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(answer, []byte(who), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name        string
		made, token string
		who         string
		want        bool
	}{
		{"kept", "abc", jwt(time.Now().Add(300 * 24 * time.Hour)), user, true},
		{"other RBAC, endpoint or CA", "abd", jwt(time.Now().Add(300 * 24 * time.Hour)), user, false},
		{"token expiring within the renewal window", "abc", jwt(time.Now().Add(24 * time.Hour)), user, false},
		{"token not a JWT", "abc", "opaque", user, false},
		{"API takes it as someone else", "abc", jwt(time.Now().Add(300 * 24 * time.Hour)), "system:anonymous", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := write(c.made, c.token, c.who)
			if got := keptKubeconfig(t.Context(), dir, p, "abc", user); got != c.want {
				t.Errorf("kept = %v, want %v", got, c.want)
			}
		})
	}
}
