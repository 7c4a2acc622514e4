package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// A flood of records past MaxBytes drops nothing younger than MaxAge: the
// log keeps them all and raises the audit-full alarm. (Size used to drop
// the oldest segments, so a flood of refusals erased real records.)
func TestSizeLimitKeepsYoungRecords(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 4096
	l := openLog(t, dir, Options{SegmentBytes: 1024, MaxBytes: maxBytes})
	real := appendMsgs(t, l, "the record an attacker wants gone")
	flood := appendMsgs(t, l, msgs("flood", 0, 100)...)
	if err := l.Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := userRecords(queryAll(t, l, api.AuditQuery{}))
	if want := append(real, flood...); !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("kept %d of %d records (first %q): size dropped young records", len(got), len(want), messages(got[:1]))
	}
	if n := dirSize(t, dir); n <= maxBytes {
		t.Fatalf("segments take %d bytes, want past MaxBytes %d for this test", n, maxBytes)
	}
	st := l.Status()
	if st.Bytes <= maxBytes || !st.Writable {
		t.Errorf("status %+v: want bytes past the limit and still writable (WhenFull alarm)", st)
	}
	if a := alarmNamed(l.Alarms(), api.AlarmAuditFull); a == nil || !strings.Contains(a.Message, "kept") {
		t.Errorf("alarms %+v: want %s saying the records are kept", l.Alarms(), api.AlarmAuditFull)
	}
}

// With WhenFull "refuse", records past MaxBytes are refused while every
// record is younger than MaxAge; once age frees room the log writes again,
// first a record counting what it refused.
func TestSizeLimitRefuses(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 4096
	now := time.Now()
	clock, setNow := fakeClock(now.Add(-30 * time.Hour))
	l := openLog(t, dir, Options{SegmentBytes: 1024, MaxBytes: maxBytes, MaxAge: 24 * time.Hour,
		WhenFull: api.AuditWhenFullRefuse, RetryInterval: 10 * time.Millisecond, now: clock})
	var kept []*api.AuditRecord
	refused := 0
	for i := range 100 {
		r := newRec("alice", "default", "vm/web", "vm.start", api.AuditSuccess, fmt.Sprint(i))
		err := l.Append(t.Context(), r)
		switch {
		case err == nil && refused == 0:
			kept = append(kept, r)
		case errors.Is(err, ErrFull):
			refused++
		default:
			t.Fatalf("append %d: %v (after %d refused)", i, err, refused)
		}
	}
	if refused == 0 || len(kept) == 0 {
		t.Fatalf("%d kept, %d refused: want both", len(kept), refused)
	}
	if n := dirSize(t, dir); n > maxBytes {
		t.Errorf("segments take %d bytes, past MaxBytes %d", n, maxBytes)
	}
	if err := l.Writable(); !errors.Is(err, ErrFull) {
		t.Errorf("Writable: %v, want ErrFull", err)
	}
	if a := alarmNamed(l.Alarms(), api.AlarmAuditFull); a == nil {
		t.Errorf("alarms %+v: want %s", l.Alarms(), api.AlarmAuditFull)
	}
	if got := userRecords(queryAll(t, l, api.AuditQuery{})); !slices.Equal(ids(got), ids(kept)) {
		t.Fatalf("kept %v, want %v", messages(got), messages(kept))
	}

	// A day later the first records are past MaxAge: retention makes room
	// and the log writes again by itself.
	setNow(now)
	deadline := time.Now().Add(10 * time.Second)
	for l.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Writable(); err != nil {
		t.Fatalf("still not writable after age made room: %v", err)
	}
	appendMsgs(t, l, "after")
	var outage *api.AuditRecord
	for _, r := range queryAll(t, l, api.AuditQuery{}) {
		if r.Action == "audit.outage" {
			outage = r
		}
	}
	if outage == nil || outage.Count != int64(refused) || !strings.Contains(outage.Message, "full") {
		t.Errorf("outage record %+v: want one counting the %d refused records", outage, refused)
	}
}

func alarmNamed(alarms []api.Alarm, name string) *api.Alarm {
	for i := range alarms {
		if alarms[i].Name == name {
			return &alarms[i]
		}
	}
	return nil
}

// userRecords leaves out the log's own records.
func userRecords(recs []*api.AuditRecord) []*api.AuditRecord {
	var out []*api.AuditRecord
	for _, r := range recs {
		if r.Actor != systemActor {
			out = append(out, r)
		}
	}
	return out
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock, setNow := fakeClock(now.Add(-47 * time.Hour))
	l := openLog(t, dir, Options{SegmentBytes: 1024, MaxAge: 24 * time.Hour, now: clock})
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
	// The segment being written is kept; the records of the removals may
	// have started newer ones.
	if got := segmentFiles(t, dir); got[0] != newest {
		t.Fatalf("after Prune: %v; want the segment being written, %s, as the oldest", got, newest)
	}
	kept := userRecords(fileLines(t, newest))
	all := queryAll(t, l, api.AuditQuery{})
	if got := userRecords(all); !slices.Equal(ids(got), ids(want[len(want)-len(kept):])) {
		t.Errorf("query returned %v, want the last records %v", messages(got), messages(kept))
	}
	// Each removal is in the log, naming the segment and its records.
	var removed []string
	var next uint64 = 1
	for _, r := range all {
		if r.Action == "audit.prune" {
			removed = append(removed, filepath.Join(dir, r.Removed.Segment))
			if r.Removed.FromSeq != next || r.Removed.ToSeq < next {
				t.Errorf("prune record %+v: want records from %d", r.Removed, next)
			}
			next = r.Removed.ToSeq + 1
		}
	}
	if !slices.Equal(removed, before[:len(before)-1]) {
		t.Errorf("prune records name %v, want %v", removed, before[:len(before)-1])
	}
	if v, err := l.Verify(t.Context()); err != nil || !v.OK || v.Pruned == nil || v.Pruned.ToSeq != next-1 {
		t.Errorf("Verify after pruning: %+v %v; want ok, records 1 to %d pruned", v, err, next-1)
	}
	appendMsgs(t, l, "fresh")
	if got := queryAll(t, l, api.AuditQuery{}); got[len(got)-1].Message != "fresh" {
		t.Errorf("append after pruning not found")
	}
}

func TestRetentionOnOpen(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-72 * time.Hour)
	clock, _ := fakeClock(old)
	l, err := Open(t.Context(), dir, Options{SegmentBytes: 1024, now: clock}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
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
	// The records of the removals are written after Open returns, to a
	// new segment, and the newest old one goes too once it is no longer
	// written to: the segments are read once the log is closed.
	l3 := openLog(t, dir, Options{SegmentBytes: 1024, MaxAge: 24 * time.Hour})
	l3.Close()
	got := segmentFiles(t, dir)
	for _, seg := range before[:len(before)-1] {
		if slices.Contains(got, seg) {
			t.Errorf("after open with MaxAge 24h: %s is still there", seg)
		}
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

// The verification Open starts reads the records of what retention removed
// at that same Open: a log pruned at start is not reported damaged. (It
// ran before those records were written and raised audit-corrupt, "no
// record says retention removed them", at most starts that pruned.)
func TestVerifyAfterRetentionOnOpen(t *testing.T) {
	for range 10 {
		dir := t.TempDir()
		clock, _ := fakeClock(time.Now().Add(-72 * time.Hour))
		l, err := Open(t.Context(), dir, Options{SegmentBytes: 1024, now: clock, NoVerify: true}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		appendMsgs(t, l, msgs("old", 0, 20)...)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		// Segments of the default size: the notes go to the newest one.
		l2, err := Open(t.Context(), dir, Options{MaxAge: 24 * time.Hour}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		l2.bg.Wait() // the verification Open started
		for _, a := range l2.Alarms() {
			if a.Name == api.AlarmAuditCorrupt {
				t.Errorf("after retention at Open: %s", a.Message)
			}
		}
		if err := l2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
