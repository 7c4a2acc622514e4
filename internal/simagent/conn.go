package simagent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
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
const maxConnsPerHost = 4

// sourceAddr is the loopback address host i dials from: 127.1.0.1,
// 127.1.0.2, ... skipping .0 and .255 in the last byte.
func sourceAddr(i int) net.IP {
	a, b := i/254, i%254+1
	return net.IPv4(127, byte(1+a/256), byte(a%256), byte(b))
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
	c, err := client.New(client.Config{
		URL: server, Token: token, TLSConfig: tc, UserAgent: "polyvisor-agent-simulated",
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			tr, ok := rt.(*http.Transport)
			if !ok {
				return rt
			}
			if src != nil {
				d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
				tr.DialContext = d.DialContext
				tr.Proxy = nil
			}
			tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = maxConnsPerHost, maxConnsPerHost
			return tr
		},
	})
	if err != nil {
		return nil, fmt.Errorf("making the client of %s: %w", server, err)
	}
	return c, nil
}
