package server

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestOpenAPIMatchesRoutes holds the OpenAPI document against the route
// table: every route is documented and every documented path is routed.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("decoding the OpenAPI document: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	routed := map[string]bool{}
	for _, rt := range (&Server{}).routes() {
		key := rt.method + " " + rt.path
		if routed[key] {
			t.Errorf("route %s is declared twice", key)
		}
		routed[key] = true
		if rt.rule.Scope == 0 {
			t.Errorf("route %s has no access rule", key)
		}
	}
	var missing, extra []string
	for k := range routed {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !routed[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, k := range missing {
		t.Errorf("route %s is not in the OpenAPI document", k)
	}
	for _, k := range extra {
		t.Errorf("OpenAPI path %s is not routed", k)
	}
	if len(routed) < 25 {
		t.Errorf("only %d routes found; the table looks truncated", len(routed))
	}
}
