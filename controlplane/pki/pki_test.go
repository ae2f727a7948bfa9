package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCAIsCreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "ca", "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(dir, "ca", "kubernetes")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("CA not reused: %v", err)
	}
	st, _ := os.Stat(filepath.Join(dir, "ca.key"))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v", st.Mode())
	}
	// Half a CA is a damaged data dir: refuse instead of replacing it.
	os.Remove(filepath.Join(dir, "ca.crt"))
	if _, err := LoadOrCreateCA(dir, "ca", "kubernetes"); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("half CA: %v", err)
	}
}

func TestLeafReissuedWhenSANsChange(t *testing.T) {
	dir := t.TempDir()
	ca, _ := LoadOrCreateCA(dir, "ca", "kubernetes")
	spec := Spec{CommonName: "kube-apiserver", DNSNames: []string{"kubernetes"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}
	p1, err := ca.LoadOrIssue(dir, "apiserver", spec)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := ca.LoadOrIssue(dir, "apiserver", spec)
	if string(p1.CertPEM) != string(p2.CertPEM) {
		t.Fatal("unchanged spec reissued the certificate")
	}
	spec.IPs = append(spec.IPs, net.ParseIP("10.0.0.5"))
	p3, _ := ca.LoadOrIssue(dir, "apiserver", spec)
	if string(p3.CertPEM) == string(p1.CertPEM) {
		t.Fatal("new listen IP did not reissue the certificate")
	}
	cert, _ := parseCert(p3.CertPEM)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("10.0.0.5"); err != nil {
		t.Fatal(err)
	}
}
