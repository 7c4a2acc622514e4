package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// testLogger logs through t, and drops what comes after the test ended.
func testLogger(t testing.TB) *slog.Logger {
	w := &tlogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// openLog opens the log in dir, closed at the end of the test.
func openLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(t.Context(), dir, opts, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// newRec makes a record; msg tells records apart in the tests.
func newRec(actor, project, resource, action, outcome, msg string) *api.AuditRecord {
	r := &api.AuditRecord{
		Actor:   api.AuditActor{Kind: "user", Name: actor},
		Project: project,
		Action:  action,
		Outcome: outcome,
		Message: msg,
	}
	if kind, name, ok := strings.Cut(resource, "/"); ok {
		r.Resource = api.Ref{Kind: kind, Name: name}
	}
	return r
}

// appendMsgs appends one record per message, and returns them as stamped.
func appendMsgs(t testing.TB, l *Log, msgs ...string) []*api.AuditRecord {
	t.Helper()
	var out []*api.AuditRecord
	for _, m := range msgs {
		r := newRec("alice", "default", "vm/web", "vm.start", api.AuditSuccess, m)
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatalf("Append(%s): %v", m, err)
		}
		out = append(out, r)
	}
	return out
}

func msgs(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func queryAll(t testing.TB, l *Log, q api.AuditQuery) []*api.AuditRecord {
	t.Helper()
	var out []*api.AuditRecord
	if err := l.Query(t.Context(), q, func(r *api.AuditRecord) bool {
		out = append(out, r)
		return true
	}); err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	return out
}

func messages(recs []*api.AuditRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Message
	}
	return out
}

func ids(recs []*api.AuditRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// segmentFiles lists the segment files of dir, oldest first.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, ok := parseSegmentName(e.Name()); ok {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out
}

// fileLines reads a segment and decodes every line, failing on any line
// that is not a whole record.
func fileLines(t testing.TB, path string) []*api.AuditRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end with a newline", path)
	}
	var out []*api.AuditRecord
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(data) == 0 {
			break
		}
		r := new(api.AuditRecord)
		if err := json.Unmarshal(line, r); err != nil {
			t.Fatalf("%s line %d: %v: %q", path, i+1, err, line)
		}
		out = append(out, r)
	}
	return out
}

func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	for _, p := range segmentFiles(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	return total
}

// fakeClock returns a clock for Options.now, reading the returned
// setter's value, which starts at start.
func fakeClock(start time.Time) (func() time.Time, func(time.Time)) {
	var mu sync.Mutex
	now := start
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	return clock, func(t time.Time) {
		mu.Lock()
		now = t
		mu.Unlock()
	}
}
