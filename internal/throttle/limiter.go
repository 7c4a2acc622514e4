package throttle

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// A Limiter rate-limits requests per key with token buckets. The zero
// value and a nil *Limiter allow everything.
type Limiter struct {
	rps   float64
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets *table[*rate.Limiter]
}

// NewLimiter returns a Limiter that lets each key make burst requests at
// once, and rps a second after that. If rps <= 0 it allows everything.
//
// A key's bucket is forgotten once unused for idleTTL; a forgotten key
// starts again with a full bucket, so idleTTL is never taken to be shorter
// than a bucket takes to refill (burst/rps), which is also what it is if
// idleTTL <= 0.
func NewLimiter(rps float64, burst int, idleTTL time.Duration, opts ...Option) *Limiter {
	if rps <= 0 {
		return &Limiter{}
	}
	o := applyOptions(opts)
	burst = max(burst, 1)
	refill := time.Duration(math.Ceil(float64(burst) / rps * float64(time.Second)))
	return &Limiter{
		rps:     rps,
		burst:   burst,
		now:     o.now,
		buckets: newTable[*rate.Limiter](max(idleTTL, refill), o.maxKeys),
	}
}

// Allow takes a token from key's bucket. If there is none it returns false
// and how long until there will be one.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.buckets == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.buckets.sweep(now)
	e, found := l.buckets.get(key)
	if !found {
		e = l.buckets.add(key, rate.NewLimiter(rate.Limit(l.rps), l.burst), now, nil)
	}
	l.buckets.touch(e, now)
	if e.val.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - e.val.TokensAt(now)
	wait := time.Duration(math.Ceil(missing / l.rps * float64(time.Second)))
	return false, max(wait, 1)
}

// Sweep forgets the keys idle at now for longer than the idle TTL. Allow
// does this as it goes; Sweep is for tests and for callers that want to
// release memory eagerly.
func (l *Limiter) Sweep(now time.Time) {
	if l == nil || l.buckets == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buckets.sweep(now)
}

// Len returns the number of keys tracked.
func (l *Limiter) Len() int {
	if l == nil || l.buckets == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.len()
}
