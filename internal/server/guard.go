package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// streamGuard keeps the long-lived requests (event streams, consoles, an
// agent's watch, console streams and image downloads) honest after they
// opened. Authentication and the route's rule are checked once, when a
// request arrives; a stream outlives that moment by hours. The guard
// checks each open stream again on every change to tokens, users,
// projects and hosts, as the store's index applies it, and when a token
// expires, and ends the stream as soon as what let it open no longer
// holds: its token was revoked or expired, its user disabled or deleted,
// its identity changed (a superadmin demoted), or it lost the access the
// stream needs (its user left the project, its host was revoked or
// deleted). It also caps the event streams and consoles each user holds
// open.
type streamGuard struct {
	s       *Server
	mu      sync.Mutex
	streams map[*guardedStream]struct{}
	counts  map[string]int // kind and holder -> streams open
	kick    chan struct{}
}

// streamKind names a kind of guarded stream, as users read it in errors.
type streamKind string

const (
	streamEvents  streamKind = "event stream"
	streamConsole streamKind = "console"
	streamAgent   streamKind = "agent stream" // a host's; not capped
)

// Default caps on what one user holds open.
const (
	defaultEventStreamsPerUser = 16
	defaultConsolesPerUser     = 16
)

// streamEndGrace is how long a stream told to end may take before its
// connection is closed under it.
const streamEndGrace = 2 * time.Second

type guardedStream struct {
	kind  streamKind
	token string        // the secret presented; "" for local root
	id    auth.Identity // as authenticated when the stream opened
	// still says what else the stream needs, given the caller's
	// identity now; nil when valid credentials are enough.
	still func(auth.Identity) error
	// end asks the stream's handler to end, saying why.
	end      func(reason string)
	conn     net.Conn // the client's connection, closed if end is not enough
	released chan struct{}
	ended    atomic.Bool

	mu      sync.Mutex
	done    bool        // released
	expires time.Time   // of its token, as last seen
	timer   *time.Timer // fires at expires
}

func newStreamGuard(s *Server) *streamGuard {
	return &streamGuard{s: s, streams: map[*guardedStream]struct{}{}, counts: map[string]int{}, kick: make(chan struct{}, 1)}
}

// start follows the collections access depends on, until ctx ends.
func (g *streamGuard) start(ctx context.Context) {
	notify := func() {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	all := func(store.ChangeType) bool { return true }
	follow(g.s, g.s.tokens.Subscribe(ctx), all, notify)
	follow(g.s, g.s.users.Subscribe(ctx), all, notify)
	follow(g.s, g.s.projects.Subscribe(ctx), all, notify)
	// Heartbeats change hosts all the time; only a deleted host matters.
	follow(g.s, g.s.hosts.Subscribe(ctx), func(t store.ChangeType) bool { return t == store.Delete }, notify)
	g.s.goBG(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-g.kick:
				g.checkAll()
			}
		}
	})
}

// follow calls notify on the changes of a subscription that matter,
// until it ends.
func follow[T any](s *Server, ch <-chan store.Change[T], matters func(store.ChangeType) bool, notify func()) {
	s.goBG(func() {
		for c := range ch {
			if matters(c.Type) {
				notify()
			}
		}
	})
}

// limit is the most streams of kind one user may hold open (0: no limit).
func (g *streamGuard) limit(kind streamKind) int {
	n, def := 0, 0
	switch kind {
	case streamEvents:
		n, def = g.s.cfg.Edge.MaxEventStreamsPerUser, defaultEventStreamsPerUser
	case streamConsole:
		n, def = g.s.cfg.Edge.MaxConsolesPerUser, defaultConsolesPerUser
	default:
		return 0
	}
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// open registers the stream r is about to serve. It refuses (429) a user
// who holds the most streams of kind allowed. still is what the stream
// needs besides valid credentials; end is called, once, to end it. The
// returned release must be called when the stream ends.
func (g *streamGuard) open(r *http.Request, kind streamKind, still func(auth.Identity) error, end func(reason string)) (func(), error) {
	id := auth.FromContext(r.Context())
	gs := &guardedStream{kind: kind, token: presentedToken(r), id: id, still: still, end: end,
		conn: rawConn(r.Context()), released: make(chan struct{})}
	key := string(kind) + "\x00" + id.Kind + "\x00" + id.Name
	limit := g.limit(kind)
	g.mu.Lock()
	if n := g.counts[key]; limit > 0 && n >= limit {
		g.mu.Unlock()
		return nil, &api.Error{Code: api.CodeTooManyRequests,
			Message: fmt.Sprintf("%s has %d %ss open, the most this server allows one user; close one to open another", id, n, kind)}
	}
	g.counts[key]++
	g.streams[gs] = struct{}{}
	g.mu.Unlock()
	// What changed since the request was authenticated counts too.
	g.check(gs)
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			delete(g.streams, gs)
			if g.counts[key]--; g.counts[key] <= 0 {
				delete(g.counts, key)
			}
			g.mu.Unlock()
			gs.mu.Lock()
			gs.done = true
			if gs.timer != nil {
				gs.timer.Stop()
			}
			gs.mu.Unlock()
			close(gs.released)
		})
	}, nil
}

// expiry is when the token of id expires (zero: never).
func (g *streamGuard) expiry(id auth.Identity) time.Time {
	if id.TokenID == "" {
		return time.Time{}
	}
	if rec, ok := g.s.tokens.Get(id.TokenID); ok {
		return rec.ExpiresAt
	}
	return time.Time{}
}

func (g *streamGuard) checkAll() {
	g.mu.Lock()
	all := make([]*guardedStream, 0, len(g.streams))
	for gs := range g.streams {
		all = append(all, gs)
	}
	g.mu.Unlock()
	for _, gs := range all {
		g.check(gs)
	}
}

func (g *streamGuard) check(gs *guardedStream) {
	if reason := g.invalid(gs); reason != "" {
		g.stop(gs, reason)
		return
	}
	g.schedule(gs)
}

// schedule checks the stream again when its token expires.
func (g *streamGuard) schedule(gs *guardedStream) {
	exp := g.expiry(gs.id)
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.done || exp.Equal(gs.expires) {
		return
	}
	gs.expires = exp
	if gs.timer != nil {
		gs.timer.Stop()
		gs.timer = nil
	}
	if !exp.IsZero() {
		// A token is refused once the clock is past its expiry.
		gs.timer = time.AfterFunc(time.Until(exp)+10*time.Millisecond, func() { g.check(gs) })
	}
}

// invalid says why a stream may not go on, or "" when it may.
func (g *streamGuard) invalid(gs *guardedStream) string {
	cur := gs.id
	if gs.token != "" {
		id, err := g.s.identify(gs.token)
		if err != nil {
			return "its token was revoked or expired, or its user disabled or deleted"
		}
		cur = id
	}
	if !sameIdentity(cur, gs.id) {
		return "the access of " + cur.String() + " changed"
	}
	if gs.still != nil {
		if err := gs.still(cur); err != nil {
			return err.Error()
		}
	}
	return ""
}

func sameIdentity(a, b auth.Identity) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Superadmin == b.Superadmin &&
		a.TokenID == b.TokenID && a.Project == b.Project && a.Role == b.Role
}

// stop ends a stream: its handler is asked to end, and its connection is
// closed if it has not within streamEndGrace.
func (g *streamGuard) stop(gs *guardedStream, reason string) {
	if !gs.ended.CompareAndSwap(false, true) {
		return
	}
	g.s.log.Info("ending a stream", "kind", string(gs.kind), "identity", gs.id.String(), "reason", reason)
	go func() {
		gs.end(reason)
		t := time.NewTimer(streamEndGrace)
		defer t.Stop()
		select {
		case <-gs.released:
		case <-t.C:
			if gs.conn != nil {
				gs.conn.Close()
			}
		}
	}()
}

// presentedToken is the bearer token a request carries, as authenticate
// reads it ("" when none).
func presentedToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, _ := strings.CutPrefix(h, "Bearer ")
		return strings.TrimSpace(tok)
	}
	if tok, ok := websocketToken(r); ok {
		return tok
	}
	return ""
}

// closeConn is the end of a stream whose handler has nothing better to do
// than lose its connection.
func closeConn(r *http.Request) func(string) {
	return func(string) {
		if c := rawConn(r.Context()); c != nil {
			c.Close()
		}
	}
}

// What streams need besides valid credentials.

// projectAccess needs permission p in project.
func (s *Server) projectAccess(project string, p auth.Permission) func(auth.Identity) error {
	return func(cur auth.Identity) error {
		if !s.canAs(cur, project, p) {
			return fmt.Errorf("%s no longer holds %s in project %q", cur, p, project)
		}
		return nil
	}
}

// canAs tells whether id holds permission p in project now.
func (s *Server) canAs(id auth.Identity, project string, p auth.Permission) bool {
	pr, ok := s.projects.Get(project)
	if !ok {
		return false
	}
	role := ""
	if id.IsUser() {
		role = pr.Spec.Members[id.Name]
	}
	return auth.Can(id, project, role, p)
}

// rolesAccess needs every role id holds now, in the projects that still
// exist: an event stream shows each project's events by role, and ends
// when a role is lost or lowered rather than go on under new rules.
func (s *Server) rolesAccess(id auth.Identity) func(auth.Identity) error {
	before := map[string]string{}
	for _, p := range listAll(s.projects, nil) {
		if role := auth.EffectiveRole(id, p.Name, p.Spec.Members[id.Name]); role != "" {
			before[p.Name] = role
		}
	}
	return func(cur auth.Identity) error {
		for project, was := range before {
			p, ok := s.projects.Get(project)
			if !ok {
				continue // a deleted project has nothing more to show
			}
			if now := auth.EffectiveRole(cur, project, p.Spec.Members[cur.Name]); rankOf(now) < rankOf(was) {
				return fmt.Errorf("the role of %s in project %q changed from %s to %q", cur, project, was, now)
			}
		}
		return nil
	}
}

func rankOf(role string) int { return slices.Index(api.Roles, role) + 1 }

// hostAccess needs the host to exist as one of Polyvisor's own, and the
// caller to be its agent.
func (s *Server) hostAccess(host string) func(auth.Identity) error {
	return func(cur auth.Identity) error {
		if h, ok := s.hosts.Get(host); !ok || h.Provider != nil {
			return fmt.Errorf("host %q was deleted", host)
		}
		if !cur.IsHost(host) {
			return fmt.Errorf("%s is not the agent of host %q", cur, host)
		}
		return nil
	}
}
