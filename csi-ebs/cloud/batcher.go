package cloud

import (
	"context"
	"sync"
	"time"
)

// batcher merges lookups of single keys from concurrent callers into one
// call for many keys: the first request of a batch opens a window of delay;
// every request arriving in it (up to max keys) rides along. A key absent
// from the result map is answered with (zero, false): not found.
type batcher[V any] struct {
	delay time.Duration
	max   int
	fetch func(ctx context.Context, keys []string) (map[string]V, error)

	mu      sync.Mutex
	pending *batch[V]
}

type batch[V any] struct {
	keys map[string]struct{}
	done chan struct{}
	res  map[string]V
	err  error
}

func newBatcher[V any](delay time.Duration, max int, fetch func(context.Context, []string) (map[string]V, error)) *batcher[V] {
	return &batcher[V]{delay: delay, max: max, fetch: fetch}
}

// get returns the value of key, batched with concurrent gets.
func (b *batcher[V]) get(ctx context.Context, key string) (V, bool, error) {
	b.mu.Lock()
	bt := b.pending
	if bt == nil {
		bt = &batch[V]{keys: map[string]struct{}{}, done: make(chan struct{})}
		b.pending = bt
		// The batch is fetched outside any caller's context: one caller
		// giving up must not fail the others riding along.
		time.AfterFunc(b.delay, func() { b.flush(bt) })
	}
	bt.keys[key] = struct{}{}
	if len(bt.keys) >= b.max {
		b.pending = nil
		go b.run(bt)
	}
	b.mu.Unlock()
	var zero V
	select {
	case <-ctx.Done():
		return zero, false, ctx.Err()
	case <-bt.done:
	}
	if bt.err != nil {
		return zero, false, bt.err
	}
	v, ok := bt.res[key]
	return v, ok, nil
}

// flush runs bt if it is still the open batch (not already run because full).
func (b *batcher[V]) flush(bt *batch[V]) {
	b.mu.Lock()
	if b.pending != bt {
		b.mu.Unlock()
		return
	}
	b.pending = nil
	b.mu.Unlock()
	b.run(bt)
}

func (b *batcher[V]) run(bt *batch[V]) {
	keys := make([]string, 0, len(bt.keys))
	for k := range bt.keys {
		keys = append(keys, k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bt.res, bt.err = b.fetch(ctx, keys)
	close(bt.done)
}
