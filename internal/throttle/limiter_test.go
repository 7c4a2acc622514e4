package throttle_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/throttle"
)

func TestLimiterBurstRefusalRefill(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(2, 3, time.Minute, throttle.WithClock(c.Now)) // a token every 500ms
	for i := range 3 {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("k")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("Allow after burst = %v, %v; want false, 500ms", ok, wait)
	}
	c.Advance(200 * time.Millisecond)
	if ok, wait := l.Allow("k"); ok || wait != 300*time.Millisecond {
		t.Fatalf("Allow 200ms later = %v, %v; want false, 300ms", ok, wait)
	}
	c.Advance(300 * time.Millisecond)
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("Allow refused once a token was due")
	}
	if ok, _ := l.Allow("k"); ok {
		t.Fatal("Allow granted a second token that was not due")
	}
	c.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("request %d of the refilled burst refused", i+1)
		}
	}
	if ok, _ := l.Allow("k"); ok {
		t.Fatal("bucket refilled beyond its burst")
	}
}

func TestLimiterRetryAfterIsEnough(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(3, 1, 0, throttle.WithClock(c.Now)) // 333.3…ms a token
	l.Allow("k")
	for i := range 20 {
		ok, wait := l.Allow("k")
		if ok {
			t.Fatalf("round %d: allowed before the wait", i)
		}
		c.Advance(wait)
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("round %d: refused after waiting the %v asked", i, wait)
		}
	}
}

func TestLimiterDisabled(t *testing.T) {
	for _, l := range []*throttle.Limiter{throttle.NewLimiter(0, 1, time.Minute), throttle.NewLimiter(-1, 0, 0), nil, {}} {
		for range 1000 {
			if ok, wait := l.Allow("k"); !ok || wait != 0 {
				t.Fatalf("disabled limiter: Allow = %v, %v", ok, wait)
			}
		}
		if n := l.Len(); n != 0 {
			t.Errorf("disabled limiter tracks %d keys", n)
		}
		l.Sweep(time.Now())
	}
}

func TestLimiterKeysIndependent(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(1, 2, time.Minute, throttle.WithClock(c.Now))
	l.Allow("a")
	l.Allow("a")
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a: third request allowed")
	}
	for i := range 2 {
		if ok, _ := l.Allow("b"); !ok {
			t.Fatalf("b: request %d refused because of a", i+1)
		}
	}
}

func TestLimiterSweep(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(1, 1, time.Minute, throttle.WithClock(c.Now))
	l.Allow("a")
	c.Advance(30 * time.Second)
	l.Allow("b")
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d; want 2", n)
	}
	l.Sweep(c.Now().Add(30 * time.Second)) // a idle for 1m, b for 30s
	if n := l.Len(); n != 1 {
		t.Fatalf("after sweep, Len = %d; want 1", n)
	}
	c.Advance(time.Minute) // b now idle for 1m: Allow sweeps it as it goes
	l.Allow("c")
	if n := l.Len(); n != 1 {
		t.Fatalf("after lazy sweep, Len = %d; want 1", n)
	}
}

func TestLimiterIdleTTLCoversRefill(t *testing.T) {
	c := newClock()
	// Refilling 10 tokens at 1/s takes 10s: an idle TTL of 1s must not
	// let a key start again with a full bucket sooner.
	l := throttle.NewLimiter(1, 10, time.Second, throttle.WithClock(c.Now))
	for range 10 {
		l.Allow("k")
	}
	c.Advance(2 * time.Second)
	l.Sweep(c.Now())
	granted := 0
	for range 10 {
		if ok, _ := l.Allow("k"); ok {
			granted++
		}
	}
	if granted != 2 {
		t.Errorf("2s after emptying the bucket, %d requests allowed; want 2", granted)
	}
}

func TestLimiterMaxKeys(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(1, 1, time.Hour, throttle.WithClock(c.Now), throttle.WithMaxKeys(3))
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k)
		c.Advance(time.Second)
	}
	l.Allow("a") // refused, but a is now the most recently used
	l.Allow("d") // evicts b, the least recently used
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d; want 3", n)
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("a was evicted; want b evicted")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("b is still tracked; want it evicted")
	}
	for i := range 100 {
		l.Allow(fmt.Sprint("flood", i))
	}
	if n := l.Len(); n != 3 {
		t.Errorf("after a flood of keys, Len = %d; want 3", n)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	c := newClock()
	l := throttle.NewLimiter(1, 10, time.Minute, throttle.WithClock(c.Now), throttle.WithMaxKeys(50))
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if ok, _ := l.Allow("shared"); ok {
					allowed.Add(1)
				}
				l.Allow(fmt.Sprint("own", g, i%80))
				if i%50 == 0 {
					l.Sweep(c.Now())
					l.Len()
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 10 {
		t.Errorf("with a stopped clock, %d requests on one key allowed; want the burst, 10", n)
	}
	if n := l.Len(); n > 50 {
		t.Errorf("Len = %d; want at most 50", n)
	}
}
