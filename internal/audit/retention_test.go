package audit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func TestRetentionBySize(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 4096
	l := openLog(t, dir, Options{SegmentBytes: 1024, MaxBytes: maxBytes})
	want := appendMsgs(t, l, msgs("r", 0, 100)...)
	if err := l.Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := dirSize(t, dir); n > maxBytes {
		t.Errorf("segments take %d bytes, more than MaxBytes %d", n, maxBytes)
	}
	got := queryAll(t, l, api.AuditQuery{})
	if len(got) == 0 || len(got) > 50 {
		t.Fatalf("%d records kept of 100, want some but not most", len(got))
	}
	if tail := ids(want[len(want)-len(got):]); !slices.Equal(ids(got), tail) {
		t.Errorf("kept %v, want the newest records %v", messages(got), messages(want[len(want)-len(got):]))
	}
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentBytes: 1024, MaxAge: 24 * time.Hour})
	now := time.Now()
	setNow := fakeClock(l, now.Add(-47*time.Hour))
	var want []*api.AuditRecord
	for i := range 30 {
		r := newRec("alice", "default", "vm/web", "vm.start", api.AuditSuccess, fmt.Sprint(i))
		r.Time = now.Add(-48 * time.Hour).Add(time.Duration(i) * time.Second)
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	before := segmentFiles(t, dir)
	if len(before) < 3 {
		t.Fatalf("%d segments, want several", len(before))
	}
	if err := l.Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, before) {
		t.Fatalf("Prune removed segments within MaxAge: %v, had %v", got, before)
	}

	setNow(now)
	if err := l.Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	newest := before[len(before)-1]
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{newest}) {
		t.Fatalf("after Prune: %v; want only the segment being written, %s", got, newest)
	}
	kept := fileLines(t, newest)
	if got := queryAll(t, l, api.AuditQuery{}); !slices.Equal(ids(got), ids(want[len(want)-len(kept):])) {
		t.Errorf("query returned %v, want the last records %v", messages(got), messages(kept))
	}
	appendMsgs(t, l, "fresh")
	if got := queryAll(t, l, api.AuditQuery{}); got[len(got)-1].Message != "fresh" {
		t.Errorf("append after pruning not found")
	}
}

func TestRetentionOnOpen(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(t.Context(), dir, Options{SegmentBytes: 1024}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-72 * time.Hour)
	fakeClock(l, old)
	appendMsgs(t, l, msgs("old", 0, 20)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before := segmentFiles(t, dir)
	if len(before) < 3 {
		t.Fatalf("%d segments, want several", len(before))
	}
	// Within MaxAge, nothing goes.
	l2 := openLog(t, dir, Options{SegmentBytes: 1024, MaxAge: 73 * time.Hour})
	if got := segmentFiles(t, dir); !slices.Equal(got, before) {
		t.Fatalf("open within MaxAge removed segments: %v, had %v", got, before)
	}
	l2.Close()
	openLog(t, dir, Options{SegmentBytes: 1024, MaxAge: 24 * time.Hour})
	if got := segmentFiles(t, dir); !slices.Equal(got, before[len(before)-1:]) {
		t.Fatalf("after open with MaxAge 24h: %v, want only %s", got, before[len(before)-1])
	}
}

// A segment is kept while its newest record is within MaxAge, however old
// its first one.
func TestRetentionUsesNewestRecord(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	write := func(start time.Time, times ...time.Time) string {
		var b strings.Builder
		for i, at := range times {
			line, _ := json.Marshal(&api.AuditRecord{ID: newID(at.UnixNano()), Time: at, Action: "vm.start", Outcome: "success", Message: fmt.Sprint(i)})
			b.Write(append(line, '\n'))
		}
		path := filepath.Join(dir, segmentName(start.UnixNano()))
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	old, recent := now.Add(-10*24*time.Hour), now.Add(-time.Hour)
	gone := write(old, old, old.Add(time.Minute))
	kept := write(old.Add(time.Hour), old.Add(time.Hour), recent)
	last := write(recent.Add(time.Minute), recent.Add(time.Minute))
	openLog(t, dir, Options{MaxAge: 24 * time.Hour})
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{kept, last}) {
		t.Errorf("segments kept %v, want %v (not %s)", got, []string{kept, last}, gone)
	}
}
