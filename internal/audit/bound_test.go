package audit

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
)

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s   string
		max int
	}{
		{"short", 10}, {strings.Repeat("a", 60000), 256}, {strings.Repeat("é", 500), 100}, {strings.Repeat("x", 40), 10},
	} {
		got := Truncate(tc.s, tc.max)
		if len(got) > tc.max || !utf8.ValidString(got) {
			t.Errorf("Truncate(%d bytes, %d) = %d bytes %q: want at most %d valid UTF-8 bytes", len(tc.s), tc.max, len(got), got, tc.max)
		}
		if len(tc.s) <= tc.max && got != tc.s {
			t.Errorf("Truncate changed %q, which fits", tc.s)
		}
		if len(tc.s) > tc.max && !strings.Contains(got, fmt.Sprintf("%d bytes", len(tc.s))) && tc.max > 30 {
			t.Errorf("Truncate(%d bytes) = %q: the marker does not give the length", len(tc.s), got)
		}
	}
}

// Every field a request can fill is cut to its bound before the record is
// written, with a marker: 250 records of 60000-byte paths and names take
// a few hundred KiB, not 30 MB. (The path went whole into Path and again
// into the object's name.)
func TestRecordFieldsBounded(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	long := strings.Repeat("a", 60000)
	for range 250 {
		r := &api.AuditRecord{Actor: api.AuditActor{Kind: "user", Name: long, Token: long}, Remote: long, RequestID: long,
			Method: "DELETE", Path: "/v1/vms/" + long, Action: "vm.delete", Project: long,
			Resource: api.Ref{Kind: "vm", Name: long, Project: long, UID: long}, OperationID: long,
			Outcome: api.AuditFailure, Status: 404, Message: long}
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if size := dirSize(t, dir); size > 250*8<<10 {
		t.Errorf("250 records of long fields take %d bytes, want under %d", size, 250*8<<10)
	}
	recs := queryAll(t, l, api.AuditQuery{})
	r := recs[len(recs)-1]
	for name, v := range map[string]string{"path": r.Path, "resource.name": r.Resource.Name, "message": r.Message, "actor.name": r.Actor.Name, "project": r.Project} {
		if !strings.Contains(v, "…[cut: ") {
			t.Errorf("%s %.80q…: no marker of the cut", name, v)
		}
	}
	if len(r.Path) > MaxPathBytes || len(r.Resource.Name) > MaxNameBytes || len(r.Message) > MaxMessageBytes {
		t.Errorf("fields past their bounds: path %d, name %d, message %d", len(r.Path), len(r.Resource.Name), len(r.Message))
	}
}

// A record appended with AppendKept that cannot be written is kept in
// memory and written once the log can write again, after the account of
// the outage, saying when it happened; an ordinary one is counted lost.
func TestAppendKeptWrittenAfterOutage(t *testing.T) {
	mnt := smallFS(t, "2m")
	dir := mnt + "/audit"
	// No retry by itself: the next append after the disk has room is the
	// first write.
	l := openLog(t, dir, Options{RetryInterval: time.Hour})
	appendMsgs(t, l, "before")
	filler := fill(t, mnt)
	// Fill the segment's last page too, with the smallest records.
	for i := 0; l.Writable() == nil; i++ {
		_ = l.Append(t.Context(), &api.AuditRecord{Action: "x", Outcome: api.AuditSuccess})
		if i > 100000 {
			t.Fatal("the log never stopped writing on a full disk")
		}
	}
	lost := newRec("alice", "default", "vm/web", "vm.start", api.AuditSuccess, "lost")
	if err := l.Append(t.Context(), lost); err == nil || errors.Is(err, ErrKept) {
		t.Fatalf("Append on a full disk: %v, want an error, not kept", err)
	}
	revoke := newRec("root", "", "token/t1", "token.delete", api.AuditSuccess, "")
	if err := l.AppendKept(t.Context(), revoke); !errors.Is(err, ErrKept) {
		t.Fatalf("AppendKept on a full disk: %v, want ErrKept", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	appendMsgs(t, l, "after")
	recs := queryAll(t, l, api.AuditQuery{})
	var order []string
	for _, r := range recs {
		switch {
		case r.Action == "audit.outage":
			order = append(order, "outage")
		case r.Action == "token.delete":
			order = append(order, "kept")
			if !strings.Contains(r.Message, "carried out at ") || !strings.Contains(r.Message, "could not write") {
				t.Errorf("kept record's message %q does not say when it happened and why it was late", r.Message)
			}
		case r.Message == "after":
			order = append(order, "after")
		case r.Message == "lost":
			t.Errorf("the ordinary record appended during the outage was written")
		}
	}
	if strings.Join(order, ",") != "outage,kept,after" {
		t.Errorf("records after the outage: %v, want outage, kept, after", order)
	}
	if v, err := l.Verify(t.Context()); err != nil || !v.OK {
		t.Errorf("verify after the outage: %+v %v", v, err)
	}
}

// Past MaxKeys, new records fold by action, outcome and status: a count of
// each, naming the addresses and callers it holds; past the coarse keys'
// own bound one count names the actions. (They used to share one count,
// which kept only the last record and said nothing of the others.)
func TestAggregatorOverflowSaysWhatItFolded(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	a := NewAggregator(l, AggregateOptions{Window: time.Hour, Each: 1, MaxKeys: 2})
	t.Cleanup(a.Close)
	add := func(key, remote, action string, status int, project string) {
		r := denial(remote, "/v1/x")
		r.Action, r.Status, r.Project = action, status, project
		if err := a.Append(t.Context(), key, r); err != nil {
			t.Fatal(err)
		}
	}
	add("k1", "192.0.2.1", "vm.read", 401, "")
	add("k2", "192.0.2.2", "vm.read", 401, "")
	for i := range 50 {
		add(fmt.Sprint("a", i), fmt.Sprintf("198.51.100.%d", i), "vm.delete", 401, "pa")
		add(fmt.Sprint("b", i), fmt.Sprintf("203.0.113.%d", i), "token.delete", 404, "")
	}
	a.Close()
	var deletes, tokens *api.AuditRecord
	for _, r := range queryAll(t, l, api.AuditQuery{}) {
		if r.Count == 0 {
			continue
		}
		switch r.Action {
		case "vm.delete":
			deletes = r
		case "token.delete":
			tokens = r
		}
	}
	if deletes == nil || tokens == nil {
		t.Fatalf("counts of the overflow: vm.delete %+v, token.delete %+v: want one of each", deletes, tokens)
	}
	if deletes.Count != 49 || deletes.Remote != "many" || !strings.Contains(deletes.Message, "198.51.100.1") ||
		!strings.Contains(deletes.Message, "and more") || !strings.Contains(deletes.Message, "vm.delete (denied 401)") {
		t.Errorf("vm.delete overflow count %+v: want 49, from many addresses it names", deletes)
	}
	if deletes.Project != "pa" || tokens.Project != "" {
		t.Errorf("projects of the counts: %q and %q, want pa (all of it) and none", deletes.Project, tokens.Project)
	}

	// Past the coarse keys' bound: one count, naming the actions.
	l2 := openLog(t, t.TempDir(), Options{})
	a2 := NewAggregator(l2, AggregateOptions{Window: time.Hour, Each: 1, MaxKeys: 1})
	t.Cleanup(a2.Close)
	for i := range maxOverflowKeys + 40 {
		r := denial("192.0.2.9", "/v1/x")
		r.Action = fmt.Sprintf("act%d.delete", i)
		for range 2 {
			if err := a2.Append(t.Context(), fmt.Sprint(i), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	a2.Close()
	var last *api.AuditRecord
	for _, r := range queryAll(t, l2, api.AuditQuery{}) {
		if r.Action == "audit.overflow" {
			last = r
		}
	}
	if last == nil || last.Count < 40 || !strings.Contains(last.Message, "of actions act") {
		t.Errorf("the last count %+v: want the actions it folded named", last)
	}
}
