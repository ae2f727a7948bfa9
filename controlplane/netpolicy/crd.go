package netpolicy

import (
	"context"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"

	"github.com/berth-io/berth/controlplane/crdinstall"
	"github.com/berth-io/berth/deploy/crds"
)

// InstallCRD creates the PolicyEndpoint CRD, or updates it when the
// embedded manifest changed, and waits until it is Established.
func InstallCRD(ctx context.Context, client apiextensionsclient.Interface) error {
	return crdinstall.Install(ctx, client, crds.PolicyEndpoint)
}
