package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/pki"
)

// EdgeConfig bounds what clients may hold open, and says where metrics and
// the server certificate come from. Zero fields take the defaults.
type EdgeConfig struct {
	// ReadHeaderTimeout bounds the TLS handshake and a request's headers
	// (default 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle for that long
	// (default 90s).
	IdleTimeout time.Duration
	// BodyReadTimeout bounds a request body: it must arrive whole within
	// that time, and an image upload must not stall for longer (default
	// 30s). Event streams, watches and consoles have no such bound.
	BodyReadTimeout time.Duration
	// MaxConnsPerAddress is the most connections one client address may
	// hold open on the TLS port (default 256; negative: no limit).
	MaxConnsPerAddress int
	// MaxEventStreamsPerUser and MaxConsolesPerUser cap what one user
	// holds open (default 16 each; negative: no limit).
	MaxEventStreamsPerUser int
	MaxConsolesPerUser     int
	// MetricsListen, when set, also serves /metrics without
	// authentication, over plain HTTP, on that address: give it one only
	// the monitoring network reaches. On the API port /metrics needs a
	// superadmin or the metrics token.
	MetricsListen string
	// Cert sets the server certificate's validity and when it is renewed.
	Cert pki.CertOptions
}

func (e EdgeConfig) withDefaults() EdgeConfig {
	if e.ReadHeaderTimeout == 0 {
		e.ReadHeaderTimeout = 10 * time.Second
	}
	if e.IdleTimeout == 0 {
		e.IdleTimeout = 90 * time.Second
	}
	if e.BodyReadTimeout == 0 {
		e.BodyReadTimeout = 30 * time.Second
	}
	if e.MaxConnsPerAddress == 0 {
		e.MaxConnsPerAddress = 256
	}
	return e
}

// streamRoutes hold their connection open by design: an event stream, an
// agent's watch, a console and the agent's end of it. They have no body
// deadline and end when their client goes, or their access does.
var streamRoutes = map[string]bool{
	"GET /v1/events":                   true,
	"GET /v1/agent/hosts/{name}/watch": true,
	"GET /v1/vms/{name}/console":       true,
	"GET /v1/agent/streams/{id}":       true,
}

// uploadRoutes take bodies of any length (disk images): the body must
// keep coming rather than arrive within a fixed time.
var uploadRoutes = map[string]bool{"POST /v1/images": true}

// routeHandler is one route as served: the body deadline, then wrap
// (authentication, rate limit, rule, audit), then the handler, guarded
// when it is a long download.
func (s *Server) routeHandler(rt route) http.Handler {
	pattern := rt.method + " " + rt.path
	if pattern == "GET /v1/agent/images/{project}/{name}/content" {
		// An image download ends when its host is revoked or deleted.
		h := rt.handler
		rt.handler = func(w http.ResponseWriter, r *http.Request) {
			host := auth.FromContext(r.Context()).Name
			release, err := s.guard.open(r, streamAgent, s.hostAccess(host), closeConn(r))
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			defer release()
			h(w, r)
		}
	}
	return s.bodyDeadline(pattern, s.wrap(rt))
}

// bodyDeadline bounds the time a request's body may take to arrive.
func (s *Server) bodyDeadline(pattern string, next http.Handler) http.Handler {
	if streamRoutes[pattern] {
		return next
	}
	limit, upload := s.cfg.Edge.BodyReadTimeout, uploadRoutes[pattern]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(limit)); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, limit: limit, progress: upload}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody reads a request body under the connection's read deadline:
// it lifts the deadline once the body is read (the connection then waits
// for the next request under the idle timeout), moves it on with every
// read for an upload, and names the bound when it is hit.
type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	limit    time.Duration
	progress bool
	done     bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF) && !b.done:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		what := "did not arrive whole within"
		if b.progress {
			what = "stalled for"
		}
		return n, api.Invalid("body", "request body %s %s", what, b.limit)
	case n > 0 && b.progress:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.limit))
	}
	return n, err
}

type rawConnKey struct{}

// rawConn is the client connection a request arrived on (TLS or unix).
func rawConn(ctx context.Context) net.Conn {
	c, _ := ctx.Value(rawConnKey{}).(net.Conn)
	return c
}

// httpServer is the HTTP server of one listener, with the edge's timeouts.
// There is no overall read or write timeout: streams and consoles last.
func (s *Server) httpServer(h http.Handler, local bool) *http.Server {
	mark := connContext(local)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.Edge.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Edge.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(mark(ctx, c), rawConnKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// limitListener refuses a client address (as addressOf counts it: an IPv6
// /64) more than max open connections:
// the connection over the limit is closed as soon as it is accepted.
type limitListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu       sync.Mutex
	open     map[string]int
	lastWarn time.Time
}

func limitPerAddress(l net.Listener, max int, log *slog.Logger) net.Listener {
	if max <= 0 {
		return l
	}
	return &limitListener{Listener: l, max: max, log: log, open: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := addressOf(c.RemoteAddr().String())
		l.mu.Lock()
		if l.open[addr] >= l.max {
			warn := time.Since(l.lastWarn) > 10*time.Second
			if warn {
				l.lastWarn = time.Now()
			}
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("refusing connections over the limit per client address", "address", addr, "limit", l.max)
			}
			continue
		}
		l.open[addr]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.open[addr]--; l.open[addr] <= 0 {
				delete(l.open, addr)
			}
			l.mu.Unlock()
		}}, nil
	}
}

// countedConn gives its place back once, when closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// serveMetrics serves /metrics alone, without authentication, on the
// address the configuration gives for it.
func (s *Server) serveMetrics() error {
	addr := s.cfg.Edge.MetricsListen
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.metrics.serve)
	s.mu.Lock()
	s.metricsAddr = l.Addr()
	s.mu.Unlock()
	s.serve(limitPerAddress(l, s.cfg.Edge.MaxConnsPerAddress, s.log), mux, false)
	return nil
}

// MetricsAddr is the address of the separate metrics listener, if any.
func (s *Server) MetricsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}
