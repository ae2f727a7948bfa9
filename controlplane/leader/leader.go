// Package leader runs a control-plane loop only while this replica holds a
// Lease in kube-system, for control planes of several replicas over one
// external etcd.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// ErrLostLease is returned when another replica took the lease.
var ErrLostLease = errors.New("lost the leader lease")

// Run runs run only while holding the Lease kube-system/<lease>,
// with the controller manager's timings (15s lease, 10s renew, 2s retry).
// It returns when ctx ends (nil) or the lease is lost (ErrLostLease, after
// run has returned), since a replica that lost the lease may not write.
func Run(ctx context.Context, client kubernetes.Interface, lease string, log *slog.Logger, run func(context.Context) error) error {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	id := host + "_" + hex.EncodeToString(b)
	electCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The elector starts the callback in a goroutine it does not wait for:
	// started says whether run must be waited for, closing that it is too
	// late to start it.
	var (
		mu               sync.Mutex
		started, closing bool
		runErr           error
	)
	done := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: lease},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Name:            lease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leading context.Context) {
				mu.Lock()
				if closing {
					mu.Unlock()
					return
				}
				started = true
				mu.Unlock()
				log.Info("leader lease acquired", "lease", lease, "identity", id)
				runErr = run(leading)
				cancel() // a run that ended gives the lease up
				close(done)
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(electCtx)
	mu.Lock()
	closing = true
	ran := started
	mu.Unlock()
	if !ran {
		return nil
	}
	<-done
	if runErr != nil {
		return runErr
	}
	if ctx.Err() == nil {
		return ErrLostLease
	}
	return nil
}
