package driver

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inflight guards keys (a volume, a volume on a node, a snapshot name)
// against duplicate concurrent RPCs: the CO retries while a slow call is
// still running, and the duplicate gets Aborted instead of racing it.
type inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInflight() *inflight { return &inflight{keys: map[string]struct{}{}} }

// acquire takes key or returns an Aborted status; call the returned
// release when done.
func (f *inflight) acquire(key string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.keys[key]; busy {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, nil
}
