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
// failures. A login handler checks every key the attempt involves before
// verifying the password, and records the outcome against all of them:
//
//	keys := []string{"user:" + name, "ip:" + addr}
//	if wait, ok := login.Check(keys...); !ok {
//		// refuse with 429 and Retry-After, without verifying anything
//	}
//	if verified {
//		login.Success(keys...)
//	} else {
//		login.Failure(keys...)
//	}
//
// Keying by user stops guessing one account from many addresses; keying by
// address stops guessing many accounts from one.
//
// Both keep their state in memory, bounded: a key's state is dropped once
// it can no longer affect a decision, and past a cap on the number of keys
// (DefaultMaxKeys unless WithMaxKeys says otherwise) the keys used least
// recently are dropped first. Both are safe for concurrent use, and take
// their time from a clock that tests can replace (WithClock).
package throttle
