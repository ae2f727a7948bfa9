package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	nodecontroller "k8s.io/cloud-provider/controllers/node"
	"k8s.io/cloud-provider/controllers/nodelifecycle"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"

	"github.com/berth-io/berth/controlplane/cloudnode"
	"github.com/berth-io/berth/controlplane/csrapprove"
	"github.com/berth-io/berth/controlplane/leader"
)

// Periods of the AWS cloud controller manager's defaults.
const (
	nodeStatusUpdateFrequency = 5 * time.Minute
	nodeMonitorPeriod         = 5 * time.Second
)

// cloudNodeLease is the Lease replicas elect the cloud node controllers'
// leader with (--leader-elect).
const cloudNodeLease = "berth-cloud-node-controller"

// startCloudNodeControllers runs the upstream cloud node and node
// lifecycle controllers over p, and the approver of kubelets' serving
// certificates, which checks them against the same EC2.
func (s *Server) startCloudNodeControllers(goRun func(string, func(context.Context) error), client kubernetes.Interface, p *cloudnode.Provider) error {
	run := func(ctx context.Context) error {
		factory := informers.NewSharedInformerFactory(client, 0)
		nodes := factory.Core().V1().Nodes()
		nc, err := nodecontroller.NewCloudNodeController(nodes, client, p, nodeStatusUpdateFrequency, 4, 2)
		if err != nil {
			return fmt.Errorf("cloud node controller: %w", err)
		}
		lc, err := nodelifecycle.NewCloudNodeLifecycleController(nodes, client, p, nodeMonitorPeriod, 1)
		if err != nil {
			return fmt.Errorf("cloud node lifecycle controller: %w", err)
		}
		metrics := controllersmetrics.NewControllerManagerMetrics("berth-cloud-controller-manager")
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		approver := &csrapprove.Approver{Client: client, EC2: p.EC2, Log: s.log.With("subsystem", "kubelet-serving-csr")}
		var wg sync.WaitGroup
		wg.Go(func() { lc.Run(ctx, metrics) })
		wg.Go(func() { approver.Run(ctx) })
		nc.RunWithContext(ctx, metrics)
		wg.Wait()
		return nil
	}
	log := s.log.With("subsystem", "cloud-node-controllers")
	goRun("cloud-node-controllers", func(ctx context.Context) error {
		if s.cfg.LeaderElect {
			return leader.Run(ctx, client, cloudNodeLease, log, run)
		}
		return run(ctx)
	})
	return nil
}
