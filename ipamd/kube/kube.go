// Package kube is ipamd's use of the Kubernetes API, which it needs only
// for some of the VPC CNI's features: custom networking reads the node's
// ENIConfig (eniconfig.go), ANNOTATE_POD_IP writes pods' addresses into an
// annotation (podip.go), AWS_MANAGE_ENIS_NON_SCHEDULABLE=false watches the
// node for a cordon (cordon.go). A dynamic client and no informer: ipamd
// reads, patches or watches one object at a time.
package kube

import (
	"fmt"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client talks to the API server as ipamd's service account.
type Client struct {
	dyn dynamic.Interface
	// watch is dyn without the request timeout, for watches.
	watch dynamic.Interface
}

// New returns a Client. kubeconfig "" is the in-cluster configuration
// (aws-node's service account), whose API server clusterEndpoint replaces
// when set (the VPC CNI's CLUSTER_ENDPOINT: the API server's own address,
// as the Service address needs kube-proxy, which may not run yet).
func New(kubeconfig, clusterEndpoint string) (*Client, error) {
	cfg, err := restConfig(kubeconfig, clusterEndpoint, rest.InClusterConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "berth-ipamd"
	// A black-holed API server must not hold a grow (the ENIConfig is read
	// under the pool's EC2 lock) or an ADD forever; a burst of ADDs with
	// ANNOTATE_POD_IP must not queue behind client-go's 5 QPS.
	cfg.Timeout = 10 * time.Second
	cfg.QPS, cfg.Burst = 20, 30
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	wcfg := rest.CopyConfig(cfg)
	wcfg.Timeout = 0
	w, err := dynamic.NewForConfig(wcfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Client{dyn: c, watch: w}, nil
}

func restConfig(kubeconfig, clusterEndpoint string, inCluster func() (*rest.Config, error)) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	cfg, err := inCluster()
	if err != nil {
		return nil, err
	}
	if clusterEndpoint != "" {
		cfg.Host = clusterEndpoint
	}
	return cfg, nil
}
