package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// policy is the access policy as this test states it, independently of the
// route table: for each route, who may call it. A route missing here fails
// the test, so no route can be added without saying who may use it.
//
// Values: "public"; "user" (any signed-in user); "account" (any signed-in
// user acting on its own account, with a token not narrowed); "superadmin";
// "self" (the user the path names, or a superadmin, with a token not
// narrowed); "host" (the agent of the host concerned); "anyhost";
// "migrationhost" (the agent of a running migration's source or target); or a
// project role (viewer, operator, member, admin): that role or above in the
// request's project; "metrics" (a superadmin or the metrics token); "peer"
// (another server, with its server token).
var policy = map[string]string{
	"GET /healthz":            "public",
	"GET /metrics":            "metrics",
	"GET /v1/openapi.json":    "public",
	"GET /v1/events":          "user",
	"GET /v1/version":         "user",
	"POST /v1/agent/register": "public",
	"POST /v1/login":          "public",
	"POST /v1/logout":         "user",
	"GET /v1/whoami":          "user",
	"GET /v1/roles":           "user",

	"GET /v1/hosts":                                 "user",
	"GET /v1/hosts/{name}":                          "user",
	"POST /v1/hosts/join-tokens":                    "superadmin",
	"POST /v1/hosts/{name}/cordon":                  "superadmin",
	"POST /v1/hosts/{name}/uncordon":                "superadmin",
	"POST /v1/hosts/{name}/revoke":                  "superadmin",
	"DELETE /v1/hosts/{name}":                       "superadmin",
	"PUT /v1/agent/hosts/{name}/status":             "host",
	"GET /v1/agent/hosts/{name}/watch":              "host",
	"PUT /v1/agent/vms/{project}/{name}/status":     "host",
	"POST /v1/agent/vms/{project}/{name}/removed":   "host",
	"GET /v1/agent/streams/{id}":                    "anyhost",
	"GET /v1/agent/images/{project}/{name}":         "host",
	"GET /v1/agent/images/{project}/{name}/content": "host",
	"POST /v1/hosts/{name}/drain":                   "superadmin",
	"PUT /v1/agent/migrations/{id}":                 "migrationhost",
	"GET /v1/agent/migrations/{id}":                 "migrationhost",

	"GET /v1/vms":                                     "viewer",
	"GET /v1/vms/{name}":                              "viewer",
	"GET /v1/vms/{name}/snapshots":                    "viewer",
	"GET /v1/vms/{name}/stats":                        "viewer",
	"POST /v1/vms/{name}/start":                       "operator",
	"POST /v1/vms/{name}/stop":                        "operator",
	"POST /v1/vms/{name}/restart":                     "operator",
	"POST /v1/vms/{name}/pause":                       "operator",
	"POST /v1/vms/{name}/resume":                      "operator",
	"GET /v1/vms/{name}/console":                      "operator",
	"GET /v1/vms/{name}/console/log":                  "operator",
	"GET /v1/vms/{name}/console/ticket":               "operator",
	"POST /v1/vms":                                    "member",
	"DELETE /v1/vms/{name}":                           "member",
	"POST /v1/vms/{name}/reconfigure":                 "member",
	"PUT /v1/vms/{name}/lease":                        "member",
	"PUT /v1/vms/{name}/ha":                           "member",
	"POST /v1/vms/{name}/snapshots":                   "member",
	"POST /v1/vms/{name}/snapshots/{snapshot}/revert": "member",
	"DELETE /v1/vms/{name}/snapshots/{snapshot}":      "member",
	"POST /v1/vms/{name}/migrate":                     "member",

	"GET /v1/images":                "viewer",
	"GET /v1/images/{name}":         "viewer",
	"GET /v1/images/{name}/content": "viewer",
	"POST /v1/images":               "member",
	"DELETE /v1/images/{name}":      "member",
	"PATCH /v1/images/{name}":       "superadmin",
	"GET /v1/image-settings":        "superadmin",
	"PUT /v1/image-settings":        "superadmin",

	"GET /v1/operations":         "viewer",
	"GET /v1/operations/{id}":    "viewer",
	"DELETE /v1/operations/{id}": "operator",

	"GET /v1/providers":                  "viewer",
	"GET /v1/providers/{name}":           "viewer",
	"GET /v1/providers/{name}/inventory": "viewer",
	"POST /v1/providers":                 "superadmin",
	"DELETE /v1/providers/{name}":        "superadmin",
	"POST /v1/providers/{name}/refresh":  "superadmin",

	"GET /v1/projects":                             "user",
	"POST /v1/projects":                            "superadmin",
	"GET /v1/projects/{project}":                   "viewer",
	"PATCH /v1/projects/{project}":                 "admin",
	"DELETE /v1/projects/{project}":                "superadmin",
	"GET /v1/projects/{project}/members":           "viewer",
	"PUT /v1/projects/{project}/members/{user}":    "admin",
	"DELETE /v1/projects/{project}/members/{user}": "admin",
	"GET /v1/projects/{project}/quota":             "viewer",
	"PUT /v1/projects/{project}/quota":             "superadmin",

	"GET /v1/users":                 "superadmin",
	"POST /v1/users":                "superadmin",
	"GET /v1/users/{user}":          "self",
	"PATCH /v1/users/{user}":        "superadmin",
	"DELETE /v1/users/{user}":       "superadmin",
	"PUT /v1/users/{user}/password": "self",

	"GET /v1/tokens":         "account",
	"POST /v1/tokens":        "account",
	"DELETE /v1/tokens/{id}": "user", // a narrowed token may revoke itself only

	"GET /v1/audit": "admin",
	// The audit log's state and verification, and alarms.
	"GET /v1/audit/status": "superadmin",
	"GET /v1/audit/verify": "superadmin",
	"GET /v1/alarms":       "superadmin",
	// Which server leads the controllers.
	"GET /v1/cluster": "superadmin",

	// Networks: viewers read, members change (bridged and external
	// networks are refused to them by the handler: superadmin's).
	"GET /v1/networks":                             "viewer",
	"GET /v1/networks/{name}":                      "viewer",
	"POST /v1/networks":                            "member",
	"DELETE /v1/networks/{name}":                   "member",
	"GET /v1/subnets":                              "viewer",
	"GET /v1/subnets/{name}":                       "viewer",
	"POST /v1/subnets":                             "member",
	"DELETE /v1/subnets/{name}":                    "member",
	"GET /v1/ports":                                "viewer",
	"GET /v1/ports/{name}":                         "viewer",
	"POST /v1/ports":                               "member",
	"PATCH /v1/ports/{name}":                       "member",
	"DELETE /v1/ports/{name}":                      "member",
	"GET /v1/security-groups":                      "viewer",
	"GET /v1/security-groups/{name}":               "viewer",
	"POST /v1/security-groups":                     "member",
	"PATCH /v1/security-groups/{name}":             "member",
	"DELETE /v1/security-groups/{name}":            "member",
	"POST /v1/security-groups/{name}/rules":        "member",
	"DELETE /v1/security-groups/{name}/rules/{id}": "member",
	"GET /v1/floating-ips":                         "viewer",
	"GET /v1/floating-ips/{name}":                  "viewer",
	"POST /v1/floating-ips":                        "member",
	"DELETE /v1/floating-ips/{name}":               "member",
	"POST /v1/floating-ips/{name}/associate":       "member",
	"POST /v1/floating-ips/{name}/disassociate":    "member",
	"POST /v1/vms/{name}/nics":                     "member",
	"DELETE /v1/vms/{name}/nics/{nic}":             "member",
	"PUT /v1/agent/hosts/{name}/ports":             "host",

	"GET /v1/pools":                                                  "user",
	"POST /v1/pools":                                                 "superadmin",
	"GET /v1/pools/{name}":                                           "user",
	"PATCH /v1/pools/{name}":                                         "superadmin",
	"DELETE /v1/pools/{name}":                                        "superadmin",
	"PUT /v1/agent/hosts/{name}/pools/{pool}":                        "host",
	"GET /v1/volumes":                                                "viewer",
	"POST /v1/volumes":                                               "member",
	"GET /v1/volumes/{name}":                                         "viewer",
	"DELETE /v1/volumes/{name}":                                      "member",
	"POST /v1/volumes/{name}/attach":                                 "member",
	"POST /v1/volumes/{name}/detach":                                 "member",
	"POST /v1/volumes/{name}/grow":                                   "member",
	"PUT /v1/volumes/{name}/limits":                                  "member",
	"POST /v1/volumes/{name}/snapshots":                              "member",
	"DELETE /v1/volumes/{name}/snapshots/{snapshot}":                 "member",
	"PUT /v1/agent/hosts/{name}/volumes/{project}/{volume}/status":   "host",
	"POST /v1/agent/hosts/{name}/volumes/{project}/{volume}/removed": "host",
	"GET /v1/migrations":                                             "viewer",
	"POST /v1/migrations":                                            "member",
	"GET /v1/migrations/{name}":                                      "viewer",
	"PUT /v1/migrations/{name}/files/{file}":                         "member",
	"POST /v1/migrations/{name}/start":                               "member",
	"POST /v1/migrations/{name}/cancel":                              "member",
	"DELETE /v1/migrations/{name}":                                   "member",
	// The servers of the control plane, and how one joins.
	"GET /v1/cluster/servers":           "superadmin",
	"DELETE /v1/cluster/servers/{name}": "superadmin",
	"POST /v1/cluster/join-tokens":      "superadmin",
	"POST /v1/cluster/join":             "public",
	"GET /v1/agent/servers":             "anyhost",
	// What the servers ask each other.
	"GET /v1/cluster/peer/audit":           "peer",
	"GET /v1/cluster/peer/images/{uid}":    "peer",
	"POST /v1/cluster/peer/streams/{host}": "peer",

	// Capacity plans: they show every host and every project's VMs.
	"POST /v1/plans/consolidate": "superadmin",
	"POST /v1/plans/what-if":     "superadmin",
	"POST /v1/plans/forecast":    "superadmin",
}

// callers are the identities the matrix tries: the env's users and hosts,
// tokens narrowed to viewer of project pa, and nobody at all.
var callers = []string{"anonymous", "h1", "h2", "metrics", "peer", "nobody", api.RoleViewer, api.RoleOperator, api.RoleMember, api.RoleAdmin, "superadmin",
	"narrowed-admin", "narrowed-member"}

// narrowed names the users whose tokens, narrowed to viewer of project pa,
// the matrix tries: the first superadmin (which has no password) and a
// member of pa.
var narrowed = map[string]string{"narrowed-admin": bootstrapUser, "narrowed-member": "r-member"}

// addNarrowedTokens makes the narrowed callers' tokens.
func addNarrowedTokens(t *testing.T, e *env) {
	for who, user := range narrowed {
		tok, err := e.super.CreateToken(context.Background(), api.TokenCreate{Name: who, User: user, Project: "pa", Role: api.RoleViewer})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[who] = tok.Secret
	}
}

func rank(role string) int { return slices.Index(api.Roles, role) + 1 }

// expect is the outcome the policy gives: "allow", "deny" (401/403) or
// "hide" (404: the project does not exist for the caller).
func expect(rule, who string, own bool) string {
	if rule == "public" {
		return "allow"
	}
	if who == "anonymous" {
		return "deny"
	}
	// The metrics token reads /metrics and nothing else.
	if rule == "metrics" {
		return map[bool]string{true: "allow", false: "deny"}[who == "superadmin" || who == "metrics"]
	}
	if who == "metrics" {
		return "deny"
	}
	// A server's token calls the routes the servers use among
	// themselves, and nothing else; nobody else calls those.
	if rule == "peer" {
		return map[bool]string{true: "allow", false: "deny"}[who == "peer"]
	}
	if who == "peer" {
		return "deny"
	}
	isHost := who == "h1" || who == "h2"
	_, isNarrowed := narrowed[who]
	switch rule {
	case "user":
		return map[bool]string{true: "deny", false: "allow"}[isHost]
	case "account":
		return map[bool]string{true: "deny", false: "allow"}[isHost || isNarrowed]
	case "superadmin":
		return map[bool]string{true: "allow", false: "deny"}[who == "superadmin"]
	case "self":
		if isNarrowed {
			return "deny" // even for its own user, even a superadmin
		}
		if who == "superadmin" || (!isHost && own) {
			return "allow"
		}
		return "deny"
	case "host":
		// h1 holds the VMs and images the paths name; h2 holds none. To
		// h2 a host's own path is refused, another's object absent.
		switch who {
		case "h1":
			return "allow"
		case "h2":
			return "deny-or-hide"
		}
		return "deny"
	case "anyhost":
		return map[bool]string{true: "allow", false: "deny"}[isHost]
	case "migrationhost":
		// The agent of a running migration's source or target; the
		// path names none, so no host has it.
		return map[bool]string{true: "deny-or-hide", false: "deny"}[isHost]
	}
	// A project role; a narrowed token is a viewer of pa.
	if isNarrowed {
		who = api.RoleViewer
	}
	switch {
	case isHost:
		return "deny"
	case who == "superadmin":
		return "allow"
	case !own || who == "nobody":
		return "hide"
	case rank(who) >= rank(rule):
		return "allow"
	}
	return "deny"
}

// requestFor builds the request a caller makes of a route, in its own
// project ("pa", where the role users hold their roles) or a foreign one
// ("pb"). Names of objects that do not exist are used wherever acting
// would change state, and bodies are not JSON, so that what is allowed
// fails in its handler (400, 404, 409) without changing anything.
func requestFor(method, path, who string, own bool) (string, []byte) {
	project := map[bool]string{true: "pa", false: "pb"}[own]
	self := userOf(who)
	if u, ok := narrowed[who]; ok {
		self = u
	}
	if !own {
		self = "bob"
	}
	if strings.Contains(path, "/members/") {
		self = "ghost" // never take a caller's own membership away
	}
	r := strings.NewReplacer(
		"{project}", project, "{user}", self, "{snapshot}", "s1", "{id}", "ghost", "{nic}", "0", "{uid}", "ghost", "{host}", "ghost")
	p := r.Replace(path)
	switch {
	case strings.HasPrefix(path, "/v1/agent/hosts/"):
		p = strings.Replace(p, "{name}", "h1", 1)
	case strings.HasPrefix(path, "/v1/agent/vms/"):
		p = strings.Replace(strings.Replace(path, "{project}", "pa", 1), "{name}", "vm1", 1)
	case strings.HasPrefix(path, "/v1/agent/images/"):
		p = strings.Replace(strings.Replace(path, "{project}", "pa", 1), "{name}", "img", 1)
	case strings.HasPrefix(path, "/v1/hosts/") && method != http.MethodGet:
		p = strings.Replace(p, "{name}", "ghost", 1) // never take h1 out of service
	case strings.HasPrefix(path, "/v1/hosts/"):
		p = strings.Replace(p, "{name}", "h1", 1)
	default:
		p = strings.Replace(p, "{name}", "ghost", 1)
	}
	if !strings.Contains(path, "{project}") && !strings.Contains(p, "?") {
		p += "?project=" + project
	}
	var body []byte
	if method != http.MethodGet && method != http.MethodDelete {
		body = []byte("not json")
	}
	return p, body
}

// outcomeOf classifies an answer.
func outcomeOf(status int, body []byte) string {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "deny"
	case http.StatusNotFound:
		var eb api.ErrorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != nil &&
			(strings.HasPrefix(eb.Error.Message, `project "`) || eb.Error.Message == "not found on this host") {
			return "hide"
		}
	}
	return "allow"
}

// TestAuthorizationMatrix tries every route of the OpenAPI document as
// every kind of caller, in its own project and in a foreign one, and holds
// the answers against the policy above. It also checks that every refusal
// left exactly one denied record in the audit log.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	// Every refusal is to be seen one by one: one caller's budget of
	// records written one by one is raised past the matrix's refusals
	// (TestAuditFoldsPerCaller holds the budget).
	e := newEnv(t, Config{AuditFold: audit.AggregateOptions{CallerKeys: 10000, CallerWrites: 100000}})
	addNarrowedTokens(t, e)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for path, item := range doc.Paths {
		for m := range item {
			switch m {
			case "get", "put", "post", "delete", "patch":
				routes = append(routes, strings.ToUpper(m)+" "+path)
			}
		}
	}
	for _, rt := range e.s.routes() {
		if key := rt.method + " " + rt.path; !slices.Contains(routes, key) {
			routes = append(routes, key)
		}
	}
	slices.Sort(routes)
	type denial struct{ reqID, what string }
	var denied []denial
	for _, key := range routes {
		rule, ok := policy[key]
		if !ok {
			t.Errorf("route %s has no entry in the test's policy: say who may call it", key)
			continue
		}
		method, path, _ := strings.Cut(key, " ")
		for _, who := range callers {
			for _, own := range []bool{true, false} {
				want := expect(rule, who, own)
				p, body := requestFor(method, path, who, own)
				status, resp, reqID := e.do(method, p, e.tokens[who], body)
				got := outcomeOf(status, resp)
				if want == "deny-or-hide" && (got == "deny" || got == "hide") {
					want = got
				}
				if got != want {
					t.Errorf("%s %s as %s: %s (%d %s), want %s", method, p, who, got, status, strings.TrimSpace(string(resp)), want)
				}
				if got != "allow" {
					denied = append(denied, denial{reqID, fmt.Sprintf("%s %s as %s", method, p, who)})
				}
			}
		}
	}
	for k := range policy {
		if !slices.Contains(routes, k) {
			t.Errorf("the test's policy names %s, which is not a route", k)
		}
	}
	// Every refusal is in the audit log, once, as denied.
	count := map[string]int{}
	if err := e.s.audit.Query(context.Background(), api.AuditQuery{Outcome: api.AuditDenied}, func(r *api.AuditRecord) bool {
		count[r.RequestID]++
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range denied {
		if count[d.reqID] != 1 {
			t.Errorf("%s: %d denied audit records for request %s, want 1", d.what, count[d.reqID], d.reqID)
		}
	}
	t.Logf("%d routes, %d requests refused", len(routes), len(denied))
}

// TestAllProjectsOnlyOnLists: ?all-projects=true widens only collection
// lists (filtered by the caller's roles); on any other project route it is
// refused, so it cannot open a project the caller has no role in.
func TestAllProjectsOnlyOnLists(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	for _, rt := range e.s.routes() {
		if rt.rule.Scope != auth.ScopeProject || rt.method != http.MethodGet {
			continue
		}
		p, _ := requestFor(rt.method, rt.path, "nobody", false)
		p = strings.Replace(p, "?project=pb", "", 1)
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		status, body, _ := e.do(rt.method, p+sep+"all-projects=true", e.tokens["nobody"], nil)
		isList := !strings.Contains(rt.path, "{")
		switch {
		case isList && status != http.StatusOK:
			t.Errorf("%s as nobody across projects: %d %s, want 200 (an empty list)", p, status, body)
		case isList && strings.Contains(string(body), `"pb"`):
			t.Errorf("%s as nobody across projects shows project pb: %s", p, body)
		case !isList && status != http.StatusBadRequest:
			t.Errorf("%s?all-projects=true as nobody: %d %s, want 400", p, status, body)
		}
	}
}
