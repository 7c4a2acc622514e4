package store

import (
	"context"
	"fmt"
	"sync"
)

// revTracker holds the revision the index has applied and wakes writers
// waiting for theirs.
type revTracker struct {
	done <-chan struct{}

	mu      sync.Mutex
	applied int64
	waiters []revWaiter
}

type revWaiter struct {
	rev int64
	ch  chan struct{}
}

func (t *revTracker) init(done <-chan struct{}) { t.done = done }

// current is the revision the index reflects.
func (t *revTracker) current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.applied
}

// advance records that the index reflects rev and wakes every waiter for it
// or an earlier revision.
func (t *revTracker) advance(rev int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rev <= t.applied {
		return
	}
	t.applied = rev
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if w.rev <= rev {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(t.waiters[len(kept):])
	t.waiters = kept
}

// wait returns once the index reflects rev.
func (t *revTracker) wait(ctx context.Context, rev int64) error {
	t.mu.Lock()
	if t.applied >= rev {
		t.mu.Unlock()
		return nil
	}
	w := revWaiter{rev: rev, ch: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()

	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		t.drop(w.ch)
		return fmt.Errorf("wait for index to reach revision %d: %w", rev, ctx.Err())
	case <-t.done:
		t.drop(w.ch)
		return fmt.Errorf("wait for index to reach revision %d: %w", rev, ErrClosed)
	}
}

func (t *revTracker) drop(ch chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, w := range t.waiters {
		if w.ch == ch {
			t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
			return
		}
	}
}
