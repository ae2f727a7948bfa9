package csrapprove

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	certificatesv1 "k8s.io/api/certificates/v1"
)

const node = "ip-10-1-2-3.us-west-2.compute.internal"

func request(t *testing.T, tmpl x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// kubeletCSR is what kubelet sends with serverTLSBootstrap.
func kubeletCSR(t *testing.T, mutate func(*x509.CertificateRequest, *certificatesv1.CertificateSigningRequestSpec)) *certificatesv1.CertificateSigningRequest {
	tmpl := x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		DNSNames: []string{node}, IPAddresses: []net.IP{net.ParseIP("10.1.2.3")}}
	spec := certificatesv1.CertificateSigningRequestSpec{SignerName: certificatesv1.KubeletServingSignerName,
		Username: "system:node:" + node, Groups: []string{"system:nodes", "system:authenticated"},
		Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}}
	if mutate != nil {
		mutate(&tmpl, &spec)
	}
	spec.Request = request(t, tmpl)
	return &certificatesv1.CertificateSigningRequest{Spec: spec}
}

var instance = &ec2types.Instance{InstanceId: aws.String("i-0123"), PrivateDnsName: aws.String(node), PrivateIpAddress: aws.String("10.1.2.3"),
	PublicIpAddress: aws.String("203.0.113.7"), State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning}}

func TestApprovesTheNodesOwnRequest(t *testing.T) {
	req, name, err := Check(kubeletCSR(t, nil))
	if err != nil || name != node {
		t.Fatalf("Check: %q %v", name, err)
	}
	if err := matchInstance(req, name, instance); err != nil {
		t.Fatalf("matchInstance: %v", err)
	}
	// The public address is the instance's too.
	req, name, _ = Check(kubeletCSR(t, func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
		r.IPAddresses = append(r.IPAddresses, net.ParseIP("203.0.113.7"))
	}))
	if err := matchInstance(req, name, instance); err != nil {
		t.Fatalf("public IP: %v", err)
	}
}

func TestRefusesOthers(t *testing.T) {
	type mut = func(*x509.CertificateRequest, *certificatesv1.CertificateSigningRequestSpec)
	for want, m := range map[string]mut{
		"signer": func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.SignerName = certificatesv1.KubeAPIServerClientKubeletSignerName
		},
		"is not a node": func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Groups = []string{"system:authenticated"}
		},
		"not the requestor's": func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Username = "system:node:other"
		},
		"not the requestor's ": func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.Subject.Organization = []string{"system:masters"}
		},
		"emails or URIs": func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: "x"}}
		},
		"no DNS name or IP": func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.DNSNames, r.IPAddresses = nil, nil
		},
		"lack server auth": func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature}
		},
		"client auth": func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = append(s.Usages, certificatesv1.UsageClientAuth)
		},
	} {
		if _, _, err := Check(kubeletCSR(t, m)); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) || !isRefusal(err) {
			t.Errorf("want a refusal %q, got %v", want, err)
		}
	}
	bad := kubeletCSR(t, nil)
	bad.Spec.Request = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	if _, _, err := Check(bad); err == nil || !strings.Contains(err.Error(), "PEM CERTIFICATE REQUEST") {
		t.Errorf("a certificate for a request: %v", err)
	}

	// Names and addresses the instance does not have.
	for want, m := range map[string]mut{
		`DNS name "api.example.com"`: func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.DNSNames = append(r.DNSNames, "api.example.com")
		},
		"IP 10.1.2.4": func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.IPAddresses = []net.IP{net.ParseIP("10.1.2.4")}
		},
	} {
		req, name, err := Check(kubeletCSR(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if err := matchInstance(req, name, instance); err == nil || !strings.Contains(err.Error(), want) || !isRefusal(err) {
			t.Errorf("want a refusal %q, got %v", want, err)
		}
	}
	// A node whose provider ID names another node's instance.
	req, name, _ := Check(kubeletCSR(t, nil))
	other := *instance
	other.PrivateDnsName = aws.String("ip-10-9-9-9.us-west-2.compute.internal")
	if err := matchInstance(req, name, &other); err == nil || !strings.Contains(err.Error(), "not node") {
		t.Errorf("another node's instance: %v", err)
	}
	// A stopped instance's request waits rather than standing refused.
	other = *instance
	other.State = &ec2types.InstanceState{Name: ec2types.InstanceStateNameStopped}
	if err := matchInstance(req, name, &other); err == nil || isRefusal(err) {
		t.Errorf("stopped instance: %v", err)
	}
}
