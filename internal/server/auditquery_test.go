package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// metricValue reads one sample of /metrics as the superadmin.
func (e *env) metricValue(t *testing.T, name string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens["superadmin"])
	resp, err := e.super.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// auditList asks GET /v1/audit with query as who, and returns the
// records and the X-Audit-Searched-From header.
func (e *env) auditList(t *testing.T, who, query string) ([]api.AuditRecord, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/v1/audit?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	resp, err := e.super.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/audit?%s as %s: %d %s", query, who, resp.StatusCode, b)
	}
	var l api.List[api.AuditRecord]
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l.Items, resp.Header.Get(auditSearchedFrom)
}

// A caller who may audit no project reads nothing of the audit log when
// it asks across all projects; one who may audit some reads only their
// records; every query reads at most its byte budget of the newest
// segments and says from when. (Any user made the server read and decode
// the whole log per request.)
func TestAuditQueryBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{AuditQueryMaxBytes: 64 << 10, Audit: audit.Options{SegmentBytes: 16 << 10}})
	ctx := context.Background()
	// Records enough for many segments, in projects pa and pb.
	for range 300 {
		for _, p := range []string{"pa", "pb"} {
			if _, err := e.super.WithProject(p).SetLease(ctx, "vm1", time.Hour); err != nil {
				t.Fatalf("setting a lease: %v", err)
			}
		}
	}
	if st := e.s.audit.Status(); st.Bytes < 256<<10 {
		t.Fatalf("audit log of %d bytes, want several times the budget", st.Bytes)
	}

	before := e.metricValue(t, "polyvisor_audit_query_bytes_total")
	recs, _ := e.auditList(t, "nobody", "all-projects=true")
	if len(recs) != 0 {
		t.Errorf("nobody across projects sees %d records", len(recs))
	}
	if after := e.metricValue(t, "polyvisor_audit_query_bytes_total"); after != before {
		t.Errorf("a query by a caller who may audit no project read %v bytes of the audit log", after-before)
	}

	before = e.metricValue(t, "polyvisor_audit_query_bytes_total")
	recs, from := e.auditList(t, api.RoleAdmin, "all-projects=true&limit=10000")
	read := e.metricValue(t, "polyvisor_audit_query_bytes_total") - before
	if read > 64<<10+16<<10 {
		t.Errorf("one query read %v bytes, past its budget of 64 KiB", read)
	}
	if from == "" {
		t.Fatalf("an answer from part of the log does not say from when")
	}
	since, err := time.Parse(time.RFC3339Nano, from)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatalf("pa's admin across projects sees nothing")
	}
	for _, r := range recs {
		if r.Project != "pa" {
			t.Errorf("pa's admin across projects sees a record of project %q: %+v", r.Project, r)
			break
		}
		if r.Time.Before(since.Add(-time.Minute)) {
			t.Errorf("a record of %v, before the %s the answer says it read from", r.Time, from)
			break
		}
	}
	// What the budget left out is reached with until=.
	older, _ := e.auditList(t, api.RoleAdmin, fmt.Sprintf("project=pa&until=%s&limit=10", since.Format(time.RFC3339Nano)))
	if len(older) == 0 {
		t.Errorf("no record before %s with until=", from)
	}
}
