package kube

import (
	"errors"
	"testing"

	"k8s.io/client-go/rest"
)

// CLUSTER_ENDPOINT replaces the in-cluster configuration's API server (the
// Service address, which needs kube-proxy); a kubeconfig is taken as it is.
func TestRestConfig(t *testing.T) {
	inCluster := func() (*rest.Config, error) {
		return &rest.Config{Host: "https://10.100.0.1:443", BearerToken: "t"}, nil
	}
	cfg, err := restConfig("", "https://ABCD.gr7.us-west-2.eks.amazonaws.com", inCluster)
	if err != nil || cfg.Host != "https://ABCD.gr7.us-west-2.eks.amazonaws.com" || cfg.BearerToken != "t" {
		t.Fatalf("with CLUSTER_ENDPOINT: %+v %v", cfg, err)
	}
	if cfg, err := restConfig("", "", inCluster); err != nil || cfg.Host != "https://10.100.0.1:443" {
		t.Fatalf("without: %+v %v", cfg, err)
	}
	notInCluster := func() (*rest.Config, error) { return nil, rest.ErrNotInCluster }
	if _, err := restConfig("", "https://x", notInCluster); !errors.Is(err, rest.ErrNotInCluster) {
		t.Fatalf("outside a cluster: %v", err)
	}
}
