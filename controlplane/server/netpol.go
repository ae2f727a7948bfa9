package server

import (
	"context"
	"fmt"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/berth-io/berth/controlplane/netpolicy"
)

// startNetworkPolicyController installs the PolicyEndpoint CRD (before the
// control plane reports ready) and runs the NetworkPolicy → PolicyEndpoint
// controller, under a lease when leader election is on.
func (s *Server) startNetworkPolicyController(ctx context.Context, goRun func(string, func(context.Context) error), cfg *rest.Config,
	client kubernetes.Interface, ext apiextensionsclient.Interface) error {
	if err := netpolicy.InstallCRD(ctx, ext); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	log := s.log.With("subsystem", "netpol-controller")
	c := netpolicy.New(client, dyn, netpolicy.Options{ChunkSize: s.cfg.NetworkPolicyChunkSize, Log: log})
	if err := c.Register(legacyregistry.Registerer()); err != nil {
		return err
	}
	goRun("network-policy-controller", func(ctx context.Context) error {
		if s.cfg.LeaderElect {
			return netpolicy.RunElected(ctx, client, log, c.Run)
		}
		return c.Run(ctx)
	})
	return nil
}
