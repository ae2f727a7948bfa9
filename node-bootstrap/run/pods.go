package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePods returns a BeforeStop for containerd in local mode: it stops
// and removes every pod sandbox through CRI, as powering an instance off
// ends its pods. Otherwise the pods' shims and processes would outlive
// the node (shims are not containerd's children), and their network
// namespaces and IP addresses would stay taken. containerd runs the CNI
// DEL of each, so ipamd gets the addresses back.
func RemovePods(socket string, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("cri client: %w", err)
		}
		defer conn.Close()
		rt := cri.NewRuntimeServiceClient(conn)
		list, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
		if err != nil {
			return fmt.Errorf("list pod sandboxes: %w", err)
		}
		var errs []error
		for _, sb := range list.Items {
			name := sb.GetMetadata().GetNamespace() + "/" + sb.GetMetadata().GetName()
			if _, err := rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				errs = append(errs, fmt.Errorf("stop pod %s: %w", name, err))
				continue
			}
			if _, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				errs = append(errs, fmt.Errorf("remove pod %s: %w", name, err))
				continue
			}
			log.Info("removed pod", "pod", name, "sandbox", sb.Id)
		}
		return errors.Join(errs...)
	}
}
