package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// barrierTimeout bounds one quorum read of a barrier.
const barrierTimeout = 2 * time.Second

// barrier batches the quorum reads of Barrier: at most one is in flight,
// and the callers that arrive meanwhile share the next.
type barrier struct {
	mu       sync.Mutex
	inflight bool
	next     *barrierRound // callers waiting for the read after the one in flight
	reads    atomic.Int64  // quorum reads made, for tests
}

type barrierRound struct {
	done chan struct{}
	rev  int64
	err  error
}

// Barrier returns once the index holds everything the store had committed
// when a quorum read made after the call was answered: reading the index
// then is as fresh as reading through the quorum, and a store that cannot
// answer (this member cut off from the others, etcd gone) is an error.
// Callers at the same time share one quorum read: each joins the first
// read that starts after it arrived, so a thousand heartbeats a second
// cost a few reads, not a thousand.
func (s *Store) Barrier(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	s.bar.mu.Lock()
	r := s.bar.next
	if r == nil {
		r = &barrierRound{done: make(chan struct{})}
		s.bar.next = r
	}
	if !s.bar.inflight {
		s.bar.inflight, s.bar.next = true, nil
		go s.runBarriers(r)
	}
	s.bar.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("waiting for a quorum read: %w", ctx.Err())
	}
	if r.err != nil {
		return r.err
	}
	return s.WaitRev(ctx, r.rev)
}

// runBarriers makes the quorum read of r, then of every round that
// gathered callers while it ran, until none did.
func (s *Store) runBarriers(r *barrierRound) {
	for r != nil {
		ctx, cancel := context.WithTimeout(s.ctx, barrierTimeout)
		// A linearizable read of one key that holds nothing: its
		// header's revision is the store's, confirmed by a quorum.
		s.bar.reads.Add(1)
		resp, err := s.client.Get(ctx, s.prefix+"barrier", clientv3.WithCountOnly())
		cancel()
		if err != nil {
			r.err = fmt.Errorf("reading through the store's quorum: %w", err)
		} else {
			r.rev = resp.Header.Revision
		}
		close(r.done)
		s.bar.mu.Lock()
		r, s.bar.next = s.bar.next, nil
		if r == nil {
			s.bar.inflight = false
		}
		s.bar.mu.Unlock()
	}
}
