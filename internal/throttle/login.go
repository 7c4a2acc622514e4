package throttle

import (
	"sync"
	"time"
)

// LoginConfig configures a Login. Zero fields take their defaults.
type LoginConfig struct {
	// FreeFailures is how many failures a key may have before it is
	// locked out (default 5; negative for none).
	FreeFailures int
	// BaseDelay is the first lockout (default 1 s). Each further failure
	// doubles it, up to MaxDelay (default 15 min).
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Window is how long a key's failures are remembered (default
	// 15 min): they are forgotten once Window has passed both since the
	// last of them and since the end of the key's lockout.
	Window time.Duration
}

func (c LoginConfig) withDefaults() LoginConfig {
	switch {
	case c.FreeFailures == 0:
		c.FreeFailures = 5
	case c.FreeFailures < 0:
		c.FreeFailures = 0
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 15 * time.Minute
	}
	c.MaxDelay = max(c.MaxDelay, c.BaseDelay)
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	return c
}

// A Login throttles failed logins per key: after a key's FreeFailures
// failures, each further failure locks it out, for BaseDelay the first
// time and twice as long each time after, up to MaxDelay.
type Login struct {
	cfg LoginConfig
	now func() time.Time

	mu   sync.Mutex
	keys *table[*failures]
}

// failures is one key's record.
type failures struct {
	count  int
	last   time.Time // of the last failure
	locked time.Time // until when; zero if never locked
	// inflight counts the attempts begun and not yet done (Begin).
	inflight int
}

// held tells whether f must not be evicted to make room: the key is
// locked out, or attempts on it are under way.
func (f *failures) held(now time.Time) bool { return f.locked.After(now) || f.inflight > 0 }

// forgotten reports whether f no longer counts at now.
func (f *failures) forgotten(now time.Time, window time.Duration) bool {
	end := f.last
	if f.locked.After(end) {
		end = f.locked
	}
	return now.Sub(end) >= window
}

// NewLogin returns a Login configured by cfg.
func NewLogin(cfg LoginConfig, opts ...Option) *Login {
	cfg = cfg.withDefaults()
	o := applyOptions(opts)
	// A lockout ends at most MaxDelay after the failure that caused it,
	// and is forgotten Window after that.
	ttl := cfg.MaxDelay + cfg.Window
	return &Login{cfg: cfg, now: o.now, keys: newTable[*failures](ttl, o.maxKeys)}
}

// Check reports whether a login involving keys may be attempted: it may
// unless one of them is locked out, and then retryAfter is how long until
// all of them are free.
func (l *Login) Check(keys ...string) (retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.keys.sweep(now)
	for _, k := range keys {
		if e, found := l.keys.get(k); found && e.val.locked.After(now) {
			retryAfter = max(retryAfter, e.val.locked.Sub(now))
		}
	}
	return retryAfter, retryAfter == 0
}

// Failure records a failed login against each of keys.
func (l *Login) Failure(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.keys.sweep(now)
	for _, k := range keys {
		e, found := l.keys.get(k)
		switch {
		case !found:
			e = l.keys.add(k, &failures{}, now, l.isHeld(now))
		case e.val.forgotten(now, l.cfg.Window):
			*e.val = failures{inflight: e.val.inflight}
		}
		l.keys.touch(e, now)
		l.fail(e.val, now)
	}
}

// fail counts one failure in f, locking it out once past the free ones.
func (l *Login) fail(f *failures, now time.Time) {
	f.count++
	f.last = now
	if extra := f.count - l.cfg.FreeFailures; extra > 0 {
		until := now.Add(l.delay(extra))
		if until.After(f.locked) {
			f.locked = until
		}
	}
}

// Success forgets keys' failures.
func (l *Login) Success(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if e, found := l.keys.get(k); found && e.val.inflight > 0 {
			*e.val = failures{inflight: e.val.inflight}
			continue
		}
		l.keys.remove(k)
	}
}

// Sweep forgets the keys with no failure in the MaxDelay+Window before
// now, whose failures can no longer count. Check and Failure do this as
// they go; Sweep is for tests and for callers that want to release memory
// eagerly.
func (l *Login) Sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys.sweep(now)
}

// Len returns the number of keys tracked.
func (l *Login) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys.len()
}

// delay is the lockout for a key's extra-th failure beyond the free ones.
func (l *Login) delay(extra int) time.Duration {
	d := l.cfg.BaseDelay
	for i := 1; i < extra; i++ {
		if d > l.cfg.MaxDelay/2 {
			return l.cfg.MaxDelay
		}
		d *= 2
	}
	return d
}

// isHeld returns a predicate saying whether a key is locked out at now or
// has attempts under way, so that making room for a new key drops the
// others first.
func (l *Login) isHeld(now time.Time) func(*failures) bool {
	return func(f *failures) bool { return f.held(now) }
}
