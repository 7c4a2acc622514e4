package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// collections are the path segments that name a kind of object; an
// action is "<kind>.<verb>", the kind being the last collection in the
// route's path.
var collections = map[string]string{
	"vms": "vm", "images": "image", "operations": "operation", "providers": "provider",
	"projects": "project", "members": "member", "users": "user", "tokens": "token",
	"snapshots": "snapshot", "hosts": "host", "join-tokens": "join-token", "streams": "stream",
	"networks": "network", "subnets": "subnet", "ports": "port", "security-groups": "security-group",
	"floating-ips": "floating-ip", "rules": "rule", "nics": "nic",
	"servers": "server",
	"plans":   "plan",
}

var methodVerbs = map[string]string{"GET": "read", "POST": "create", "PUT": "set", "PATCH": "update", "DELETE": "delete"}

// actionOf names what a route does, for the audit log: "POST /v1/vms" is
// vm.create, "POST /v1/vms/{name}/start" vm.start, "DELETE
// /v1/vms/{name}/snapshots/{snapshot}" snapshot.delete.
func actionOf(method, path string) string {
	segs := strings.Split(strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/"), "/")
	kind, kindAt := "", -1
	for i, s := range segs {
		if k, ok := collections[s]; ok {
			kind, kindAt = k, i
		}
	}
	if kind == "" {
		// A route of its own: /v1/login, /v1/agent/register, /v1/audit.
		switch segs[len(segs)-1] {
		case "login", "logout":
			return "auth." + segs[len(segs)-1]
		}
		return strings.Join(segs, ".") + "." + methodVerbs[method]
	}
	var verb []string
	for _, s := range segs[kindAt+1:] {
		if !strings.HasPrefix(s, "{") {
			verb = append(verb, s)
		}
	}
	if len(verb) == 0 {
		return kind + "." + methodVerbs[method]
	}
	return kind + "." + strings.Join(verb, ".")
}

// audited tells whether a request allowed through is recorded: every
// mutation by a user, and every console opened. An agent's own reports
// about its host and VMs are host traffic, not mutations anyone asked for;
// they are recorded only when refused.
func audited(rt route, action string) bool {
	if rt.rule.Scope == auth.ScopeHost || rt.rule.Scope == auth.ScopeAnyHost || rt.rule.Scope == auth.ScopePeer {
		return false
	}
	if rt.method != "GET" {
		return true
	}
	return action == "vm.console" || action == "vm.console.ticket"
}

// requestID returns the request's id: the client's X-Request-Id when it is
// sane, a new one otherwise.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= 64 && isTokenChars(v) {
		return v
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func isTokenChars(s string) bool {
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// actorOf is how an identity appears in the audit log.
func actorOf(id auth.Identity) api.AuditActor {
	if !id.Authenticated() {
		return api.AuditActor{Kind: auth.KindAnonymous}
	}
	return api.AuditActor{Kind: id.Kind, Name: id.Name, Token: id.TokenID}
}

// auditRequest appends the record of one request. A request in a project
// its caller may not see (an anonymous one, or one naming another tenant's
// project) is recorded outside any project, so that it shows in no
// project's audit log: only superadmins see it. Refusals and failures fold
// by client address, caller, route, status and project; the success of a
// route that takes access away or frees space is kept through an audit
// outage (see appendAuditKept).
func (s *Server) auditRequest(r *http.Request, rt route, action string, rq *request, rec *statusRecorder, outcome string) {
	ar := &api.AuditRecord{
		Actor: actorOf(rq.id), Remote: r.RemoteAddr, RequestID: rq.reqID,
		Method: r.Method, Path: r.URL.Path, Action: action, Project: rq.project,
		Resource: rq.resource, OperationID: rq.operationID, Outcome: outcome, Status: rec.status,
		Message: rq.message,
	}
	if rq.actor != nil {
		ar.Actor = *rq.actor
	}
	if ar.Remote == "" || ar.Remote == "@" {
		ar.Remote = "unix"
	} else if host, _, err := net.SplitHostPort(ar.Remote); err == nil {
		ar.Remote = host
	}
	if ar.OperationID == "" {
		if loc := rec.Header().Get("Location"); strings.HasPrefix(loc, "/v1/operations/") {
			ar.OperationID = strings.TrimPrefix(loc, "/v1/operations/")
		}
	}
	if ar.Resource.Name == "" && ar.OperationID != "" {
		if op, ok := s.ops.Get(ar.OperationID); ok {
			ar.Resource = op.Target
		}
	}
	if ar.Resource.Name == "" {
		ar.Resource = resourceOf(r, action, rq.project)
	}
	seen := rq.projectSeen
	if rq.project != rq.facts.Project {
		// The handler named the project (a superadmin route acting in one).
		seen = s.projectVisible(rq.id, rq.project)
	}
	if rq.project != "" && !seen {
		ar.Project, ar.Resource.Project = "", ""
		if ar.Message != "" {
			ar.Message += "; "
		}
		ar.Message += fmt.Sprintf("asked in project %q, which the caller may not see", audit.Truncate(rq.project, audit.MaxNameBytes))
	}
	if ar.Project == "" {
		ar.Project = ar.Resource.Project
	}
	switch {
	case outcome != api.AuditSuccess:
		caller := foldCaller(r, rq.id)
		s.appendAuditFolded(r.Context(), caller, caller+"|"+rt.method+" "+rt.path+"|"+strconv.Itoa(rec.status)+"|"+ar.Project, ar)
	case rt.relief():
		s.appendAuditKept(r.Context(), ar)
	default:
		s.appendAudit(r.Context(), ar)
	}
}

// projectVisible tells whether id may see project at all.
func (s *Server) projectVisible(id auth.Identity, project string) bool {
	if id.IsSuperadmin() {
		return true
	}
	p, ok := s.projects.Get(project)
	return ok && id.IsUser() && auth.Can(id, project, p.Spec.Members[id.Name], auth.PermProjectRead)
}

// Refusals and failures fold together in the audit log when they are of
// one caller, route, status and project. The caller is a client address
// and an identity (the authenticated one: a name typed at login does not
// count): only what the caller cannot vary at will is in it, the address
// counted as addressOf does (an IPv6 /64), the project one the caller may
// see. What one caller writes one by one is bounded across its keys too
// (audit.AggregateOptions.CallerKeys and CallerWrites).
func foldCaller(r *http.Request, id auth.Identity) string {
	actor := id.Kind
	if id.Authenticated() {
		actor += ":" + id.Name + ":" + id.TokenID
	}
	return addressKey(r) + "|" + actor
}

// resourceOf names the object a request's path points at.
func resourceOf(r *http.Request, action, project string) api.Ref {
	kind, _, _ := strings.Cut(action, ".")
	for _, p := range []string{"snapshot", "user", "name", "id", "project"} {
		if v := r.PathValue(p); v != "" {
			if p == "project" {
				return api.Ref{Kind: "project", Name: v}
			}
			return api.Ref{Kind: kind, Name: v, Project: project}
		}
	}
	return api.Ref{}
}

// appendAudit writes a record; failing to is logged loudly but does not
// fail the request, which has already happened. (When the server fails
// closed, the next audited request is refused while the log cannot write.)
func (s *Server) appendAudit(ctx context.Context, ar *api.AuditRecord) {
	s.appendAuditFolded(ctx, "", "", ar)
}

// appendAuditKept writes the record of a request that took access away or
// freed space. Those are carried out even while the audit log cannot write
// (see admit): their record is then kept in memory and written once the
// log can, after the account of the outage, and is written to the
// server's log at once, so that it is not lost with the process either.
func (s *Server) appendAuditKept(ctx context.Context, ar *api.AuditRecord) {
	if s.audit == nil {
		return
	}
	err := s.audit.AppendKept(context.WithoutCancel(ctx), ar)
	if err == nil {
		return
	}
	msg := "audit record not written, and lost: " + ar.Action
	if errors.Is(err, audit.ErrKept) {
		msg = "audit record kept in memory until the audit log can write: " + ar.Action
	}
	s.log.Error(msg, "err", err, "actor", ar.Actor.Kind+" "+ar.Actor.Name, "token", ar.Actor.Token,
		"remote", ar.Remote, "requestId", ar.RequestID, "method", ar.Method, "path", audit.Truncate(ar.Path, audit.MaxPathBytes),
		"project", ar.Project, "resource", ar.Resource.Kind+"/"+audit.Truncate(ar.Resource.Name, audit.MaxNameBytes),
		"status", ar.Status, "operation", ar.OperationID)
}

// appendAuditFolded writes a record of caller, or counts it with those of
// the same key ("" never folds).
func (s *Server) appendAuditFolded(ctx context.Context, caller, key string, ar *api.AuditRecord) {
	if s.audit == nil {
		return
	}
	err := s.auditFold.AppendAs(context.WithoutCancel(ctx), caller, key, ar)
	if err == nil {
		return
	}
	// The log raises its own alarm; say it here once every few seconds,
	// not once per request of a flood.
	g := &s.guards
	now := time.Now().UnixNano()
	last := g.auditErrAt.Load()
	if now-last < int64(10*time.Second) || !g.auditErrAt.CompareAndSwap(last, now) {
		g.auditErrSkip.Add(1)
		return
	}
	s.log.Error("writing audit record", "action", ar.Action, "err", err, "alsoFailedSince", g.auditErrSkip.Swap(0))
}

// auditSystem records something Polyvisor did on its own (a lease's stop
// or delete).
func (s *Server) auditSystem(ctx context.Context, action string, target api.Ref, opID, outcome, msg string) {
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: api.AuditActor{Kind: auth.KindSystem, Name: "lease"}, Action: action, Project: target.Project,
		Resource: target, OperationID: opID, Outcome: outcome, Message: msg,
	})
}

func (s *Server) auditRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/audit", rule: auth.In(auth.PermAuditRead), handler: s.queryAudit},
		{method: "GET", path: "/v1/audit/status", rule: auth.Superadmin, handler: s.auditStatus},
		{method: "GET", path: "/v1/audit/verify", rule: auth.Superadmin, handler: s.verifyAudit},
		{method: "GET", path: "/v1/alarms", rule: auth.Superadmin, handler: s.listAlarms},
	}
}

func (s *Server) auditStatus(w http.ResponseWriter, _ *http.Request) {
	st := s.audit.Status()
	st.FailClosed = s.cfg.AuditFailClosed
	st.Aggregated = s.auditFold.Folded()
	writeJSON(w, http.StatusOK, st)
}

// verifyAudit reads the whole log and checks its hash chain.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	v, err := s.audit.Verify(r.Context())
	if err != nil {
		s.writeError(w, r, fmt.Errorf("verifying the audit log: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// maxAuditList bounds one answer of GET /v1/audit.
const maxAuditList = 10000

// defaultAuditQueryBytes bounds the audit log one query reads, the newest
// segments first (Config.AuditQueryMaxBytes).
const defaultAuditQueryBytes = 64 << 20

// auditSearchedFrom is the header of an answer from part of the log only:
// the time from which it was read. Older records need since= and until=.
const auditSearchedFrom = "X-Audit-Searched-From"

// queryAudit answers GET /v1/audit. What it reads is bounded before it
// reads: only the records of the projects the caller may audit are decoded
// (none at all for a caller who may audit no project), and at most
// Config.AuditQueryMaxBytes of the newest segments are read, the answer
// saying from when (X-Audit-Searched-From). A superadmin's export reads
// the whole log.
func (s *Server) queryAudit(w http.ResponseWriter, r *http.Request) {
	q, export, err := parseAuditQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	opts := audit.QueryOptions{MaxScanBytes: s.cfg.AuditQueryMaxBytes}
	if export && rq.id.IsSuperadmin() {
		opts.MaxScanBytes = 0
	}
	switch {
	case !rq.facts.AllProjects:
		q.Project = rq.project
	case !rq.id.IsSuperadmin():
		opts.Projects = []string{}
		for _, p := range listAll(s.projects, nil) {
			if s.can(r, p.Name, auth.PermAuditRead) {
				opts.Projects = append(opts.Projects, p.Name)
			}
		}
	}
	if res := s.audit.Within(q, opts); !res.Complete {
		w.Header().Set(auditSearchedFrom, res.SearchedFrom.Format(time.RFC3339Nano))
	}
	if export {
		enc := jsonLineEncoder(w)
		started := false
		_, err = s.auditMerged(r.Context(), q, opts, func(missing []string) {
			started = true
			setAuditPartial(w.Header(), missing)
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}, func(ar *api.AuditRecord) bool {
			return enc(ar) == nil
		})
		switch {
		case err != nil && started:
			s.log.Warn("exporting the audit log", "err", err)
		case err != nil:
			s.writeError(w, r, fmt.Errorf("reading the audit log: %w", err))
		}
		return
	}
	out := api.List[api.AuditRecord]{Items: []api.AuditRecord{}}
	if q.Limit == 0 {
		q.Limit = 100
	}
	// Keep the newest limit records of all servers, in time order.
	limit := q.Limit
	missing, err := s.auditMerged(r.Context(), q, opts, func([]string) {}, func(ar *api.AuditRecord) bool {
		out.Items = append(out.Items, *ar)
		if len(out.Items) > 2*limit {
			out.Items = append(out.Items[:0], out.Items[len(out.Items)-limit:]...)
		}
		return true
	})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("reading the audit log: %w", err))
		return
	}
	if len(out.Items) > limit {
		out.Items = out.Items[len(out.Items)-limit:]
	}
	setAuditPartial(w.Header(), missing)
	writeJSON(w, http.StatusOK, out)
}

// parseAuditQuery reads GET /v1/audit's query. since= and until= take a
// time (RFC 3339) or a duration back from now ("1h").
func parseAuditQuery(r *http.Request) (api.AuditQuery, bool, error) {
	v := r.URL.Query()
	q := api.AuditQuery{Actor: v.Get("actor"), Resource: v.Get("resource"), Action: v.Get("action"), Outcome: v.Get("outcome")}
	var err error
	if q.Since, err = parseWhen("since", v.Get("since")); err != nil {
		return q, false, err
	}
	if q.Until, err = parseWhen("until", v.Get("until")); err != nil {
		return q, false, err
	}
	switch q.Outcome {
	case "", api.AuditSuccess, api.AuditFailure, api.AuditDenied:
	default:
		return q, false, api.Invalid("outcome", "must be success, failure or denied, not %q", q.Outcome)
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxAuditList {
			return q, false, api.Invalid("limit", "must be an integer from 1 to %d, not %q", maxAuditList, l)
		}
		q.Limit = n
	}
	export := false
	switch f := v.Get("format"); f {
	case "", "json":
	case "jsonl":
		export = true
	default:
		return q, false, api.Invalid("format", "must be json or jsonl, not %q", f)
	}
	return q, export, nil
}

func parseWhen(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, api.Invalid(field, "must be a positive duration or a time, not %q", v)
		}
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, api.Invalid(field, "must be a duration back from now (1h) or an RFC 3339 time, not %q", v)
	}
	return t, nil
}
