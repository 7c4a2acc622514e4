package v2v

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// recordServer stands in for the migration routes a Runner uses: it makes
// the record, takes reports (refusing, as the server does, errors over
// api.MaxMigrationErrorBytes) and answers 409 to every report once
// refuse is set.
type recordServer struct {
	mu      sync.Mutex
	rec     api.VMMigration
	reports []api.VMMigrationStatus
	refuse  bool // every report answers 409, as for an ended record
	tooLong int  // reports refused for an error over the bound
}

func (f *recordServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: code, Message: msg}})
	}
	answer := func(status int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(f.rec)
	}
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/migrations/"):
		fail(http.StatusNotFound, api.CodeNotFound, "migration not found")
	case r.Method == http.MethodPost && r.URL.Path == "/v1/migrations":
		var req api.VMMigrationCreate
		json.NewDecoder(r.Body).Decode(&req)
		f.rec = api.VMMigration{Meta: api.Meta{Name: req.Name}, Spec: api.VMMigrationSpec{VMs: req.VMs}, Status: api.VMMigrationStatus{State: api.VMMigrationPending}}
		answer(http.StatusCreated)
	case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/status"):
		var st api.VMMigrationStatus
		json.NewDecoder(r.Body).Decode(&st)
		f.reports = append(f.reports, st)
		if f.refuse {
			fail(http.StatusConflict, api.CodeConflict, "migration has cancelled")
			return
		}
		for _, v := range append([]api.VMMigrationVMStatus{{Error: st.Error}}, st.VMs...) {
			if len(v.Error) > api.MaxMigrationErrorBytes {
				f.tooLong++
				fail(http.StatusBadRequest, api.CodeInvalid, "error is too long")
				return
			}
		}
		f.rec.Status = st
		answer(http.StatusOK)
	default:
		fail(http.StatusNotFound, api.CodeNotFound, "no route")
	}
}

// stallStream is a stream that yields nothing until its reader's context
// ends; open, if set, fails its Open instead.
type stallStream struct{ open error }

func (s stallStream) Size() int64 { return 1 << 20 }

func (s stallStream) Open(ctx context.Context, _ int64) (io.ReadCloser, error) {
	if s.open != nil {
		return nil, s.open
	}
	return io.NopCloser(readerFunc(func([]byte) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})), nil
}

func runAgainst(t *testing.T, f *recordServer, st Stream) (*api.VMMigration, error) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{URL: srv.URL, Token: "t", Project: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	plan := Plan{Version: PlanVersion, Source: "libvirt", Host: "h", VMs: []VMPlan{PlanVM(hw, Options{Host: "h"})}}
	r := &Runner{Client: c, Name: "wave1", ReportEvery: 5 * time.Millisecond,
		Copier: &Copier{Dir: filepath.Join(t.TempDir(), "job"),
			Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil }}}
	// A guard against a runner that never stops, not a measure of speed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return r.Run(ctx, plan)
}

// TestRunnerStopsWhenItsRecordRefusesReports: a record that answers 409
// (it has ended: cancelled, or set final by someone else) stops the run
// at once, with an error saying why, and no further report is sent.
func TestRunnerStopsWhenItsRecordRefusesReports(t *testing.T) {
	f := &recordServer{refuse: true}
	_, err := runAgainst(t, f, stallStream{})
	if err == nil || !strings.Contains(err.Error(), "refuses reports") {
		t.Fatalf("run: %v, want it stopped because its record refuses reports", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) != 1 {
		t.Errorf("%d reports sent, want 1: the runner went on after the 409", len(f.reports))
	}
}

// TestRunnerCutsLongErrors: a VM that fails with an error over what the
// record takes is reported with the error cut (on a UTF-8 boundary), so
// that the report is taken and the record ends failed.
func TestRunnerCutsLongErrors(t *testing.T) {
	f := &recordServer{}
	long := errors.New(strings.Repeat("é", 3000))
	m, err := runAgainst(t, f, stallStream{open: long})
	if err == nil {
		t.Fatal("the run did not fail")
	}
	if f.tooLong != 0 {
		t.Errorf("%d reports refused for an error over %d bytes", f.tooLong, api.MaxMigrationErrorBytes)
	}
	if m == nil || m.Status.State != api.VMMigrationFailed {
		t.Fatalf("the record ended as %+v, want failed", m)
	}
	for _, e := range []string{m.Status.Error, m.Status.VMs[0].Error} {
		if len(e) > api.MaxMigrationErrorBytes || !utf8.ValidString(e) || !strings.HasSuffix(e, "[...]") {
			t.Errorf("reported error of %d bytes, valid UTF-8 %v: %.40q...", len(e), utf8.ValidString(e), e)
		}
	}
}
