package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Every record carries its sequence number and the hash of the record
// before it, across segments and across a reopen.
func TestHashChain(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(t.Context(), dir, Options{SegmentBytes: 1024}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	appendMsgs(t, l, msgs("a", 0, 10)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{SegmentBytes: 1024})
	appendMsgs(t, l, msgs("b", 0, 10)...)

	var prev string
	var seq uint64
	files := segmentFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("%d segments, want several", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			var r api.AuditRecord
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			seq++
			if r.Seq != seq || r.Prev != prev {
				t.Fatalf("%s: record %q has seq %d prev %.12s, want seq %d prev %.12s", filepath.Base(f), r.Message, r.Seq, r.Prev, seq, prev)
			}
			prev = lineHash(line)
		}
	}
	if seq != 20 {
		t.Fatalf("%d records in the files, want 20", seq)
	}
	v, err := l.Verify(t.Context())
	if err != nil || !v.OK || v.FirstSeq != 1 || v.LastSeq != 20 || v.Records != 20 {
		t.Errorf("Verify: %+v %v; want ok, records 1 to 20", v, err)
	}
}

// damageLog writes 30 records in segments of about 1 KiB and returns the
// segment files.
func damageLog(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	l, err := Open(t.Context(), dir, Options{SegmentBytes: 1024, NoVerify: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	appendMsgs(t, l, msgs("r", 0, 30)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := segmentFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("%d segments, want at least 5", len(files))
	}
	return dir, files
}

// lineAt returns the byte range of line i (from 0) of a segment and its
// record.
func lineAt(t *testing.T, path string, i int) (int64, int64, api.AuditRecord) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for j, line := range bytes.SplitAfter(data, []byte("\n")) {
		if j == i {
			var r api.AuditRecord
			if err := json.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), &r); err != nil {
				t.Fatal(err)
			}
			return off, off + int64(len(line)), r
		}
		off += int64(len(line))
	}
	t.Fatalf("%s has no line %d", path, i)
	return 0, 0, api.AuditRecord{}
}

// Damage is reported with what it cost: which segment, which bytes, which
// records. It used to be skipped silently.
func TestVerifyReportsWhatWasLost(t *testing.T) {
	t.Run("unreadable bytes", func(t *testing.T) {
		dir, files := damageLog(t)
		off, end, rec := lineAt(t, files[1], 1)
		f, err := os.OpenFile(files[1], os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := append(bytes.Repeat([]byte{0}, int(end-off)-1), '\n')
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want := api.AuditProblem{Kind: api.AuditUnreadable, Span: api.AuditSpan{
			Segment: filepath.Base(files[1]), Offset: off, End: end, FromSeq: rec.Seq, ToSeq: rec.Seq}}
		checkProblem(t, dir, want, fmt.Sprintf("records %d to %d are lost", rec.Seq, rec.Seq))
	})
	t.Run("altered record", func(t *testing.T) {
		dir, files := damageLog(t)
		off, end, rec := lineAt(t, files[2], 0)
		data, _ := os.ReadFile(files[2])
		line := string(data[off:end])
		changed := strings.Replace(line, `"actor":{"kind":"user","name":"alice"}`, `"actor":{"kind":"user","name":"mallo"}`, 1)
		if changed == line {
			t.Fatalf("no actor to change in %s", line)
		}
		if err := os.WriteFile(files[2], []byte(string(data[:off])+changed+string(data[end:])), 0o600); err != nil {
			t.Fatal(err)
		}
		want := api.AuditProblem{Kind: api.AuditAltered, Span: api.AuditSpan{
			Segment: filepath.Base(files[2]), Offset: off, End: end, FromSeq: rec.Seq, ToSeq: rec.Seq}}
		checkProblem(t, dir, want, fmt.Sprintf("record %d", rec.Seq))
	})
	t.Run("segment removed", func(t *testing.T) {
		dir, files := damageLog(t)
		_, _, first := lineAt(t, files[2], 0)
		_, _, next := lineAt(t, files[3], 0)
		if err := os.Remove(files[2]); err != nil {
			t.Fatal(err)
		}
		want := api.AuditProblem{Kind: api.AuditMissing, Span: api.AuditSpan{
			Segment: filepath.Base(files[3]), FromSeq: first.Seq, ToSeq: next.Seq - 1}}
		checkProblem(t, dir, want, fmt.Sprintf("records %d to %d are missing", first.Seq, next.Seq-1))
	})
	t.Run("oldest segment removed", func(t *testing.T) {
		dir, files := damageLog(t)
		_, _, next := lineAt(t, files[1], 0)
		if err := os.Remove(files[0]); err != nil {
			t.Fatal(err)
		}
		want := api.AuditProblem{Kind: api.AuditMissing, Span: api.AuditSpan{FromSeq: 1, ToSeq: next.Seq - 1}}
		checkProblem(t, dir, want, "no record says retention removed them")
	})
}

// checkProblem verifies the log in dir offline, then opened (the check at
// start raises the alarm), and expects want among the problems.
func checkProblem(t *testing.T, dir string, want api.AuditProblem, msg string) {
	t.Helper()
	v, err := VerifyDir(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(v.Problems, want, msg) {
		t.Errorf("VerifyDir: %+v\nwant a problem %+v saying %q", v.Problems, want, msg)
	}
	if v.OK {
		t.Errorf("VerifyDir says OK with problems %+v", v.Problems)
	}
	l := openLog(t, dir, Options{SegmentBytes: 1024})
	deadline := time.Now().Add(10 * time.Second)
	for alarmNamed(l.Alarms(), api.AlarmAuditCorrupt) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := alarmNamed(l.Alarms(), api.AlarmAuditCorrupt); a == nil {
		t.Errorf("no %s alarm after opening a damaged log: %+v", api.AlarmAuditCorrupt, l.Alarms())
	}
	v, err = l.Verify(t.Context())
	if err != nil || !hasProblem(v.Problems, want, msg) {
		t.Errorf("Verify: %+v %v", v.Problems, err)
	}
}

func hasProblem(ps []api.AuditProblem, want api.AuditProblem, msg string) bool {
	for _, p := range ps {
		if p.Kind == want.Kind && p.Span == want.Span && strings.Contains(p.Message, msg) {
			return true
		}
	}
	return false
}

// Records written before the log kept a chain are counted, and the chain
// starts from the last of them.
func TestChainAfterUnchainedRecords(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	start := time.Now().Add(-time.Hour).UTC()
	for i := range 3 {
		at := start.Add(time.Duration(i) * time.Second)
		line, _ := json.Marshal(&api.AuditRecord{ID: newID(at.UnixNano()), Time: at, Action: "vm.start", Outcome: "success", Message: fmt.Sprint(i)})
		b.Write(append(line, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(start.UnixNano())), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, dir, Options{})
	appendMsgs(t, l, "chained")
	v, err := l.Verify(t.Context())
	if err != nil || !v.OK || v.Unchained != 3 || v.FirstSeq != 1 || v.LastSeq != 1 {
		t.Errorf("Verify: %+v %v; want ok, 3 unchained, then record 1", v, err)
	}
}
