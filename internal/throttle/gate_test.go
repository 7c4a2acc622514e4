package throttle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/throttle"
)

func TestGateBoundsConcurrency(t *testing.T) {
	g := throttle.NewGate(3, time.Minute)
	var in, most atomic.Int64
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			release, err := g.Enter(context.Background())
			if err != nil {
				t.Errorf("Enter: %v", err)
				return
			}
			n := in.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			in.Add(-1)
			release()
			release() // a second release gives nothing back
		})
	}
	wg.Wait()
	if m := most.Load(); m > 3 {
		t.Errorf("%d callers inside a gate of 3", m)
	}
	if p := g.Peak(); p > 3 || p < 1 {
		t.Errorf("Peak = %d; want 1..3", p)
	}
	// Every slot came back.
	for range 3 {
		if _, err := g.Enter(context.Background()); err != nil {
			t.Fatalf("Enter after all released: %v", err)
		}
	}
}

func TestGateBusyAndCancelled(t *testing.T) {
	g := throttle.NewGate(1, 20*time.Millisecond)
	release, err := g.Enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Enter(context.Background()); !errors.Is(err, throttle.ErrBusy) {
		t.Errorf("Enter on a full gate: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := throttle.NewGate(1, time.Hour).Enter(ctx); err != nil {
		t.Errorf("Enter on a free gate with an ended context: %v, want a slot", err)
	}
	g2 := throttle.NewGate(1, time.Hour)
	r2, _ := g2.Enter(context.Background())
	if _, err := g2.Enter(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Enter on a full gate with an ended context: %v, want context.Canceled", err)
	}
	r2()
	release()
	if _, err := g.Enter(context.Background()); err != nil {
		t.Errorf("Enter after release: %v", err)
	}
	if _, err := throttle.NewGate(1, 0).Enter(context.Background()); err != nil {
		t.Errorf("Enter on a free gate that does not wait: %v", err)
	}
	var nilGate *throttle.Gate
	if r, err := nilGate.Enter(context.Background()); err != nil || r == nil {
		t.Errorf("nil gate: %v", err)
	}
}
