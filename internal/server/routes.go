package server

import (
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// route is one API endpoint: its pattern, the access policy checked before
// the handler runs, and the handler. Every route must name a policy.
type route struct {
	method  string
	path    string
	policy  auth.Policy
	handler http.HandlerFunc
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
	return rs
}

func (s *Server) metaRoutes() []route {
	return []route{
		{"GET", "/healthz", auth.Public, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("ok\n"))
		}},
		{"GET", "/metrics", auth.Public, s.metrics.serve},
		{"GET", "/v1/openapi.json", auth.Public, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(api.OpenAPI)
		}},
		{"GET", "/v1/events", auth.Admin, s.streamEvents},
	}
}

// Handler returns the API's HTTP handler: the route table on a ServeMux,
// wrapped in authentication, the per-route policy and metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.method+" "+rt.path, s.wrap(rt))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// wrap authenticates the caller, applies the route's policy and records
// the request in the metrics.
func (s *Server) wrap(rt route) http.Handler {
	pattern := rt.method + " " + rt.path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() { s.metrics.observeRequest(pattern, rec.status, time.Since(start)) }()
		id, err := s.authenticate(r)
		if err != nil {
			s.writeError(rec, r, err)
			return
		}
		r = r.WithContext(auth.WithIdentity(r.Context(), id))
		if err := rt.policy(id, r); err != nil {
			s.writeError(rec, r, err)
			return
		}
		rt.handler(rec, r)
	})
}

// statusRecorder remembers the status a handler wrote. It passes Flush and
// Unwrap through so streaming and websocket hijacking keep working.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
