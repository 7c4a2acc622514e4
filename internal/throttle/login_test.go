package throttle_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/throttle"
)

func TestLoginLockoutsDoubleAndCap(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{MaxDelay: 10 * time.Second}, throttle.WithClock(c.Now))
	for i := range 5 {
		if wait, ok := l.Check("user:alice"); !ok {
			t.Fatalf("free failure %d: Check = %v, false", i+1, wait)
		}
		l.Failure("user:alice")
	}
	if wait, ok := l.Check("user:alice"); !ok {
		t.Fatalf("after 5 failures: Check = %v, false; want still free", wait)
	}
	for _, want := range []time.Duration{1, 2, 4, 8, 10, 10} {
		want *= time.Second
		l.Failure("user:alice")
		wait, ok := l.Check("user:alice")
		if ok || wait != want {
			t.Fatalf("Check = %v, %v; want %v, false", wait, ok, want)
		}
		c.Advance(want - time.Millisecond)
		if wait, ok := l.Check("user:alice"); ok || wait != time.Millisecond {
			t.Fatalf("just before the lockout ends: Check = %v, %v; want 1ms, false", wait, ok)
		}
		c.Advance(time.Millisecond)
		if wait, ok := l.Check("user:alice"); !ok {
			t.Fatalf("after the lockout: Check = %v, false", wait)
		}
	}
}

func TestLoginDefaults(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{}, throttle.WithClock(c.Now))
	for range 40 {
		l.Failure("k")
	}
	if wait, ok := l.Check("k"); ok || wait != 15*time.Minute {
		t.Errorf("after 40 failures, Check = %v, %v; want 15m, false", wait, ok)
	}
}

func TestLoginNoFreeFailures(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: -1}, throttle.WithClock(c.Now))
	l.Failure("k")
	if wait, ok := l.Check("k"); ok || wait != time.Second {
		t.Errorf("Check = %v, %v; want 1s, false", wait, ok)
	}
}

func TestLoginSuccessClears(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{}, throttle.WithClock(c.Now))
	for range 7 {
		l.Failure("user:bob", "ip:192.0.2.1")
	}
	l.Success("user:bob", "ip:192.0.2.1")
	if wait, ok := l.Check("user:bob", "ip:192.0.2.1"); !ok {
		t.Fatalf("after success: Check = %v, false", wait)
	}
	if n := l.Len(); n != 0 {
		t.Errorf("after success: Len = %d; want 0", n)
	}
	for range 5 {
		l.Failure("user:bob")
	}
	if _, ok := l.Check("user:bob"); !ok {
		t.Error("after success, the free failures were not all given back")
	}
}

func TestLoginWindowForgets(t *testing.T) {
	c := newClock()
	cfg := throttle.LoginConfig{Window: 10 * time.Minute, MaxDelay: time.Minute}
	l := throttle.NewLogin(cfg, throttle.WithClock(c.Now))
	for range 5 {
		l.Failure("k")
	}
	c.Advance(10 * time.Minute)
	for range 5 {
		l.Failure("k")
	}
	if wait, ok := l.Check("k"); !ok {
		t.Fatalf("failures older than the window still counted: Check = %v, false", wait)
	}
	l.Failure("k") // the sixth within the window
	if _, ok := l.Check("k"); ok {
		t.Fatal("sixth failure within the window did not lock")
	}

	// Memory: once nothing can count, the key goes.
	c.Advance(cfg.MaxDelay + cfg.Window)
	l.Sweep(c.Now())
	if n := l.Len(); n != 0 {
		t.Errorf("after MaxDelay+Window, Len = %d; want 0", n)
	}
}

func TestLoginWindowRunsFromLockoutEnd(t *testing.T) {
	c := newClock()
	cfg := throttle.LoginConfig{Window: time.Minute, MaxDelay: time.Hour, BaseDelay: time.Hour, FreeFailures: 1}
	l := throttle.NewLogin(cfg, throttle.WithClock(c.Now))
	l.Failure("k")
	l.Failure("k") // locked for an hour
	c.Advance(time.Hour)
	l.Failure("k") // still within a minute of the lockout's end: counts
	if _, ok := l.Check("k"); ok {
		t.Fatal("failure right after a lockout did not lock again")
	}
}

func TestLoginCheckSeveralKeys(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: 1}, throttle.WithClock(c.Now))
	l.Failure("ip:a")
	l.Failure("ip:a") // locked 1s
	l.Failure("user:x")
	l.Failure("user:x")
	l.Failure("user:x") // locked 2s
	if wait, ok := l.Check("user:y", "ip:b"); !ok {
		t.Fatalf("unrelated keys: Check = %v, false", wait)
	}
	if wait, ok := l.Check("user:y", "ip:a"); ok || wait != time.Second {
		t.Fatalf("one locked key: Check = %v, %v; want 1s, false", wait, ok)
	}
	if wait, ok := l.Check("ip:a", "user:x"); ok || wait != 2*time.Second {
		t.Fatalf("two locked keys: Check = %v, %v; want the longer, 2s, false", wait, ok)
	}
	if wait, ok := l.Check(); !ok {
		t.Fatalf("no keys: Check = %v, false", wait)
	}
}

func TestLoginMaxKeysKeepsLocked(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: 1}, throttle.WithClock(c.Now), throttle.WithMaxKeys(10))
	l.Failure("user:alice")
	l.Failure("user:alice") // locked, and the least recently failed
	for i := range 100 {
		l.Failure(fmt.Sprint("user:random", i))
	}
	if n := l.Len(); n != 10 {
		t.Errorf("Len = %d; want 10", n)
	}
	if _, ok := l.Check("user:alice"); ok {
		t.Error("a flood of other keys evicted a locked key")
	}
}

func TestLoginConcurrent(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{}, throttle.WithClock(c.Now), throttle.WithMaxKeys(20))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				keys := []string{fmt.Sprint("user:", i%30), fmt.Sprint("ip:", g)}
				if _, ok := l.Check(keys...); ok {
					if i%7 == 0 {
						l.Success(keys...)
					} else {
						l.Failure(keys...)
					}
				}
				if i%40 == 0 {
					c.Advance(time.Second)
					l.Sweep(c.Now())
				}
			}
		})
	}
	wg.Wait()
	if n := l.Len(); n > 20 {
		t.Errorf("Len = %d; want at most 20", n)
	}
}
