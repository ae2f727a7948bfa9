package userdata

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
)

const doc1 = `apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: demo
    apiServerEndpoint: https://10.0.0.1:6443
    certificateAuthority: ` + "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==" + `
    cidr: 10.100.0.0/16
  kubelet:
    config:
      maxPods: 58
    flags: ["--node-labels=team=a"]
`

const doc2 = `apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  kubelet:
    config:
      maxPods: 110
      shutdownGracePeriod: 30s
    flags: ["--register-with-taints=x=y:NoSchedule"]
  containerd:
    config: |
      [plugins."io.containerd.grpc.v1.cri"]
`

func mimeDoc(parts ...[2]string) string {
	var b strings.Builder
	b.WriteString("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n")
	for _, p := range parts {
		b.WriteString("--BOUNDARY\nContent-Type: " + p[0] + "\n\n" + p[1] + "\n")
	}
	b.WriteString("--BOUNDARY--\n")
	return b.String()
}

func decodeAll(t *testing.T, data []byte) []string {
	t.Helper()
	parts, err := Parts("imds", data)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range parts {
		nc, err := Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, nc.Spec.Cluster.Name)
	}
	return names
}

func TestMIMEMergeInOrder(t *testing.T) {
	data := mimeDoc([2]string{"text/x-shellscript", "#!/bin/bash\necho hi"}, [2]string{ContentType, doc1}, [2]string{ContentType, doc2})
	parts, err := Parts("imds", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Index != 2 || parts[1].Index != 3 {
		t.Fatalf("parts %+v", parts)
	}
	a, err := Decode(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	m := Merge([]*v1alpha1.NodeConfig{a, b})
	if m.Spec.Cluster.Name != "demo" || string(m.Spec.Kubelet.Config["maxPods"]) != "110" || len(m.Spec.Kubelet.Flags) != 2 ||
		!strings.Contains(string(m.Spec.Cluster.CertificateAuthority), "BEGIN CERTIFICATE") || m.Spec.Containerd.Config == "" {
		t.Fatalf("merged %+v", m.Spec)
	}
}

func TestGzipAndBase64(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write([]byte(mimeDoc([2]string{ContentType, doc1})))
	_ = w.Close()
	for name, data := range map[string][]byte{
		"plain":       []byte(doc1),
		"gzip":        gz.Bytes(),
		"base64":      []byte(base64.StdEncoding.EncodeToString([]byte(doc1))),
		"base64+gzip": []byte(base64.StdEncoding.EncodeToString(gz.Bytes())),
	} {
		if got := decodeAll(t, data); len(got) != 1 || got[0] != "demo" {
			t.Errorf("%s: %v", name, got)
		}
	}
}

func TestStrictErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown field", strings.Replace(doc1, "    cidr:", "    cidrr:", 1), `imds part 1: unknown field "spec.cluster.cidrr"`},
		{"unknown nested", doc1 + "  instance:\n    localStorage:\n      strategy: RAID0\n      stripe: 4\n", `unknown field "spec.instance.localStorage.stripe"`},
		{"wrong type", strings.Replace(doc1, `flags: ["--node-labels=team=a"]`, `flags: "--node-labels=team=a"`, 1), `field "spec.kubelet.flags"`},
		{"wrong apiVersion", strings.Replace(doc1, "v1alpha1", "v1beta9", 1), `apiVersion "node.eks.aws/v1beta9"`},
		{"not yaml", "apiVersion: [", "not YAML"},
	} {
		parts, err := Parts("imds", []byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = Decode(parts[0])
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestShellOnly(t *testing.T) {
	parts, err := Parts("imds", []byte("#!/bin/bash\n/etc/eks/bootstrap.sh demo\n"))
	if err != nil || len(parts) != 0 {
		t.Fatalf("a shell script is cloud-init's: %v %v", parts, err)
	}
}

func FuzzParts(f *testing.F) {
	f.Add([]byte(doc1))
	f.Add([]byte(mimeDoc([2]string{ContentType, doc2})))
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := Parts("fuzz", b)
		if err != nil {
			return
		}
		for _, p := range parts {
			_, _ = Decode(p)
		}
	})
}
