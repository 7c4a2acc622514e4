package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// Adding a member tells a project admin whether a user name exists (404
// for an unknown one; docs/SECURITY.md says why this stays). What bounds
// the probing is held here: a member below admin cannot try at all, and
// every try of an admin is in the project's own audit log, naming the
// user tried, for the project's other admins to read.
func TestMemberProbesAreAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	body, _ := json.Marshal(api.MemberSet{Role: api.RoleViewer})
	if status, _, _ := e.do("PUT", "/v1/projects/pa/members/ghost-1", e.tokens[api.RoleMember], body); status != http.StatusForbidden {
		t.Errorf("a member adding a member: %d, want 403", status)
	}
	for _, u := range []string{"ghost-1", "ghost-2"} {
		if status, _, _ := e.do("PUT", "/v1/projects/pa/members/"+u, e.tokens[api.RoleAdmin], body); status != http.StatusNotFound {
			t.Errorf("an admin adding unknown user %s: %d, want 404", u, status)
		}
	}
	recs, _ := e.auditList(t, api.RoleAdmin, "project=pa")
	tried := map[string]bool{}
	for _, r := range recs {
		if r.Method == "PUT" && r.Status == http.StatusNotFound && r.Actor.Name == userOf(api.RoleAdmin) {
			tried[r.Resource.Name] = true
		}
	}
	if !tried["ghost-1"] || !tried["ghost-2"] {
		t.Errorf("the project's audit log names the users tried %v, want ghost-1 and ghost-2", tried)
	}
}
