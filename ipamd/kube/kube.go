// Package kube is ipamd's use of the Kubernetes API, which it needs only
// for some of the VPC CNI's features: custom networking reads the node's
// ENIConfig (eniconfig.go), ANNOTATE_POD_IP writes pods' addresses into an
// annotation (podip.go). A dynamic client and no informer: ipamd reads or
// patches one object at a time.
package kube

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client talks to the API server as ipamd's service account.
type Client struct {
	dyn dynamic.Interface
}

// New returns a Client. kubeconfig "" is the in-cluster configuration
// (aws-node's service account).
func New(kubeconfig string) (*Client, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "berth-ipamd"
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Client{dyn: c}, nil
}
