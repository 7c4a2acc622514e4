package throttle

import "time"

// An Attempt is a login attempt under way, begun with Login.Begin. It
// counts against its keys until it is done: call exactly one of Fail,
// Succeed or Abandon (further calls do nothing).
type Attempt struct {
	l    *Login
	keys []string
	done bool
}

// Begin starts a login attempt involving keys, or refuses it. It refuses
// when one of the keys is locked out, and also when the attempts already
// under way on a key could, should they all fail, use up its free
// failures: beyond them only one attempt at a time goes ahead, the one
// whose failure locks the key. So a burst of concurrent attempts gets no
// more verifications than the same attempts made one after the other.
// When it refuses, retryAfter says how long to wait: until the lockout
// ends, or BaseDelay when attempts under way must finish first.
//
// Unlike Check followed by Failure, which lets every concurrent attempt
// through before the first failure is counted, Begin counts an attempt
// from its start.
func (l *Login) Begin(keys ...string) (a *Attempt, retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.keys.sweep(now)
	for _, k := range keys {
		e, found := l.keys.get(k)
		if !found {
			continue
		}
		f := e.val
		if f.locked.After(now) {
			retryAfter = max(retryAfter, f.locked.Sub(now))
			continue
		}
		count := f.count
		if f.forgotten(now, l.cfg.Window) {
			count = 0
		}
		if f.inflight > 0 && count+f.inflight > l.cfg.FreeFailures {
			retryAfter = max(retryAfter, l.cfg.BaseDelay)
		}
	}
	if retryAfter > 0 {
		return nil, retryAfter, false
	}
	for _, k := range keys {
		e, found := l.keys.get(k)
		if !found {
			e = l.keys.add(k, &failures{}, now, l.isHeld(now))
		}
		l.keys.touch(e, now)
		e.val.inflight++
	}
	return &Attempt{l: l, keys: keys}, 0, true
}

// Fail ends the attempt as a failed login: a failure is counted against
// each of its keys, as Failure does.
func (a *Attempt) Fail() { a.finish(a.l.fail) }

// Succeed ends the attempt as a successful login: its keys' failures are
// forgotten, as Success does, though attempts still under way on them
// keep counting.
func (a *Attempt) Succeed() {
	a.finish(func(f *failures, _ time.Time) { *f = failures{inflight: f.inflight} })
}

// Abandon ends an attempt that verified nothing (the server was too busy
// to): it counts neither way.
func (a *Attempt) Abandon() { a.finish(nil) }

// finish ends the attempt, applying outcome to each key's record.
func (a *Attempt) finish(outcome func(*failures, time.Time)) {
	if a == nil || a.done {
		return
	}
	a.done = true
	l := a.l
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range a.keys {
		e, found := l.keys.get(k)
		if !found {
			if outcome == nil {
				continue
			}
			// Evicted or swept while under way: start its record again.
			e = l.keys.add(k, &failures{}, now, l.isHeld(now))
		}
		f := e.val
		if f.inflight > 0 {
			f.inflight--
		}
		if outcome != nil {
			if f.forgotten(now, l.cfg.Window) {
				*f = failures{inflight: f.inflight}
			}
			outcome(f, now)
			l.keys.touch(e, now)
		}
		if f.count == 0 && f.inflight == 0 && !f.locked.After(now) {
			l.keys.remove(k)
		}
	}
}
