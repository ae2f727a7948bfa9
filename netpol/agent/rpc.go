package agent

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-io/berth/proto/rpc"
)

// Server is rpc.NPBackend over an Agent, as the VPC CNI plugin and
// berth-cni call it on npa.sock.
type Server struct {
	rpc.UnimplementedNPBackendServer
	Agent *Agent
}

// EnforceNpToPod answers only when the pod is enforced; an error fails the
// pod's ADD, so no pod runs unenforced.
func (s *Server) EnforceNpToPod(ctx context.Context, r *rpc.EnforceNpRequest) (*rpc.EnforceNpReply, error) {
	if r.K8S_POD_NAME == "" || r.K8S_POD_NAMESPACE == "" {
		return nil, status.Error(codes.InvalidArgument, "EnforceNpToPod needs K8S_POD_NAME and K8S_POD_NAMESPACE")
	}
	if err := s.Agent.Enforce(ctx, r.K8S_POD_NAMESPACE, r.K8S_POD_NAME, r.NETWORK_POLICY_MODE, int(r.InterfaceCount)); err != nil {
		s.Agent.log.Error("EnforceNpToPod", "pod", r.K8S_POD_NAMESPACE+"/"+r.K8S_POD_NAME, "err", err)
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &rpc.EnforceNpReply{Success: true}, nil
}

// DeletePodNp forgets a pod; deleting an unknown pod succeeds.
func (s *Server) DeletePodNp(_ context.Context, r *rpc.DeleteNpRequest) (*rpc.DeleteNpReply, error) {
	if err := s.Agent.Delete(r.K8S_POD_NAMESPACE, r.K8S_POD_NAME); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &rpc.DeleteNpReply{Success: true}, nil
}
