// Package addons embeds the manifests of the add-ons berth-controlplane
// installs: CoreDNS, as EKS installs it with every cluster, and
// metrics-server, EKS's optional add-on, which `berth up` asks for. They
// are rendered for one cluster.
package addons

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/netip"
	"strings"
	"text/template"
)

// CoreDNSVersion is the CoreDNS that berth-coredns builds: go.mod's
// github.com/coredns/coredns (a test keeps them equal).
const CoreDNSVersion = "v1.15.0"

// CoreDNSImage is the image of berth-coredns that `berth up` imports into
// local nodes, and the control plane's default.
const CoreDNSImage = "localhost/berth/coredns:" + CoreDNSVersion

// MetricsServerVersion is the metrics-server of go.mod's tool line.
const MetricsServerVersion = "v0.9.0"

// MetricsServerImage is the image of that metrics-server that `berth up`
// imports into local nodes.
const MetricsServerImage = "localhost/berth/metrics-server:" + MetricsServerVersion

var (
	//go:embed coredns.yaml
	corednsTemplate string
	//go:embed metrics-server.yaml
	metricsServerTemplate string

	coredns       = template.Must(template.New("coredns.yaml").Option("missingkey=error").Parse(corednsTemplate))
	metricsServer = template.Must(template.New("metrics-server.yaml").Option("missingkey=error").Parse(metricsServerTemplate))
)

// MetricsServer renders metrics-server.yaml with its image.
func MetricsServer(image string) ([]byte, error) {
	if err := CheckImage(image); err != nil {
		return nil, err
	}
	return render(metricsServer, struct{ Image string }{image})
}

func render(t *template.Template, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}

// CoreDNS renders coredns.yaml for a cluster: its image, and the Service
// address kubelets name as clusterDNS.
func CoreDNS(image string, clusterIP netip.Addr) ([]byte, error) {
	if err := CheckImage(image); err != nil {
		return nil, err
	}
	if !clusterIP.IsValid() {
		return nil, fmt.Errorf("coredns: no cluster IP")
	}
	return render(coredns, struct{ Image, ClusterIP string }{image, clusterIP.String()})
}

// CheckImage refuses what cannot be an image reference (nor break the
// manifest it is rendered into).
func CheckImage(image string) error {
	if image == "" || strings.ContainsAny(image, " \t\n\"'{}#") {
		return fmt.Errorf("image %q: want an image reference", image)
	}
	return nil
}

// ClusterDNS is the tenth address of the service CIDR, where EKS puts
// kube-dns and kubelets look for it.
func ClusterDNS(serviceCIDR string) (netip.Addr, error) {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service cidr %q: %w", serviceCIDR, err)
	}
	a := p.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	if !p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("service cidr %q: too small for the DNS address", serviceCIDR)
	}
	return a, nil
}
