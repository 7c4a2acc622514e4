package simagent

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// beats sends the fleet's heartbeats from one timer instead of a ticker
// per host: a heap of hosts by when their next heartbeat is due, and a
// pool of workers that send them. Each host keeps a fixed rate from a
// phase of its own, so the fleet's heartbeats spread over the interval as
// independent agents' do. When the workers fall behind, heartbeats leave
// late and the lateness is recorded, never hidden.
type beats struct {
	interval time.Duration
	send     func(ctx context.Context, h *simHost, due time.Time)

	mu   sync.Mutex
	q    beatHeap
	wake chan struct{}
}

type beat struct {
	due  time.Time
	host *simHost
}

type beatHeap []beat

func (q beatHeap) Len() int           { return len(q) }
func (q beatHeap) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q beatHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *beatHeap) Push(x any)        { *q = append(*q, x.(beat)) }
func (q *beatHeap) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

func newBeats(interval time.Duration, send func(ctx context.Context, h *simHost, due time.Time)) *beats {
	return &beats{interval: interval, send: send, wake: make(chan struct{}, 1)}
}

// add schedules h's heartbeats, the first at first.
func (b *beats) add(h *simHost, first time.Time) {
	b.mu.Lock()
	heap.Push(&b.q, beat{due: first, host: h})
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// run dispatches due heartbeats to workers until ctx ends.
func (b *beats) run(ctx context.Context, workers int) {
	jobs := make(chan beat)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				b.send(ctx, j.host, j.due)
			}
		}()
	}
	defer wg.Wait()
	defer close(jobs)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		b.mu.Lock()
		var next beat
		wait := time.Hour
		if len(b.q) > 0 {
			next = b.q[0]
			wait = time.Until(next.due)
		}
		if len(b.q) > 0 && wait <= 0 {
			heap.Pop(&b.q)
			if !next.host.stopped() {
				due := next.due.Add(b.interval)
				if now := time.Now(); due.Before(now.Add(-b.interval)) {
					due = now // a beat missed in whole is skipped, not sent in a burst
				}
				heap.Push(&b.q, beat{due: due, host: next.host})
			}
			b.mu.Unlock()
			if next.host.stopped() {
				continue
			}
			select {
			case jobs <- next:
			case <-ctx.Done():
				return
			}
			continue
		}
		b.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-timer.C:
		}
	}
}
