package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// flood sends n requests of method to path (the same each time) with
// token ("" for none), from 4 workers, and returns the statuses seen.
func (e *env) flood(n int, method, path, token string) map[int]int {
	e.t.Helper()
	hc := e.super.HTTPClient()
	var mu sync.Mutex
	seen := map[int]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				req, _ := http.NewRequest(method, e.url+path, nil)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := hc.Do(req)
				if err != nil {
					e.t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				seen[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return seen
}

// A flood of requests with 60 KB paths, anonymous (refused) and by a
// viewer (404), costs the audit log a few KiB: every field is cut to its
// bound and failures fold like refusals. With a small log that refuses
// records when full and a server failing closed, changes still go
// through afterwards. (Each such record took 120 KB, failures were never
// folded: 300 of them filled a 16 MiB log and froze every change, token
// revocation included.)
func TestAuditFloodOfLongPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{AuditFailClosed: true,
		Audit: audit.Options{MaxBytes: 4 << 20, SegmentBytes: 256 << 10, WhenFull: api.AuditWhenFullRefuse}})
	long := strings.Repeat("a", 60000)
	before := e.s.audit.Status().Bytes
	anon := e.flood(250, "DELETE", "/v1/vms/"+long+"?project=pa", "")
	viewer := e.flood(300, "DELETE", "/v1/tokens/"+long, e.tokens[api.RoleViewer])
	if anon[http.StatusUnauthorized] != 250 || viewer[http.StatusNotFound] != 300 {
		t.Fatalf("answers: anonymous %v, viewer %v; want 401s and 404s", anon, viewer)
	}
	e.s.auditFold.Close() // the counts are written
	grew := e.s.audit.Status().Bytes - before
	if grew > 64<<10 {
		t.Errorf("550 requests with long paths grew the audit log by %d bytes, want a few KiB", grew)
	}
	if _, err := e.super.CreateProject(context.Background(), api.ProjectCreate{Name: "after-flood"}); err != nil {
		t.Errorf("a change after the flood: %v", err)
	}
	var counted int64
	for _, r := range auditRecords(t, e.s) {
		if !strings.HasPrefix(r.Path, "/v1/vms/aaa") && !strings.HasPrefix(r.Path, "/v1/tokens/aaa") {
			continue
		}
		counted += max(r.Count, 1)
		if len(r.Path) > audit.MaxPathBytes || len(r.Resource.Name) > audit.MaxNameBytes || !strings.Contains(r.Path, "…[cut: ") {
			t.Errorf("record of a long path: path %d bytes, name %d bytes, want them cut with a marker", len(r.Path), len(r.Resource.Name))
		}
		if strings.HasPrefix(r.Path, "/v1/vms/") && (r.Project != "" || r.Resource.Project != "") {
			t.Errorf("an anonymous request naming project pa is recorded in project %q/%q", r.Project, r.Resource.Project)
		}
	}
	if counted != 550 {
		t.Errorf("the audit log accounts for %d requests of 550", counted)
	}
}

// A request in a project its caller may not see is recorded in no
// project: neither anonymous callers nor another project's users can
// write into a project's audit log, which its admins read. Refusals
// within the caller's own project stay in it.
func TestAuditNotInProjectsTheCallerCannotSee(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	for _, who := range []string{"", e.tokens["bob"], e.tokens["nobody"]} {
		if status, _, _ := e.do("DELETE", "/v1/vms/vm1?project=pa", who, nil); status != http.StatusUnauthorized && status != http.StatusNotFound {
			t.Fatalf("DELETE vm1 in pa by an outsider: %d", status)
		}
	}
	if status, _, _ := e.do("DELETE", "/v1/vms/vm1?project=pa", e.tokens[api.RoleViewer], nil); status != http.StatusForbidden {
		t.Fatalf("DELETE vm1 in pa as its viewer: %d, want 403", status)
	}
	recs, err := e.as(api.RoleAdmin, "pa").ListAudit(ctx, api.AuditQuery{Project: "pa", Action: "vm.delete"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Actor.Name != userOf(api.RoleViewer) {
		var who []string
		for _, r := range recs {
			who = append(who, r.Actor.Kind+" "+r.Actor.Name)
		}
		t.Errorf("pa's audit log shows vm.delete by %v, want its viewer's refusal only", who)
	}
	// The superadmin sees them all, saying which project they named.
	all, err := e.super.ListAudit(ctx, api.AuditQuery{Action: "vm.delete"})
	if err != nil {
		t.Fatal(err)
	}
	named := 0
	for _, r := range all {
		if r.Project == "" && strings.Contains(r.Message, `asked in project "pa"`) {
			named++
		}
	}
	if named != 3 {
		t.Errorf("%d records outside projects naming pa, want 3 (anonymous, bob, nobody)", named)
	}
}

// One caller cannot escape folding by varying what it asks: a viewer's
// failures on many routes, objects and projects write no more than its
// budget of records one by one in a window (plus a count per key), and
// every one of them is accounted for. (Keys were per route and status
// only: ~25 routes times their answers let one caller write hundreds of
// records a minute.)
func TestAuditFoldsPerCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{AuditFold: audit.AggregateOptions{Window: time.Hour}})
	viewer := e.tokens[api.RoleViewer]
	var paths []string
	for _, p := range []string{"/v1/vms/x", "/v1/images/x", "/v1/operations/x", "/v1/providers/x", "/v1/vms/x/snapshots/s",
		"/v1/tokens/x", "/v1/users/bob", "/v1/projects/pa/members/bob", "/v1/hosts/h1", "/v1/hosts/x/revoke"} {
		for _, q := range []string{"?project=pa", "?project=pb", "?project=default", "?project=nope"} {
			paths = append(paths, p+q)
		}
	}
	before := len(auditRecords(t, e.s))
	sent := 0
	for range 5 {
		for _, p := range paths {
			method := "DELETE"
			if strings.HasSuffix(strings.Split(p, "?")[0], "/revoke") {
				method = "POST"
			}
			if status, _, _ := e.do(method, p, viewer, nil); status < 400 {
				t.Fatalf("%s %s as a viewer: %d", method, p, status)
			}
			sent++
		}
	}
	written := len(auditRecords(t, e.s)) - before
	if written > audit.DefaultAggregateCallerWrites {
		t.Errorf("%d requests on %d routes and projects wrote %d records one by one, want at most %d", sent, len(paths), written, audit.DefaultAggregateCallerWrites)
	}
	e.s.auditFold.Close()
	var counted int64
	recs := auditRecords(t, e.s)
	for _, r := range recs[before:] {
		if r.Actor.Name == userOf(api.RoleViewer) || r.Actor.Kind == "many" {
			counted += max(r.Count, 1)
		}
	}
	if counted != int64(sent) {
		t.Errorf("the audit log accounts for %d of the viewer's %d requests", counted, sent)
	}
}
