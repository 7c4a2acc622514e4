package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth/password"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

// Password hashing is bounded: argon2id takes ~19 MiB and ~50 ms a hash,
// so at most hashSlots run at once, and a request finding them all taken
// waits up to hashWait for one, then is told to come back.
const (
	maxHashSlots = 4
	hashWait     = 2 * time.Second
)

// Failed logins are throttled per address (an IPv6 /64, as every limit
// per address: addressOf) and user together (the pair),
// so that guessing one account from one address is slowed down without
// locking its owner out from anywhere else, and per address, so that one
// address guessing many accounts is slowed down too. An address has more
// free failures than a pair: many users may share it.
var (
	loginPairConfig = throttle.LoginConfig{FreeFailures: 5}
	loginAddrConfig = throttle.LoginConfig{FreeFailures: 30}
)

// hashSlots is how many password hashes run at once: one a core, up to
// maxHashSlots.
func hashSlots() int { return min(max(runtime.GOMAXPROCS(0), 1), maxHashSlots) }

// loginPair is the throttle key of a user name tried from an address.
func loginPair(addr, user string) string { return "pair:" + addr + "\x00" + user }

// loginAddr is the throttle key of an address.
func loginAddr(addr string) string { return "ip:" + addr }

// errHashBusy answers a request that found every hashing slot taken.
var errHashBusy = &api.Error{Code: api.CodeUnavailable,
	Message: "too many password checks at once; try again in a second"}

// hashSlot takes one of the password hashing slots for the request. When
// none comes free in time it answers 503 with Retry-After itself and
// returns false.
func (s *Server) hashSlot(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	release, err := s.hashing.Enter(r.Context())
	if err != nil {
		if errors.Is(err, throttle.ErrBusy) {
			writeRetryAfter(w, time.Second)
			err = errHashBusy
		}
		s.writeError(w, r, err)
		return nil, false
	}
	return release, true
}

// errThrottled answers a login refused by the throttle.
func errThrottled(w http.ResponseWriter, wait time.Duration, what string) error {
	writeRetryAfter(w, wait)
	return &api.Error{Code: api.CodeTooManyRequests,
		Message: fmt.Sprintf("too many failed logins %s; try again in %s", what, roundUp(wait))}
}

// beginLogin starts a password check for user from the request's address,
// counting it against the pair and the address until it is done. When the
// throttle refuses, it writes the answer itself and returns false.
func (s *Server) beginLogin(w http.ResponseWriter, r *http.Request, user string) (pair, addr *throttle.Attempt, ok bool) {
	ip := addressKey(r)
	pair, wait, ok := s.logins.Begin(loginPair(ip, user))
	if !ok {
		s.writeError(w, r, errThrottled(w, wait, "for this user from this address"))
		return nil, nil, false
	}
	addr, wait, ok = s.loginAddrs.Begin(loginAddr(ip))
	if !ok {
		pair.Abandon()
		s.writeError(w, r, errThrottled(w, wait, "from this address"))
		return nil, nil, false
	}
	return pair, addr, true
}

// endSessions revokes the login sessions of user made before its password
// changed (at revision changed), but keep, and the API tokens made with
// its sessions before then. identify already refuses them; this takes
// them out of the token list.
func (s *Server) endSessions(ctx context.Context, user string, changed int64, keep string) {
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool {
		return t.Version < changed && ((t.Kind == api.TokenSession && t.User == user && t.ID != keep) || t.Login == user)
	}) {
		s.deleteToken(ctx, t)
	}
}

// sessionEnded tells whether a token was ended by a change of a password:
// a login session made before its user's password changed (other than the
// session that changed it), or an API token made with a login session
// before that session's user's password changed.
func (s *Server) sessionEnded(rec *tokenRecord) bool {
	switch {
	case rec.Kind == api.TokenSession:
		pw, ok := s.passwords.Get(rec.User)
		return ok && rec.Version < pw.Version && rec.ID != pw.KeepSession
	case rec.Login != "":
		pw, ok := s.passwords.Get(rec.Login)
		return !ok || rec.Version < pw.Version
	}
	return false
}

// reauthenticate checks the password a request gives again (current) for
// user, a request made with a login session that asks for something
// lasting: guesses are throttled like logins, hashing is bounded. It
// answers the request itself and returns false when the password is
// missing or wrong, or cannot be checked now.
func (s *Server) reauthenticate(w http.ResponseWriter, r *http.Request, user, current string) bool {
	pw, has := s.passwords.Get(user)
	if !has {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: fmt.Sprintf("user %q has no password to confirm this with", user)})
		return false
	}
	if current == "" {
		s.writeError(w, r, api.Invalid("current", "is required: a token made with a login session needs your password again"))
		return false
	}
	pair, addr, ok := s.beginLogin(w, r, user)
	if !ok {
		return false
	}
	release, ok := s.hashSlot(w, r)
	if !ok {
		pair.Abandon()
		addr.Abandon()
		return false
	}
	good, _ := password.Verify(current, pw.Hash)
	release()
	if !good {
		pair.Fail()
		addr.Fail()
		s.writeError(w, r, api.Invalid("current", "is not your current password"))
		return false
	}
	pair.Succeed()
	addr.Abandon()
	return true
}
