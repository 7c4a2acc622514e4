package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// loginFrom sends POST /v1/login from a source address of the loopback
// network (127.0.0.0/8), as a client of that address would.
type loginFrom struct {
	e    *env
	http *http.Client
}

func (e *env) loginFrom(addr string) *loginFrom {
	tr := e.super.HTTPClient().Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	tr.DialContext = d.DialContext
	return &loginFrom{e: e, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// try logs in and returns the status and the Retry-After header.
func (l *loginFrom) try(user, pw string) (int, string) {
	body, _ := json.Marshal(api.Login{User: user, Password: pw})
	resp, err := l.http.Post(l.e.url+"/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		l.e.t.Fatalf("login %s: %v", user, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestLoginLockoutIsPerAddressAndUser: wrong passwords for a user from one
// address lock that address out of that user, with a lockout that grows,
// but never the user out from elsewhere; an address guessing many users
// is locked out of all of them.
//
// The lockouts run on a clock of the test's, moved rather than waited
// for: on a busy machine a login (argon2id under -race) can take longer
// than the first lockout lasts.
func TestLoginLockoutIsPerAddressAndUser(t *testing.T) {
	t.Parallel()
	clk := &movedClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newEnv(t, Config{LoginClock: clk.now})
	attacker, owner := e.loginFrom("127.0.0.2"), e.loginFrom("127.0.0.3")
	for i := range loginPairConfig.FreeFailures + 1 {
		if st, _ := attacker.try("r-member", "wrong-password"); st != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, st)
		}
	}
	st, retry := attacker.try("r-member", "pw-r-member-secret")
	if st != http.StatusTooManyRequests || retry != "1" {
		t.Fatalf("right password from the locked-out address: %d (Retry-After %q), want 429 after 1s", st, retry)
	}
	// The owner, from another address, is not locked out.
	if st, _ := owner.try("r-member", "pw-r-member-secret"); st != http.StatusOK {
		t.Fatalf("the user from another address: %d, want 200", st)
	}
	// The locked-out address may still log in as someone else.
	if st, _ := attacker.try("r-viewer", "pw-r-viewer-secret"); st != http.StatusOK {
		t.Errorf("another user from the address locked out of r-member: %d, want 200", st)
	}
	// The owner's success did not clear the attacker's lockout, and the
	// next failure after it locks for longer.
	clk.move(1100 * time.Millisecond)
	if st, _ := attacker.try("r-member", "wrong-password"); st != http.StatusUnauthorized {
		t.Fatalf("a guess once the lockout ended: %d, want 401", st)
	}
	if st, retry := attacker.try("r-member", "pw-r-member-secret"); st != http.StatusTooManyRequests || retry != "2" {
		t.Errorf("after a further failure: %d (Retry-After %q), want 429 after 2s", st, retry)
	}

	// One address guessing many users is locked out of all of them,
	// whoever the next name is; other addresses are not.
	sprayer := e.loginFrom("127.0.0.4")
	for i := range loginAddrConfig.FreeFailures + 1 {
		if st, _ := sprayer.try(fmt.Sprintf("guess-%d", i), "wrong-password"); st != http.StatusUnauthorized {
			t.Fatalf("spray %d: %d, want 401", i+1, st)
		}
	}
	if st, _ := sprayer.try("r-admin", "pw-r-admin-secret"); st != http.StatusTooManyRequests {
		t.Errorf("an address past its failures, with a right password: %d, want 429", st)
	}
	if st, _ := owner.try("r-admin", "pw-r-admin-secret"); st != http.StatusOK {
		t.Errorf("another address: %d, want 200", st)
	}
}

// TestConcurrentLoginsAreBounded: a burst of concurrent wrong passwords
// gets no more verifications than the throttle allows one after the
// other, and no more password hashes run at once than the gate's slots.
func TestConcurrentLoginsAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	hwm := func() string {
		b, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
			}
		}
		return "?"
	}
	before := hwm()
	burst := func(from *loginFrom, user func(i int) string) map[int]int {
		var mu sync.Mutex
		got := map[int]int{}
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				st, retry := from.try(user(i), "wrong-password")
				if (st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable) && retry == "" {
					t.Errorf("%d without Retry-After", st)
				}
				mu.Lock()
				got[st]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return got
	}
	one := burst(e.loginFrom("127.0.0.5"), func(int) string { return "r-member" })
	if n := one[http.StatusUnauthorized]; n > loginPairConfig.FreeFailures+1 || n == 0 {
		t.Errorf("100 concurrent wrong passwords for one user: %d checked (401), want 1..%d; answers %v", n, loginPairConfig.FreeFailures+1, one)
	}
	if n := one[http.StatusTooManyRequests] + one[http.StatusServiceUnavailable] + one[http.StatusUnauthorized]; n != 100 {
		t.Errorf("answers %v: want only 401, 429 and 503", one)
	}
	many := burst(e.loginFrom("127.0.0.6"), func(i int) string { return fmt.Sprint("user-", i) })
	if n := many[http.StatusUnauthorized]; n > loginAddrConfig.FreeFailures+1 || n == 0 {
		t.Errorf("100 concurrent wrong passwords from one address: %d checked, want 1..%d; answers %v", n, loginAddrConfig.FreeFailures+1, many)
	}
	if p := e.s.hashing.Peak(); p > hashSlots() {
		t.Errorf("%d password hashes ran at once, want at most %d", p, hashSlots())
	}
	t.Logf("answers: one user %v, many users %v; hashes at once at most %d; peak RSS %s before, %s after", one, many, e.s.hashing.Peak(), before, hwm())
}

// TestLoginWhenHashingIsBusy: with every hashing slot taken, a login waits
// a little, then is told to come back, and is not counted as a failure.
func TestLoginWhenHashingIsBusy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	var held []func()
	for range e.s.hashing.Size() {
		release, err := e.s.hashing.Enter(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	// As many attempts at once as the throttle lets begin: had they
	// counted as failures, the user would now be locked out.
	from := e.loginFrom("127.0.0.7")
	var wg sync.WaitGroup
	for range loginPairConfig.FreeFailures + 1 {
		wg.Go(func() {
			if st, retry := from.try("r-member", "wrong-password"); st != http.StatusServiceUnavailable || retry != "1" {
				t.Errorf("login with hashing busy: %d (Retry-After %q), want 503 after 1s", st, retry)
			}
		})
	}
	wg.Wait()
	for _, release := range held {
		release()
	}
	if st, _ := from.try("r-member", "pw-r-member-secret"); st != http.StatusOK {
		t.Errorf("login once hashing is free: %d, want 200 (the refused attempts are no failures)", st)
	}
}

// movedClock is a clock a test moves.
type movedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *movedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *movedClock) move(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
