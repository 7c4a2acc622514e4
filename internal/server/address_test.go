package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

func TestAddressOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.7:443":            "192.0.2.7",
		"[2001:db8:0:1::1]:443":    "2001:db8:0:1::/64",
		"[2001:db8:0:1:ffff::9]:1": "2001:db8:0:1::/64",
		"[2001:db8:0:2::1]:443":    "2001:db8:0:2::/64",
		"[::ffff:192.0.2.7]:443":   "192.0.2.7",
		"@":                        "unix",
		"":                         "unix",
		"2001:db8:0:1::5":          "2001:db8:0:1::/64",
		"not an address":           "not an address",
	} {
		if got := addressOf(in); got != want {
			t.Errorf("addressOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// v6Addrs are the loopback addresses of the private network namespace:
// two of one /64 and one of another.
var v6Addrs = []string{"2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:2::1"}

// inIPv6Net runs the calling test again, alone, in a private network
// namespace whose loopback also holds v6Addrs, and reports whether this
// is that run (the test goes on) or the one that started it (it is done).
func inIPv6Net(t *testing.T) bool {
	t.Helper()
	if os.Getenv("POLYVISOR_TEST_NETNS") == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("a private network namespace needs root")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is needed for a private network namespace", tool)
		}
	}
	script := `set -e
ip link set lo up
for a in ` + v6Addrs[0] + ` ` + v6Addrs[1] + ` ` + v6Addrs[2] + `; do ip -6 addr add "$a/128" dev lo nodad; done
exec "$@"`
	cmd := exec.Command("unshare", "-n", "sh", "-c", script, "netns", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "POLYVISOR_TEST_NETNS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test in a private network namespace: %v\n%s", err, out)
	}
	t.Logf("in a private network namespace:\n%s", out)
	return false
}

// Over IPv6 every limit kept per client address counts a /64 as one
// address, as the request rate limit did: the login throttle (which
// counted each address, so that a client moving within its /64 got fresh
// guesses at a password), the anonymous rate limit and the connections
// per address.
func TestAddressLimitsPer64(t *testing.T) {
	t.Parallel()
	if !inIPv6Net(t) {
		return
	}
	e := newEnv(t, Config{Listen: "[::1]:0", Edge: EdgeConfig{MaxConnsPerAddress: 3}})
	a1, a2, b := e.loginFrom(v6Addrs[0]), e.loginFrom(v6Addrs[1]), e.loginFrom(v6Addrs[2])
	for i := range loginPairConfig.FreeFailures + 1 {
		if st, _ := a1.try("r-member", "wrong-password"); st != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, st)
		}
	}
	if st, _ := a2.try("r-member", "pw-r-member-secret"); st != http.StatusTooManyRequests {
		t.Errorf("the right password from another address of the same /64: %d, want 429", st)
	}
	if st, _ := b.try("r-member", "pw-r-member-secret"); st != http.StatusOK {
		t.Errorf("the right password from another /64: %d, want 200", st)
	}
	a1.http.CloseIdleConnections()
	a2.http.CloseIdleConnections()
	b.http.CloseIdleConnections()

	// Anonymous requests: one limit per /64.
	e.s.limiter.Store(throttle.NewLimiter(0.001, 2, time.Minute))
	get := func(l *loginFrom) int {
		resp, err := l.http.Get(e.url + "/v1/version")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	get(a1)
	get(a1)
	if st := get(a2); st != http.StatusTooManyRequests {
		t.Errorf("an anonymous request from the same /64 past its burst: %d, want 429", st)
	}
	if st := get(b); st == http.StatusTooManyRequests {
		t.Errorf("an anonymous request from another /64: %d", st)
	}
	a1.http.CloseIdleConnections()
	a2.http.CloseIdleConnections()
	b.http.CloseIdleConnections()

	// Connections: three from a1 held open, then a2 is refused, b is not.
	for range 3 {
		if c, err := e.dialTLSFrom(v6Addrs[0]); err != nil {
			t.Fatalf("connection from %s: %v", v6Addrs[0], err)
		} else {
			defer c.Close()
		}
	}
	if c, err := e.dialTLSFrom(v6Addrs[1]); err == nil {
		c.Close()
		t.Errorf("a fourth connection from the same /64 was served")
	}
	if c, err := e.dialTLSFrom(v6Addrs[2]); err != nil {
		t.Errorf("a connection from another /64: %v", err)
	} else {
		c.Close()
	}
}

// dialTLSFrom opens a TLS connection to the server from a source address.
func (e *env) dialTLSFrom(src string) (*tls.Conn, error) {
	ca, err := os.ReadFile(e.s.CAFile())
	if err != nil {
		return nil, err
	}
	cfg, err := pki.ClientTLSConfig(ca)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = "localhost"
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", e.s.Addr().String())
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}
