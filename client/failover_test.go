package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// deadURL is the URL of a port nothing listens on any more.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// TestFailoverToTheNextServer: a request that cannot reach the server in
// use goes to the next one, which stays in use; its JSON body goes
// whole; a request that reached a server that failed is not sent again;
// a raw body (an upload) is never sent twice.
func TestFailoverToTheNextServer(t *testing.T) {
	var got atomic.Int32
	var bodies []string
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		switch r.URL.Path {
		case "/v1/boom":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"lost the store"}}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"name":"h1"}`))
		}
	}))
	defer live.Close()
	dead := deadURL(t)
	c, err := New(Config{URL: dead, Servers: []string{live.URL}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.PutHostStatus(ctx, "h1", api.HostStatus{CPUs: 2}); err != nil {
		t.Fatalf("a request with the first server dead: %v", err)
	}
	if c.URL() != live.URL || got.Load() != 1 || !strings.Contains(bodies[0], `"cpus":2`) {
		t.Fatalf("in use %s, %d requests reached the live server, body %q", c.URL(), got.Load(), bodies)
	}
	if s := c.Servers(); len(s) != 2 || s[0] != live.URL {
		t.Fatalf("servers %v: the live one first", s)
	}
	// A server error is the server's answer: not sent again elsewhere.
	err = c.call(ctx, request{method: http.MethodPost, path: "/v1/boom", body: map[string]int{"a": 1}}, nil)
	if HTTPStatus(err) != http.StatusServiceUnavailable || got.Load() != 2 || c.URL() != live.URL {
		t.Fatalf("a 503: %v, %d requests, in use %s", err, got.Load(), c.URL())
	}

	// Both dead: the error says so, after trying each once.
	c2, _ := New(Config{URL: deadURL(t), Servers: []string{deadURL(t)}, DialTimeout: time.Second})
	if _, err := c2.PutHostStatus(ctx, "h1", api.HostStatus{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("with every server dead: %v", err)
	}

	// A raw body is read once: its request goes to one server only.
	c3, _ := New(Config{URL: deadURL(t), Servers: []string{live.URL}, DialTimeout: time.Second})
	before := got.Load()
	_, err = c3.send(ctx, request{method: http.MethodPost, path: "/v1/images", raw: strings.NewReader("disk"), size: 4, contentType: "application/octet-stream"})
	if err == nil || got.Load() != before {
		t.Fatalf("an upload to a dead server: %v, reached the live one %d times", err, got.Load()-before)
	}

	// SetServers keeps the server in use; WithServer talks to one only.
	if err := c.SetServers([]string{dead, live.URL, deadURL(t)}); err != nil {
		t.Fatal(err)
	}
	if c.URL() != live.URL {
		t.Fatalf("after SetServers the client uses %s, not the live %s", c.URL(), live.URL)
	}
	one, err := c.WithServer(dead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.PutHostStatus(ctx, "h1", api.HostStatus{}); err == nil {
		t.Fatal("a client of one dead server reached another")
	}
	if c.URL() != live.URL {
		t.Fatal("WithServer moved the client it came from")
	}
}
