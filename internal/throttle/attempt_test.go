package throttle_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/throttle"
)

// TestBeginCountsAttemptsInFlight: a burst of attempts begun together gets
// no more through than the same attempts one after the other: the free
// failures, and one more whose failure locks the key.
func TestBeginCountsAttemptsInFlight(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{}, throttle.WithClock(c.Now)) // 5 free failures
	var begun []*throttle.Attempt
	refused := 0
	for range 100 {
		a, wait, ok := l.Begin("pair", "ip")
		if !ok {
			refused++
			if wait != time.Second {
				t.Fatalf("refused while attempts are under way: wait %v, want the base delay, 1s", wait)
			}
			continue
		}
		begun = append(begun, a)
	}
	if len(begun) != 6 || refused != 94 {
		t.Fatalf("%d of 100 concurrent attempts begun, %d refused; want 6 and 94", len(begun), refused)
	}
	for _, a := range begun {
		a.Fail()
		a.Fail() // a second end does nothing
	}
	if wait, ok := l.Check("pair"); ok || wait != time.Second {
		t.Fatalf("after 6 failures: Check = %v, %v; want locked for 1s", wait, ok)
	}
	if _, _, ok := l.Begin("pair"); ok {
		t.Fatal("Begin allowed on a locked key")
	}
	c.Advance(time.Second)
	a, _, ok := l.Begin("pair")
	if !ok {
		t.Fatal("Begin refused once the lockout ended")
	}
	if _, _, ok := l.Begin("pair"); ok {
		t.Fatal("a second attempt began beside the one whose failure locks the key")
	}
	a.Fail()
	if wait, ok := l.Check("pair"); ok || wait != 2*time.Second {
		t.Fatalf("after the 7th failure: Check = %v, %v; want 2s, false", wait, ok)
	}
}

func TestBeginMatchesSequentialAttempts(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: 2}, throttle.WithClock(c.Now))
	for i := range 3 {
		a, wait, ok := l.Begin("k")
		if !ok {
			t.Fatalf("attempt %d refused (%v)", i+1, wait)
		}
		a.Fail()
	}
	if _, wait, ok := l.Begin("k"); ok || wait != time.Second {
		t.Fatalf("4th attempt: %v, %v; want refused for 1s", wait, ok)
	}
}

func TestAttemptSucceedAndAbandon(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: 2}, throttle.WithClock(c.Now))
	for range 2 {
		a, _, _ := l.Begin("k")
		a.Fail()
	}
	// Two under way: the one that may lock, and nothing more.
	a1, _, ok1 := l.Begin("k")
	_, _, ok2 := l.Begin("k")
	if !ok1 || ok2 {
		t.Fatalf("after 2 failures, two concurrent Begins: %v, %v; want true, false", ok1, ok2)
	}
	a1.Succeed()
	if n := l.Len(); n != 0 {
		t.Fatalf("after a success, Len = %d; want 0", n)
	}
	// An abandoned attempt counts neither way.
	for range 10 {
		a, _, ok := l.Begin("k")
		if !ok {
			t.Fatal("Begin refused after abandoned attempts")
		}
		a.Abandon()
	}
	if n := l.Len(); n != 0 {
		t.Errorf("after abandoned attempts, Len = %d; want 0", n)
	}
	// A success while others are under way forgets the failures but still
	// counts the others.
	for range 2 {
		a, _, _ := l.Begin("k")
		a.Fail()
	}
	x, _, _ := l.Begin("k")
	l.Success("k")
	y, _, ok := l.Begin("k")
	if !ok {
		t.Fatal("Begin refused after Success")
	}
	x.Fail()
	y.Fail()
	if _, ok := l.Check("k"); !ok {
		t.Error("two failures after a success locked a key with two free failures")
	}
}

func TestBeginRefusesAllKeysOrNone(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{FreeFailures: -1}, throttle.WithClock(c.Now))
	l.Failure("ip") // locked 1s
	if _, wait, ok := l.Begin("pair", "ip"); ok || wait != time.Second {
		t.Fatalf("Begin with a locked key: %v, %v; want refused for 1s", wait, ok)
	}
	if n := l.Len(); n != 1 {
		t.Errorf("a refused Begin left %d keys; want 1 (only the locked one)", n)
	}
}

// TestBeginConcurrent: many goroutines attempting at once, every attempt
// failing, with the clock stopped: exactly the free failures and one more
// are verified.
func TestBeginConcurrent(t *testing.T) {
	c := newClock()
	l := throttle.NewLogin(throttle.LoginConfig{}, throttle.WithClock(c.Now))
	var verified atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				a, _, ok := l.Begin("user@addr")
				if !ok {
					continue
				}
				verified.Add(1)
				a.Fail()
			}
		})
	}
	wg.Wait()
	if n := verified.Load(); n != 6 {
		t.Errorf("%d attempts verified; want 6", n)
	}
}
