package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// A client of a control plane of several servers knows their URLs
// (Config.Servers, SetServers). It sends every request to the server in
// use; a request that could not reach it (the connection was refused,
// timed out or found no route) goes to the next server, which stays in
// use from then on. A request that reached a server is never sent again:
// what it did is for the caller to find out (an Idempotency-Key makes a
// create safe to repeat). Every server trusts the same CA, so one TLS
// configuration serves them all.

// server is one server's base URL.
type server struct {
	base    url.URL
	display string
}

// serverList is the servers of a client, the one in use first to try.
type serverList struct {
	mu  sync.Mutex
	all []server
	cur int
}

func newServerList(all ...server) *serverList { return &serverList{all: all} }

func (l *serverList) current() server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all[l.cur]
}

func (l *serverList) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// failover moves to the server after failed, unless another request moved
// already; it tells whether there is another server to try.
func (l *serverList) failover(failed server) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) < 2 {
		return false
	}
	if l.all[l.cur].display == failed.display {
		l.cur = (l.cur + 1) % len(l.all)
	}
	return true
}

// httpServers parses the URLs of a control plane's servers.
func httpServers(urls []string) ([]server, error) {
	var out []server
	for _, raw := range urls {
		u, err := parseServerURL(raw)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "https" && u.Scheme != "http" {
			return nil, fmt.Errorf("server URL %q: a control plane's servers are reached over https", raw)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("server URL %q names no host: %s", raw, urlForms)
		}
		s := server{base: url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimRight(u.Path, "/")}, display: raw}
		if !slices.ContainsFunc(out, func(o server) bool { return o.base == s.base }) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Servers returns the URLs of the servers the client knows, the one in
// use first.
func (c *Client) Servers() []string {
	c.servers.mu.Lock()
	defer c.servers.mu.Unlock()
	out := make([]string, 0, len(c.servers.all))
	for i := range c.servers.all {
		out = append(out, c.servers.all[(c.servers.cur+i)%len(c.servers.all)].display)
	}
	return out
}

// SetServers makes urls the servers the client knows, keeping the one in
// use when it is among them (else the first is used). A client of a unix
// socket keeps its socket.
func (c *Client) SetServers(urls []string) error {
	if c.servers.current().base.Host == unixHost {
		return nil
	}
	all, err := httpServers(urls)
	if err != nil {
		return fmt.Errorf("set servers: %w", err)
	}
	if len(all) == 0 {
		return errors.New("set servers: no URL")
	}
	c.servers.mu.Lock()
	defer c.servers.mu.Unlock()
	cur := c.servers.all[c.servers.cur]
	c.servers.all, c.servers.cur = all, 0
	if i := slices.IndexFunc(all, func(s server) bool { return s.base == cur.base }); i >= 0 {
		c.servers.cur = i
	}
	return nil
}

// Failover moves the client to its next server, as a request that could
// not reach the server in use does; a caller that finds the server in
// use unfit (it answers, but cannot reach the store) calls it. It tells
// whether there is another server.
func (c *Client) Failover() bool { return c.servers.failover(c.servers.current()) }

// WithServer returns a client of the server at url alone (one of the same
// control plane: same CA, same token), sharing this one's connections.
func (c *Client) WithServer(url string) (*Client, error) {
	all, err := httpServers([]string{url})
	if err != nil {
		return nil, fmt.Errorf("client of %s: %w", url, err)
	}
	cc := *c
	cc.servers = newServerList(all...)
	return &cc, nil
}

// unreached tells whether a request's error shows it never reached a
// server: connecting failed (refused, timed out, no route). The caller
// checks its own context first: a request it cancelled is not retried.
func unreached(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
