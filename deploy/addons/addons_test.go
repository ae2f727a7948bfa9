package addons

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The images' tags name the versions their binaries are built from.
func TestVersionsAreGoMods(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for module, want := range map[string]string{"github.com/coredns/coredns": CoreDNSVersion, "sigs.k8s.io/metrics-server": MetricsServerVersion} {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + ` (v\S+)`).FindSubmatch(mod)
		if m == nil || string(m[1]) != want {
			t.Errorf("go.mod requires %s %q, the image's tag is %s", module, m, want)
		}
	}
}

func TestMetricsServerRenders(t *testing.T) {
	out, err := MetricsServer(MetricsServerImage)
	if err != nil || !strings.Contains(string(out), "image: "+MetricsServerImage+"\n") || !strings.Contains(string(out), "kind: APIService") {
		t.Fatalf("MetricsServer: %v\n%s", err, out)
	}
	if _, err := MetricsServer("bad image"); err == nil {
		t.Error("a bad image accepted")
	}
}

func TestCoreDNSRenders(t *testing.T) {
	out, err := CoreDNS("registry.example:5000/dns/coredns:v1", netip.MustParseAddr("172.20.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	kinds := map[string]map[string]any{}
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("rendered manifest: %v", err)
		}
		kinds[m["kind"].(string)] = m
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} {
		if kinds[k] == nil {
			t.Errorf("no %s in the manifest", k)
		}
	}
	if ip := kinds["Service"]["spec"].(map[string]any)["clusterIP"]; ip != "172.20.0.10" {
		t.Errorf("kube-dns clusterIP %v", ip)
	}
	if !strings.Contains(string(out), "image: registry.example:5000/dns/coredns:v1\n") {
		t.Errorf("image not rendered:\n%s", out)
	}
	for _, bad := range []string{"", "a b", "x\nkind: Secret", "{{.Image}}", "img#1"} {
		if _, err := CoreDNS(bad, netip.MustParseAddr("10.100.0.10")); err == nil {
			t.Errorf("image %q accepted", bad)
		}
	}
	if _, err := CoreDNS(CoreDNSImage, netip.Addr{}); err == nil {
		t.Error("no cluster IP accepted")
	}
}

func TestClusterDNS(t *testing.T) {
	for cidr, want := range map[string]string{"10.100.0.0/16": "10.100.0.10", "172.20.0.0/16": "172.20.0.10",
		"10.100.7.9/24": "10.100.7.10", "fd00:1::/108": "fd00:1::a", "10.0.0.0/28": "10.0.0.10"} {
		got, err := ClusterDNS(cidr)
		if err != nil || got.String() != want {
			t.Errorf("ClusterDNS(%s) = %v, %v; want %s", cidr, got, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/29", "10.100.0.0", "nonsense"} {
		if _, err := ClusterDNS(bad); err == nil {
			t.Errorf("ClusterDNS(%s) accepted", bad)
		}
	}
}
