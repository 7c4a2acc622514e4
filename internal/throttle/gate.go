package throttle

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBusy is what Gate.Enter returns when no slot came free in time.
var ErrBusy = errors.New("too many requests of this kind at once")

// A Gate bounds how many callers do something expensive at once (hashing
// a password with argon2id takes tens of MiB and tens of milliseconds):
// it has a fixed number of slots, and a caller finding none free waits
// for one up to a bound, then gives up. A nil *Gate lets everyone in.
type Gate struct {
	slots   chan struct{}
	maxWait time.Duration

	mu   sync.Mutex
	in   int
	peak int
}

// NewGate returns a Gate of n slots (at least one) whose callers wait at
// most maxWait for one (0: they do not wait).
func NewGate(n int, maxWait time.Duration) *Gate {
	return &Gate{slots: make(chan struct{}, max(n, 1)), maxWait: max(maxWait, 0)}
}

// Enter takes a slot, waiting for one up to the gate's bound. It returns
// the function that gives the slot back, or ErrBusy when none came free in
// time, or ctx's error when ctx ended first.
func (g *Gate) Enter(ctx context.Context) (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	select {
	case g.slots <- struct{}{}:
	default:
		if g.maxWait == 0 {
			return nil, ErrBusy
		}
		t := time.NewTimer(g.maxWait)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case <-t.C:
			return nil, ErrBusy
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	g.mu.Lock()
	g.in++
	g.peak = max(g.peak, g.in)
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.in--
			g.mu.Unlock()
			<-g.slots
		})
	}, nil
}

// Size is the number of slots.
func (g *Gate) Size() int {
	if g == nil {
		return 0
	}
	return cap(g.slots)
}

// Peak is the most slots ever taken at once.
func (g *Gate) Peak() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}
