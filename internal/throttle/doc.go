// Package throttle slows down clients that ask too often or guess
// passwords.
//
// A Limiter is a set of token buckets, one per key (an IP address, a user,
// a token id): each key may make burst requests at once and rps a second
// after that. Allow says whether a request may go ahead and, if not, how
// long until it may; an HTTP handler turns that into 429 Too Many Requests
// with a Retry-After header.
//
//	lim := throttle.NewLimiter(10, 20, 10*time.Minute)
//	if ok, wait := lim.Allow("ip:" + addr); !ok {
//		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
//		http.Error(w, "too many requests", http.StatusTooManyRequests)
//		return
//	}
//
// A Login counts failed logins per key and locks a key out, for a delay
// that doubles with each further failure, once it has had its free
// failures. A login handler begins an attempt on every key the attempt
// involves before verifying the password, and ends it with the outcome:
//
//	a, wait, ok := login.Begin("pair:" + addr + "\x00" + name)
//	if !ok {
//		// refuse with 429 and Retry-After, without verifying anything
//	}
//	if verified {
//		a.Succeed()
//	} else {
//		a.Fail()
//	}
//
// An attempt counts from its start: beyond the free failures, only one
// attempt at a time goes ahead, so a burst of concurrent guesses gets no
// further than the same guesses made one after the other. (Check, then
// Failure or Success, is the same without that guarantee.)
//
// Keying by an address and a user name together slows down guessing one
// account without locking its owner out from elsewhere; keying by address
// slows down one address guessing many accounts. Keying by user name alone
// would let anyone lock anyone out.
//
// A Gate bounds how many callers do something expensive at once, such as
// hashing a password: the rest wait a little, then are turned away with
// ErrBusy.
//
// Both keep their state in memory, bounded: a key's state is dropped once
// it can no longer affect a decision, and past a cap on the number of keys
// (DefaultMaxKeys unless WithMaxKeys says otherwise) the keys used least
// recently are dropped first. Both are safe for concurrent use, and take
// their time from a clock that tests can replace (WithClock).
package throttle
