package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestForeignObjectReadsAsMissing: a provider or an operation of a project
// the caller may not see answers exactly as one that does not exist, in
// whatever project the caller asks: its project is never named, and its
// existence not told.
func TestForeignObjectReadsAsMissing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := e.s.providers.Create(ctx, "vc-secret", &api.Provider{
		Meta: api.Meta{Name: "vc-secret", Project: "pb", UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.ProviderSpec{Type: api.ProviderLibvirt, URL: "test:///default"}}); err != nil {
		t.Fatal(err)
	}
	ops, err := e.super.WithProject("pb").ListAllOperations(ctx, api.ListOptions{})
	if err != nil || len(ops) == 0 {
		t.Fatalf("pb's operations: %v %v", ops, err)
	}
	foreignOp := ops[0].ID
	const missingOp = "0123456789abcdef"
	pairs := []struct{ method, foreign, missing string }{
		{"GET", "/v1/providers/vc-secret", "/v1/providers/vc-nothing"},
		{"GET", "/v1/providers/vc-secret/inventory", "/v1/providers/vc-nothing/inventory"},
		{"GET", "/v1/operations/" + foreignOp, "/v1/operations/" + missingOp},
		{"DELETE", "/v1/operations/" + foreignOp, "/v1/operations/" + missingOp},
	}
	for _, who := range []string{api.RoleViewer, api.RoleOperator, "nobody"} {
		for _, query := range []string{"", "?project=pa", "?project=no-such-project"} {
			for _, p := range pairs {
				fs, fb, _ := e.do(p.method, p.foreign+query, e.tokens[who], nil)
				ms, mb, _ := e.do(p.method, p.missing+query, e.tokens[who], nil)
				norm := strings.NewReplacer("vc-secret", "X", "vc-nothing", "X", foreignOp, "X", missingOp, "X")
				if fs != ms || norm.Replace(string(fb)) != norm.Replace(string(mb)) {
					t.Errorf("%s %s%s as %s: %d %s\n  but missing: %d %s", p.method, p.foreign, query, who, fs, fb, ms, mb)
				}
				if fs < 400 || strings.Contains(string(fb), `"pb"`) {
					t.Errorf("%s %s%s as %s: %d %s; want a refusal naming no project pb", p.method, p.foreign, query, who, fs, fb)
				}
			}
		}
	}
	// The superadmin and pb's own members still see them.
	if st, body, _ := e.do("GET", "/v1/providers/vc-secret", e.tokens["bob"], nil); st != http.StatusOK {
		t.Errorf("pb's admin reading pb's provider: %d %s", st, body)
	}
	if st, body, _ := e.do("GET", "/v1/operations/"+foreignOp, e.tokens["superadmin"], nil); st != http.StatusOK {
		t.Errorf("superadmin reading pb's operation: %d %s", st, body)
	}
}

// TestObjectRoutesHideForeignObjects: every route that finds its project
// from the object it names also says how a missing object answers, so a
// foreign one can answer the same.
func TestObjectRoutesHideForeignObjects(t *testing.T) {
	t.Parallel()
	for _, rt := range (&Server{}).routes() {
		if rt.projectOf != nil && rt.notFound == nil {
			t.Errorf("route %s %s finds its project from its object but has no notFound", rt.method, rt.path)
		}
	}
}
