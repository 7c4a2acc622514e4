package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/version"
)

// route is one API endpoint: its pattern, the access rule checked before
// the handler runs, and the handler. Every route must name a rule; the
// one decision function, auth.Authorize, applies it.
type route struct {
	method  string
	path    string
	rule    auth.Rule
	handler http.HandlerFunc
	// hostOf, for host-scoped routes, names the host the request concerns
	// ("" when there is none).
	hostOf func(r *http.Request, id auth.Identity) string
	// projectOf, for routes naming an object that carries its project
	// (operations, providers), is that object's project; "" falls back
	// to the request's.
	projectOf func(r *http.Request) string
	// notFound, beside projectOf, is the handler's error for a missing
	// object; an object of a project the caller may not see answers as a
	// missing one (see asMissing).
	notFound func(r *http.Request) error
}

// routes is the whole API, one table per resource.
func (s *Server) routes() []route {
	var rs []route
	rs = append(rs, s.metaRoutes()...)
	rs = append(rs, s.hostRoutes()...)
	rs = append(rs, s.vmRoutes()...)
	rs = append(rs, s.imageRoutes()...)
	rs = append(rs, s.operationRoutes()...)
	rs = append(rs, s.agentRoutes()...)
	rs = append(rs, s.providerRoutes()...)
	rs = append(rs, s.vmExtraRoutes()...)
	rs = append(rs, s.projectRoutes()...)
	rs = append(rs, s.userRoutes()...)
	rs = append(rs, s.tokenRoutes()...)
	rs = append(rs, s.auditRoutes()...)
	rs = append(rs, s.networkRoutes()...)
	rs = append(rs, s.clusterRoutes()...)
	rs = append(rs, s.migrationRoutes()...)
	rs = append(rs, s.poolRoutes()...)
	rs = append(rs, s.volumeRoutes()...)
	rs = append(rs, s.serverRoutes()...)
	rs = append(rs, s.peerRoutes()...)
	rs = append(rs, s.vmMigrationRoutes()...)
	rs = append(rs, s.planRoutes()...)
	rs = append(rs, s.haRoutes()...)
	rs = append(rs, s.balanceRoutes()...)
	rs = append(rs, s.usageRoutes()...)
	return rs
}

func (s *Server) metaRoutes() []route {
	return []route{
		{method: "GET", path: "/healthz", rule: auth.Public, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("ok\n"))
		}},
		{method: "GET", path: "/metrics", rule: auth.Metrics, handler: s.metrics.serve},
		{method: "GET", path: "/v1/openapi.json", rule: auth.Public, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(api.OpenAPI)
		}},
		{method: "GET", path: "/v1/events", rule: auth.User, handler: s.streamEvents},
		{method: "GET", path: "/v1/version", rule: auth.User, handler: func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, version.Get())
		}},
	}
}

// Handler returns the API's HTTP handler: the route table on a ServeMux,
// each route wrapped in authentication, rate limiting, its rule, the audit
// log and metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.method+" "+rt.path, s.routeHandler(rt))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
	})
	// Outside /v1, GET serves the browser console.
	mux.Handle("GET /", s.uiHandler())
	return mux
}

// request is what the API learnt about a request before its handler runs;
// handlers read it with requestOf and add to what the audit log records.
type request struct {
	id      auth.Identity
	facts   auth.Facts
	reqID   string
	project string // the project the request acts in ("" outside projects)
	// projectSeen tells whether the caller may see project at all; the
	// audit log records a request in its project only then.
	projectSeen bool
	// restricted, for a route that takes access away or frees space, is
	// why other changes are refused now (read-only, the audit log failing
	// closed); nil when they are not.
	restricted error

	// Set by handlers for the audit record.
	resource    api.Ref
	operationID string
	actor       *api.AuditActor // overrides the identity (a login names its user)
	outcome     string          // overrides the outcome (a failed login is denied)
	message     string
}

type requestKey struct{}

// requestOf returns the request's bookkeeping; never nil inside a handler.
func requestOf(r *http.Request) *request {
	if rq, ok := r.Context().Value(requestKey{}).(*request); ok {
		return rq
	}
	return &request{id: auth.FromContext(r.Context())}
}

// wrap limits the client address's rate, authenticates the caller, applies
// the user's rate limit, the route's rule and the guards (a full disk, an
// audit log that cannot write when the server fails closed), runs the
// handler, and records the request in the audit log (every mutation and
// every refusal, repeated refusals folded into counts) and the metrics.
func (s *Server) wrap(rt route) http.Handler {
	pattern := rt.method + " " + rt.path
	action := actionOf(rt.method, rt.path)
	// Lists are the collection routes: no path parameter at all.
	list := rt.method == "GET" && !strings.Contains(rt.path, "{")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() { s.metrics.observeRequest(pattern, rec.status, time.Since(start)) }()
		rq := &request{reqID: requestID(r)}
		rec.Header().Set("X-Request-Id", rq.reqID)

		// The address first: a flood of bad tokens costs no more than
		// any other flood.
		id := auth.Anonymous
		err := s.rateLimitAddress(rec, r)
		if err == nil {
			id, err = s.authenticate(r)
		}
		rq.id = id
		if err == nil {
			err = s.rateLimit(rec, r, id)
		}
		if err == nil {
			rq.facts, err = s.facts(rt, r, id, list)
			rq.project = rq.facts.Project
			rq.projectSeen = rq.facts.ProjectExists && auth.Can(id, rq.project, rq.facts.MemberRole, auth.PermProjectRead)
		}
		if err == nil {
			err = auth.Authorize(id, rt.rule, rq.facts)
			if rt.notFound != nil && isNotFound(err) && rt.projectOf(r) != "" {
				err = s.asMissing(rt, r, id, list)
			}
		}
		if err == nil {
			err = s.admit(rt, action)
			if err != nil && rt.relief() {
				// Taking access away and freeing space go through.
				rq.restricted, err = err, nil
			}
		}
		if err != nil {
			s.writeError(rec, r, err)
			s.auditRequest(r, rt, action, rq, rec, api.AuditDenied)
			return
		}
		ctx := auth.WithIdentity(r.Context(), id)
		ctx = context.WithValue(ctx, requestKey{}, rq)
		if rt.relief() {
			ctx = store.UseReserve(ctx)
		}
		r = r.WithContext(ctx)
		record := func() {
			outcome := api.AuditSuccess
			if rec.status >= 400 {
				outcome = api.AuditFailure
			}
			if rq.outcome != "" {
				outcome = rq.outcome
			}
			s.auditRequest(r, rt, action, rq, rec, outcome)
		}
		if audited(rt, action) {
			// A console is recorded when it opens, not when it closes.
			rec.onUpgrade = record
		}
		rt.handler(rec, r)
		if audited(rt, action) && !rec.upgraded {
			record()
		}
	})
}

// facts gathers what the route's rule needs to decide.
func (s *Server) facts(rt route, r *http.Request, id auth.Identity, list bool) (auth.Facts, error) {
	var f auth.Facts
	switch rt.rule.Scope {
	case auth.ScopeProject:
		q := r.URL.Query()
		if v := q.Get("all-projects"); v != "" {
			if v != "true" && v != "false" {
				return f, api.Invalid("all-projects", "must be true or false, not %q", v)
			}
			if v == "true" {
				if !list {
					return f, api.Invalid("all-projects", "applies to lists only")
				}
				f.AllProjects = true
				return f, nil
			}
		}
		f.Project = r.PathValue("project")
		if f.Project == "" && rt.projectOf != nil {
			f.Project = rt.projectOf(r)
		}
		if f.Project == "" {
			f.Project = q.Get("project")
		}
		if f.Project == "" {
			f.Project = api.DefaultProject
		}
		if p, ok := s.projects.Get(f.Project); ok {
			f.ProjectExists = true
			if id.IsUser() {
				f.MemberRole = p.Spec.Members[id.Name]
			}
		}
	case auth.ScopeSelf:
		f.User = r.PathValue("user")
	case auth.ScopeHost:
		if rt.hostOf != nil && id.Kind == auth.KindHost {
			f.Host = rt.hostOf(r, id)
		}
	}
	return f, nil
}

// can tells whether the caller of r holds permission p in project; list
// handlers use it to keep what the caller may see.
func (s *Server) can(r *http.Request, project string, p auth.Permission) bool {
	id := auth.FromContext(r.Context())
	role := ""
	if pr, ok := s.projects.Get(project); ok && id.IsUser() {
		role = pr.Spec.Members[id.Name]
	} else if !ok {
		return false
	}
	return auth.Can(id, project, role, p)
}

// inProject tells whether obj, of the request's project, is visible to
// the request: in that project, or (for all-projects lists) in one the
// caller may read with p.
func (s *Server) inProject(r *http.Request, project string, p auth.Permission) bool {
	rq := requestOf(r)
	if rq.facts.AllProjects {
		return s.can(r, project, p)
	}
	return project == rq.project
}

// statusRecorder remembers the status a handler wrote. It passes Flush and
// Unwrap through so streaming and websocket hijacking keep working.
type statusRecorder struct {
	http.ResponseWriter
	status int
	// onUpgrade runs when a websocket is accepted (status 101).
	onUpgrade func()
	upgraded  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	if code == http.StatusSwitchingProtocols && r.onUpgrade != nil && !r.upgraded {
		r.upgraded = true
		r.onUpgrade()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// rateLimit refuses a request over its identity's rate: users by name,
// anonymous callers by address. Agents and local root are not limited.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var key string
	switch {
	case id.Kind == auth.KindHost, id.Kind == auth.KindServer:
		return nil
	case id.IsUser() && id.TokenID == "":
		return nil // local root on the unix socket
	case id.IsUser():
		key = "user:" + id.Name
	default:
		key = "ip:" + addressKey(r)
	}
	ok, wait := s.limiter.Load().Allow(key)
	if ok {
		return nil
	}
	writeRetryAfter(w, wait)
	return &api.Error{Code: api.CodeTooManyRequests, Message: fmt.Sprintf("rate limit exceeded; retry in %s", roundUp(wait))}
}

// jsonLineEncoder writes values as JSON lines, flushing each.
func jsonLineEncoder(w http.ResponseWriter) func(v any) error {
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	return func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
}
