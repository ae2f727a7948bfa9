package addoninstall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-io/berth/deploy/addons"
)

func TestParse(t *testing.T) {
	objs, err := parse([]byte(`# a comment
apiVersion: v1
kind: ServiceAccount
metadata: {name: a, namespace: kube-system}
---
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r}
`))
	if err != nil || len(objs) != 2 {
		t.Fatalf("parse: %v %v", objs, err)
	}
	if objs[0].gvr.Resource != "serviceaccounts" || !objs[0].ns || objs[1].gvr.Resource != "clusterroles" || objs[1].ns {
		t.Errorf("resources: %+v %+v", objs[0].gvr, objs[1].gvr)
	}
	if objs[0].sum == "" || objs[0].sum == objs[1].sum || objs[0].u.GetAnnotations()[AnnotationManifest] != objs[0].sum {
		t.Errorf("sums: %q %q", objs[0].sum, objs[1].sum)
	}
	// A document's hash changes with its content, not with its neighbours'.
	again, _ := parse([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: kube-system}\n"))
	if again[0].sum != objs[0].sum {
		t.Error("the same document hashed differently")
	}
	for manifest, want := range map[string]string{
		"": "no objects",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: x}\n":                                "kind /v1, Kind=Secret is not one",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n":                                           "namespace only if namespaced",
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: x}\n": "namespace only if namespaced",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: x}\n":                                      "want a name",
		"apiVersion: v1\nkind: [\n": "document 1",
	} {
		if _, err := parse([]byte(manifest)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q) = %v, want %q", manifest, err, want)
		}
	}
}

// What the control plane installs passes the same checks.
func TestParseAddons(t *testing.T) {
	m, err := addons.CoreDNS(addons.CoreDNSImage, netip.MustParseAddr("10.100.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parse(m)
	if err != nil || len(objs) != 7 {
		t.Fatalf("coredns manifest: %d objects, %v", len(objs), err)
	}
	m, err = addons.MetricsServer(addons.MetricsServerImage)
	if err != nil {
		t.Fatal(err)
	}
	if objs, err = parse(m); err != nil || len(objs) != 9 {
		t.Fatalf("metrics-server manifest: %d objects, %v", len(objs), err)
	}
}
