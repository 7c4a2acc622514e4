package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func TestAppendStamps(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	before := time.Now()
	recs := appendMsgs(t, l, "a", "b", "c")
	after := time.Now()
	for i, r := range recs {
		if len(r.ID) != 24 {
			t.Errorf("ID %q: want 24 hex digits", r.ID)
		}
		if r.Time.Location() != time.UTC {
			t.Errorf("Time %v is not UTC", r.Time)
		}
		if r.Time.Before(before.Add(-time.Millisecond)) || r.Time.After(after.Add(time.Millisecond)) {
			t.Errorf("Time %v not between %v and %v", r.Time, before, after)
		}
		if idNanos(r.ID) != r.Time.UnixNano() {
			t.Errorf("ID %s does not carry the record's time %v", r.ID, r.Time)
		}
		if i > 0 && r.ID <= recs[i-1].ID {
			t.Errorf("IDs not ascending: %s after %s", r.ID, recs[i-1].ID)
		}
	}

	given := time.Date(2024, 3, 1, 12, 0, 0, 0, time.FixedZone("X", 3600))
	r := newRec("bob", "p", "vm/x", "vm.stop", api.AuditSuccess, "given")
	r.Time = given
	r.ID = "caller-chosen"
	if err := l.Append(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if !r.Time.Equal(given) || r.Time.Location() != time.UTC {
		t.Errorf("given Time became %v, want %v in UTC", r.Time, given)
	}
	if r.ID == "caller-chosen" || r.ID <= recs[2].ID {
		t.Errorf("ID %q not replaced by a new ascending one", r.ID)
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(t.Context(), dir, Options{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var want []*api.AuditRecord
	for i := range 10 {
		r := &api.AuditRecord{
			Actor:       api.AuditActor{Kind: "user", Name: "alice", Token: "tok1"},
			Remote:      "10.0.0.1:5555",
			RequestID:   fmt.Sprintf("req-%d", i),
			Method:      "POST",
			Path:        "/v1/vms/web/start",
			Action:      "vm.start",
			Project:     "default",
			Resource:    api.Ref{Kind: "vm", Name: "web", UID: "u1"},
			OperationID: "op1",
			Outcome:     api.AuditSuccess,
			Status:      202,
			Message:     fmt.Sprintf("m%d", i),
		}
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context(), newRec("a", "", "", "x.y", "success", "late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	l = openLog(t, dir, Options{})
	got := queryAll(t, l, api.AuditQuery{})
	wantJSON, _ := json.Marshal(want)
	gotJSON, _ := json.Marshal(got)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("after reopening:\n got %s\nwant %s", gotJSON, wantJSON)
	}

	files := segmentFiles(t, dir)
	more := appendMsgs(t, l, "after")
	if more[0].ID <= want[len(want)-1].ID {
		t.Errorf("ID after reopening %s not after %s", more[0].ID, want[len(want)-1].ID)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, files) {
		t.Errorf("reopened log wrote to %v, want to continue in %v", got, files)
	}
	if n := len(queryAll(t, l, api.AuditQuery{})); n != 11 {
		t.Errorf("%d records, want 11", n)
	}
}

func TestTornLastLineRepaired(t *testing.T) {
	tails := map[string]string{
		"partial record": `{"id":"0000000000000001aa","time":"2025-01-0`,
		"zeros":          "\x00\x00\x00\x00\x00\x00",
		"garbage lines":  "not json\n{\"id\":\"x\"}\n{\"trunc",
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Open(t.Context(), dir, Options{}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			appendMsgs(t, l, "a", "b", "c")
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := segmentFiles(t, dir)
			path := files[len(files)-1]
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			good := fi.Size()
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(tail); err != nil {
				t.Fatal(err)
			}
			f.Close()

			l = openLog(t, dir, Options{})
			if fi, err := os.Stat(path); err != nil || fi.Size() != good {
				t.Fatalf("segment after reopening: %v, %v; want cut back to %d bytes", fi.Size(), err, good)
			}
			appendMsgs(t, l, "d")
			if got := messages(queryAll(t, l, api.AuditQuery{})); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
				t.Errorf("records %v, want a b c d", got)
			}
			if got := messages(fileLines(t, path)); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
				t.Errorf("segment holds %v, want a b c d", got)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 1024
	l := openLog(t, dir, Options{SegmentBytes: segBytes})
	want := appendMsgs(t, l, msgs("r", 0, 40)...)

	files := segmentFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("%d segments after 40 records of SegmentBytes %d, want several", len(files), segBytes)
	}
	var all []*api.AuditRecord
	for i, path := range files {
		recs := fileLines(t, path)
		if len(recs) == 0 {
			t.Fatalf("%s is empty", path)
		}
		start, _ := parseSegmentName(filepath.Base(path))
		if start != recs[0].Time.UnixNano() {
			t.Errorf("%s: first record at %d, want the name's time", path, recs[0].Time.UnixNano())
		}
		if i < len(files)-1 {
			fi, _ := os.Stat(path)
			last, _ := json.Marshal(recs[len(recs)-1])
			if fi.Size() < segBytes || fi.Size()-int64(len(last)+1) >= segBytes {
				t.Errorf("%s: %d bytes; want rotation right after reaching %d", path, fi.Size(), segBytes)
			}
		}
		all = append(all, recs...)
	}
	if !slices.Equal(ids(all), ids(want)) {
		t.Errorf("segments hold %v, want %v", ids(all), ids(want))
	}
	if got := queryAll(t, l, api.AuditQuery{}); !slices.Equal(ids(got), ids(want)) {
		t.Errorf("query returned %d records, want the %d appended in order", len(got), len(want))
	}
}

func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentBytes: 64 << 10})
	const goroutines, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	stamped := make([][]string, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r := newRec(fmt.Sprintf("g%d", g), "default", "vm/web", "vm.start", api.AuditSuccess, fmt.Sprint(i))
				if err := l.Append(t.Context(), r); err != nil {
					errs <- err
					return
				}
				stamped[g] = append(stamped[g], r.ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	check := func(l *Log) {
		got := queryAll(t, l, api.AuditQuery{})
		if len(got) != goroutines*each {
			t.Fatalf("%d records, want %d", len(got), goroutines*each)
		}
		seen := map[string]bool{}
		next := map[string]int{}
		for i, r := range got {
			if seen[r.ID] {
				t.Fatalf("ID %s twice", r.ID)
			}
			seen[r.ID] = true
			if i > 0 && r.ID <= got[i-1].ID {
				t.Fatalf("IDs out of order: %s after %s", r.ID, got[i-1].ID)
			}
			if want := fmt.Sprint(next[r.Actor.Name]); r.Message != want {
				t.Fatalf("%s: record %s, want %s", r.Actor.Name, r.Message, want)
			}
			next[r.Actor.Name]++
		}
		for g := range goroutines {
			for _, id := range stamped[g] {
				if !seen[id] {
					t.Fatalf("ID %s given to g%d not in the log", id, g)
				}
			}
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check(openLog(t, dir, Options{SegmentBytes: 64 << 10}))
}

func TestAppendVisibleToQuery(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentBytes: 2048})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_ = l.Append(ctx, newRec(fmt.Sprintf("noise%d", g), "p", "vm/x", "vm.stop", api.AuditSuccess, ""))
			}
		})
	}
	for i := range 50 {
		appendMsgs(t, l, fmt.Sprint(i))
		got := queryAll(t, l, api.AuditQuery{Actor: "alice", Limit: 1})
		if len(got) != 1 || got[0].Message != fmt.Sprint(i) {
			t.Fatalf("after appending %d the newest record a query sees is %v", i, messages(got))
		}
	}
	cancel()
	wg.Wait()
	if got := queryAll(t, l, api.AuditQuery{Actor: "alice"}); len(got) != 50 {
		t.Errorf("%d records of alice, want 50", len(got))
	}
}

func TestAppendContext(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := newRec("a", "", "", "x.y", api.AuditSuccess, "")
	// The send may win the race with the done context, and so may the wait
	// for the record; when neither does, the record must be left alone.
	if err := l.Append(ctx, r); err != nil {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Append with a canceled context: %v", err)
		}
		if r.ID != "" {
			t.Errorf("failed Append changed the record: ID %q", r.ID)
		}
	}
	if err := l.Append(t.Context(), nil); err == nil {
		t.Error("Append(nil) succeeded")
	}
	// A field past its bound is cut, not refused: the record is written.
	big := newRec("a", "", "", "x.y", api.AuditSuccess, strings.Repeat("x", maxRecordBytes))
	if err := l.Append(t.Context(), big); err != nil {
		t.Errorf("Append of a record with a long message: %v", err)
	}
	recs := queryAll(t, l, api.AuditQuery{Action: "x.y"})
	if n := len(recs); n == 0 || len(recs[n-1].Message) > MaxMessageBytes {
		t.Errorf("the long message was not cut to %d bytes", MaxMessageBytes)
	}
	appendMsgs(t, l, "after")
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, dir, Options{})
	appendMsgs(t, l, "a")
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	for _, p := range segmentFiles(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
}
