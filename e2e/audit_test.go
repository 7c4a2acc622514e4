package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// mutation is one state-changing request the suite made.
type mutation struct {
	method, path, reqID string
	status              int
}

// auditRecorder notes every mutation a client makes, so that the audit
// log can be held against it when the server stops.
type auditRecorder struct {
	mu   sync.Mutex
	muts []mutation
	next http.RoundTripper
}

func (a *auditRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(req)
	if err != nil || req.Method == http.MethodGet || strings.HasPrefix(req.URL.Path, "/v1/agent/") {
		return resp, err
	}
	a.mu.Lock()
	a.muts = append(a.muts, mutation{req.Method, req.URL.Path, resp.Header.Get("X-Request-Id"), resp.StatusCode})
	a.mu.Unlock()
	return resp, err
}

func (a *auditRecorder) wrap(next http.RoundTripper) http.RoundTripper {
	a.next = next
	return a
}

// checkAudit holds the audit log against the mutations the suite's
// clients made: each has exactly one record, by local root, with the
// outcome its answer had.
func (s *serverProc) checkAudit(t *testing.T) {
	t.Helper()
	s.rec.mu.Lock()
	muts := append([]mutation(nil), s.rec.muts...)
	s.rec.mu.Unlock()
	if len(muts) == 0 {
		return
	}
	var buf bytes.Buffer
	if err := s.c.ExportAudit(context.Background(), api.AuditQuery{}, &buf); err != nil {
		t.Errorf("exporting the audit log: %v", err)
		return
	}
	byID := map[string][]api.AuditRecord{}
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var r api.AuditRecord
		if len(line) == 0 {
			continue
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Errorf("audit line %q: %v", line, err)
			continue
		}
		byID[r.RequestID] = append(byID[r.RequestID], r)
	}
	for _, m := range muts {
		recs := byID[m.reqID]
		if len(recs) != 1 {
			t.Errorf("%s %s (request %s): %d audit records, want 1", m.method, m.path, m.reqID, len(recs))
			continue
		}
		r := recs[0]
		want := api.AuditSuccess
		if m.status >= 400 {
			want = api.AuditFailure
		}
		if m.path == "/v1/login" && m.status >= 400 {
			want = api.AuditDenied
		}
		if r.Outcome != want || r.Status != m.status {
			t.Errorf("%s %s: audit outcome %s (%d), want %s (%d)", m.method, m.path, r.Outcome, r.Status, want, m.status)
		}
		if r.Actor.Kind != "user" || !strings.HasPrefix(r.Actor.Name, "uid:") || r.Method != m.method || r.Path != m.path {
			t.Errorf("%s %s: audit record %+v does not name local root and the request", m.method, m.path, r)
		}
	}
	t.Logf("%d mutations, each with its one audit record", len(muts))
}
