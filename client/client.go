// Package client is the Go client of Polyvisor's /v1 REST API.
//
// The CLI, the host agent, the web UI's server side and the tests all talk
// to the server through this one package. Every method takes a context
// first; every answer outside 2xx comes back as a *StatusError, which wraps
// the server's *api.Error so that errors.As works with either type:
//
//	var apiErr *api.Error
//	if errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound { ... }
//
// Mutations return an *api.Operation; WaitOperation follows one to its end.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// DefaultUserAgent is sent when Config.UserAgent is empty.
const DefaultUserAgent = "polyvisor-client"

// unixHost is the HTTP host name used over a unix socket.
const unixHost = "polyvisor"

// Config says how to reach and authenticate to a Polyvisor server.
type Config struct {
	// URL is "https://host:port" (or "http://" for tests and proxies), or
	// "unix:///path/to/socket" for the server's local socket. A bare
	// absolute path is taken as a unix socket too.
	URL string
	// Token is sent as "Authorization: Bearer <token>" when not empty.
	Token string
	// CACert is a PEM bundle of the certificate authorities to trust.
	CACert []byte
	// CAFile names a PEM file of certificate authorities to trust, added to
	// CACert. With neither, the system roots are trusted.
	CAFile string
	// TLSConfig, when set, is used as is (cloned) instead of the one built
	// from CACert and CAFile: a pinned configuration, client certificates.
	TLSConfig *tls.Config
	// UserAgent is sent in every request; DefaultUserAgent when empty.
	UserAgent string
	// Project is the project requests act in (sent as ?project=); the
	// server's default project when empty.
	Project string
	// WrapTransport, when set, wraps the client's transport: to observe or
	// decorate every request (tracing, recording).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Servers are the URLs of the control plane's other servers (https,
	// like URL; see failover.go): a request that cannot reach the server
	// in use goes to the next, which stays in use.
	Servers []string
	// DialTimeout bounds connecting to a server (default 10s); a client
	// with other servers to go to wants it short.
	DialTimeout time.Duration
}

// Client talks to one Polyvisor server. It is safe for concurrent use.
type Client struct {
	// servers are the server URLs, the one in use first to be tried; a
	// client made with WithProject or WithToken shares them.
	servers   *serverList
	token     string
	project   string
	userAgent string
	http      *http.Client
	// pollInterval is the least time between two polls of WaitOperation,
	// so a server that answers at once cannot make it spin.
	pollInterval time.Duration
}

// New returns a client for cfg. It does not contact the server.
func New(cfg Config) (*Client, error) {
	u, err := parseServerURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}

	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = 10 * time.Second
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A busy client (an agent reporting for many VMs at once) reuses
		// its connections instead of opening a TLS handshake per request.
		MaxIdleConnsPerHost: 64,
		MaxConnsPerHost:     64,
	}
	// HTTP/1.1 only: the console and stream routes are websockets, which
	// upgrade an HTTP/1.1 connection.
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)

	c := &Client{
		token:        cfg.Token,
		project:      cfg.Project,
		userAgent:    cfg.UserAgent,
		pollInterval: time.Second,
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}

	switch u.Scheme {
	case "unix":
		sock := u.Path
		if u.Host != "" {
			// unix://relative/path: keep what the user wrote.
			sock = u.Host + u.Path
		}
		if sock == "" {
			return nil, fmt.Errorf("create client: %q names no socket path", cfg.URL)
		}
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		c.servers = newServerList(server{base: url.URL{Scheme: "http", Host: unixHost}, display: cfg.URL})
	case "https", "http":
		if u.Host == "" {
			return nil, fmt.Errorf("create client: server URL %q names no host: %s", cfg.URL, urlForms)
		}
		all, err := httpServers(append([]string{cfg.URL}, cfg.Servers...))
		if err != nil {
			return nil, fmt.Errorf("create client: %w", err)
		}
		c.servers = newServerList(all...)
		if u.Scheme == "https" {
			tlsCfg, err := buildTLS(cfg)
			if err != nil {
				return nil, fmt.Errorf("create client: %w", err)
			}
			tr.TLSClientConfig = tlsCfg
		}
	default:
		return nil, fmt.Errorf("create client: server URL %q: unsupported scheme %q: %s", cfg.URL, u.Scheme, urlForms)
	}
	var rt http.RoundTripper = tr
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(tr)
	}
	c.http = &http.Client{Transport: rt}
	return c, nil
}

// buildTLS makes the TLS configuration of cfg.
func buildTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSConfig != nil {
		return cfg.TLSConfig.Clone(), nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	pem := cfg.CACert
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pem = append(append(append([]byte{}, pem...), '\n'), b...)
	}
	if len(pem) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("read CA certificates: no PEM certificate found")
		}
		t.RootCAs = pool
	}
	return t, nil
}

// URL returns the URL of the server in use: the one the client was made
// with, or the one it failed over to.
func (c *Client) URL() string { return c.servers.current().display }

// HTTPClient returns the underlying HTTP client, for routes this package
// does not cover. Requests made with it carry no token.
func (c *Client) HTTPClient() *http.Client { return c.http }

// CloseIdleConnections closes the idle keep-alive connections to the server.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Health checks GET /healthz.
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/healthz", noAuth: true})
	if err != nil {
		return fmt.Errorf("check server health: %w", err)
	}
	return resp.Body.Close()
}

// WithProject returns a client acting in project, sharing this one's
// connections.
func (c *Client) WithProject(project string) *Client {
	cc := *c
	cc.project = project
	return &cc
}

// WithToken returns a client sending token, sharing this one's
// connections.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.token = token
	return &cc
}

// Project returns the project the client acts in ("" for the default).
func (c *Client) Project() string { return c.project }
