package simagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/client"
)

// Each simulated host talks to the server over connections of its own, as
// a real host does: its watch holds one open, its requests share a few
// more (maxConnsPerHost in all, against the real agent's 64: a host that
// reports 25 VMs at once queues a little instead of opening 25
// connections). The server's API is HTTP/1.1 (its consoles are
// websockets), so there is no multiplexing to share between hosts; what
// they share is the TLS configuration (one pool of trusted CAs) and the
// simulator's timers and workers.
//
// On a loopback server every host dials from an address of its own in
// 127.0.0.0/8, so the server's limits per client address (connections,
// requests before authentication) see a fleet of hosts, not one client.
//
// A fleet of thousands may share its request connections instead
// (Config.SharedConns): each host keeps its own watch connection, but its
// heartbeats, reports and look-ups go, with its own token, over a pool the
// fleet shares, as an HTTP/2 client would multiplex them. The server then
// holds one connection per host and the pool instead of two or more per
// host: what a process allowed 20,000 open files can hold for 10,000
// hosts. The server's per-connection cost of the idle keep-alive
// connections real agents would hold is then not measured.
const maxConnsPerHost = 4

// sourceAddr is the loopback address host i dials from: 127.1.0.1,
// 127.1.0.2, ... skipping .0 and .255 in the last byte.
func sourceAddr(i int) net.IP {
	a, b := i/254, i%254+1
	return net.IPv4(127, byte(1+a/256), byte(a%256), byte(b))
}

// poolAddr is the loopback address of the shared pool's i-th connection:
// 127.200.0.1, ... (each connection from its own address, so the pool is
// never held to the server's limit of connections per address).
func poolAddr(i int) net.IP {
	a, b := i/254, i%254+1
	return net.IPv4(127, byte(200+a/256%50), byte(a%256), byte(b))
}

// loopbackServers tells whether every server URL names a loopback IP.
func loopbackServers(servers []string) bool {
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil {
			return false
		}
		ip := net.ParseIP(u.Hostname())
		if ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return len(servers) > 0
}

// tlsConfig trusts the CA certificates in caPEM.
func tlsConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("reading the server's CA certificate: no PEM certificate found")
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// hostClient makes host's client of one server, sending token (none for
// registration), dialing from src when it is not nil.
func hostClient(server, token string, tc *tls.Config, src net.IP) (*client.Client, error) {
	return newClient(server, token, tc, maxConnsPerHost, func() net.IP { return src })
}

// sharedClient makes the client of one server whose connections the
// fleet's hosts share (each sends its own token: client.WithToken), at
// most conns of them, each dialing from its own pool address when own is
// set.
func sharedClient(server string, tc *tls.Config, conns int, own bool) (*client.Client, error) {
	var next atomic.Int64
	return newClient(server, "", tc, conns, func() net.IP {
		if !own {
			return nil
		}
		return poolAddr(int(next.Add(1) - 1))
	})
}

func newClient(server, token string, tc *tls.Config, conns int, src func() net.IP) (*client.Client, error) {
	c, err := client.New(client.Config{
		URL: server, Token: token, TLSConfig: tc, UserAgent: "polyvisor-agent-simulated",
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			tr, ok := rt.(*http.Transport)
			if !ok {
				return rt
			}
			if u, err := url.Parse(server); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
				tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
					if ip := src(); ip != nil {
						d.LocalAddr = &net.TCPAddr{IP: ip}
					}
					return d.DialContext(ctx, network, addr)
				}
				tr.Proxy = nil
			}
			tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = conns, conns
			return tr
		},
	})
	if err != nil {
		return nil, fmt.Errorf("making the client of %s: %w", server, err)
	}
	return c, nil
}
