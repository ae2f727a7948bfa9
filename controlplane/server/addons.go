package server

import (
	"context"
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/berth-io/berth/controlplane/addoninstall"
	"github.com/berth-io/berth/deploy/addons"
)

// installAddons installs CoreDNS on the address kubelets name as
// clusterDNS, as EKS installs it with a new cluster, and metrics-server
// when it is given an image.
func (s *Server) installAddons(ctx context.Context, admin *rest.Config) error {
	dnsIP, err := addons.ClusterDNS(s.cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	manifest, err := addons.CoreDNS(s.cfg.CoreDNSImage, dnsIP)
	if err != nil {
		return err
	}
	if s.cfg.MetricsServerImage != "" {
		ms, err := addons.MetricsServer(s.cfg.MetricsServerImage)
		if err != nil {
			return err
		}
		manifest = append(append(manifest, "\n---\n"...), ms...)
	}
	client, err := dynamic.NewForConfig(admin)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	return addoninstall.Install(ctx, client, manifest, s.log.With("subsystem", "addons"))
}
