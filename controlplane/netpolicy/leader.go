package netpolicy

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"

	"github.com/berth-io/berth/controlplane/leader"
)

// LeaseName is the Lease (in kube-system) replicas of the controller
// elect a leader with.
const LeaseName = "berth-netpol-controller"

// ErrLostLease is returned when another replica took the lease.
var ErrLostLease = leader.ErrLostLease

// RunElected runs run only while holding the Lease kube-system/LeaseName
// (see leader.Run).
func RunElected(ctx context.Context, client kubernetes.Interface, log *slog.Logger, run func(context.Context) error) error {
	return leader.Run(ctx, client, LeaseName, log, run)
}
