package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// filterLog holds records r0..r6, one minute apart from base.
func filterLog(t *testing.T) (*Log, time.Time) {
	base := time.Now().Add(-time.Hour).Truncate(time.Minute).UTC()
	l := openLog(t, t.TempDir(), Options{})
	recs := []*api.AuditRecord{
		newRec("alice", "default", "vm/web1", "vm.start", api.AuditSuccess, "r0"),
		newRec("bob", "default", "vm/web2", "vm.stop", api.AuditFailure, "r1"),
		newRec("alice", "prod", "image/web1", "image.delete", api.AuditDenied, "r2"),
		newRec("carol", "prod", "vm/db", "vm.create", api.AuditSuccess, "r3"),
		newRec("bob", "", "host/web1", "host.drain", api.AuditSuccess, "r4"),
		newRec("alice", "default", "vm/web1", "vmx.start", api.AuditSuccess, "r5"),
		newRec("alicia", "defaults", "vm/web10", "vm", api.AuditSuccess, "r6"),
	}
	for i, r := range recs {
		r.Time = base.Add(time.Duration(i) * time.Minute)
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return l, base
}

func TestQueryFilters(t *testing.T) {
	l, base := filterLog(t)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	tests := []struct {
		name string
		q    api.AuditQuery
		want string
	}{
		{"all", api.AuditQuery{}, "r0 r1 r2 r3 r4 r5 r6"},
		{"actor", api.AuditQuery{Actor: "alice"}, "r0 r2 r5"},
		{"actor none", api.AuditQuery{Actor: "dave"}, ""},
		{"project", api.AuditQuery{Project: "prod"}, "r2 r3"},
		{"project exact", api.AuditQuery{Project: "default"}, "r0 r1 r5"},
		{"resource kind/name", api.AuditQuery{Resource: "vm/web1"}, "r0 r5"},
		{"resource other kind", api.AuditQuery{Resource: "image/web1"}, "r2"},
		{"resource bare name", api.AuditQuery{Resource: "web1"}, "r0 r2 r4 r5"},
		{"resource no prefix match", api.AuditQuery{Resource: "web"}, ""},
		{"action exact", api.AuditQuery{Action: "vm.start"}, "r0"},
		{"action prefix", api.AuditQuery{Action: "vm."}, "r0 r1 r3"},
		{"action without dot is exact", api.AuditQuery{Action: "vm"}, "r6"},
		{"outcome", api.AuditQuery{Outcome: api.AuditFailure}, "r1"},
		{"outcome denied", api.AuditQuery{Outcome: api.AuditDenied}, "r2"},
		{"since inclusive", api.AuditQuery{Since: at(4)}, "r4 r5 r6"},
		{"until exclusive", api.AuditQuery{Until: at(2)}, "r0 r1"},
		{"since and until", api.AuditQuery{Since: at(1), Until: at(3)}, "r1 r2"},
		{"since in another zone", api.AuditQuery{Since: at(5).In(time.FixedZone("E", -5*3600))}, "r5 r6"},
		{"empty window", api.AuditQuery{Since: at(3), Until: at(3)}, ""},
		{"combined", api.AuditQuery{Actor: "alice", Project: "default", Action: "vm."}, "r0"},
		{"combined with time", api.AuditQuery{Actor: "bob", Since: at(2)}, "r4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(messages(queryAll(t, l, tt.q)), " ")
			if got != tt.want {
				t.Errorf("Query(%+v) = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
}

func TestQueryLimit(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentBytes: 600})
	for i := range 30 {
		outcome := api.AuditSuccess
		if i%2 == 1 {
			outcome = api.AuditFailure
		}
		r := newRec("alice", "default", "vm/web", "vm.start", outcome, fmt.Sprintf("r%d", i))
		if err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(segmentFiles(t, dir)); n < 5 {
		t.Fatalf("%d segments, want the records spread over several", n)
	}
	want := func(from, to, step int) string {
		var s []string
		for i := from; i < to; i += step {
			s = append(s, fmt.Sprintf("r%d", i))
		}
		return strings.Join(s, " ")
	}
	tests := []struct {
		q    api.AuditQuery
		want string
	}{
		{api.AuditQuery{Limit: 1}, "r29"},
		{api.AuditQuery{Limit: 5}, want(25, 30, 1)},
		{api.AuditQuery{Limit: 17}, want(13, 30, 1)},
		{api.AuditQuery{Limit: 30}, want(0, 30, 1)},
		{api.AuditQuery{Limit: 1000}, want(0, 30, 1)},
		{api.AuditQuery{Limit: -1}, want(0, 30, 1)},
		{api.AuditQuery{Limit: 4, Outcome: api.AuditSuccess}, "r22 r24 r26 r28"},
		{api.AuditQuery{Limit: 9, Outcome: api.AuditFailure}, want(13, 30, 2)},
		{api.AuditQuery{Limit: 3, Actor: "nobody"}, ""},
	}
	for _, tt := range tests {
		got := strings.Join(messages(queryAll(t, l, tt.q)), " ")
		if got != tt.want {
			t.Errorf("Query(%+v) = %q, want %q", tt.q, got, tt.want)
		}
	}

	for _, limit := range []int{0, 10} {
		calls := 0
		err := l.Query(t.Context(), api.AuditQuery{Limit: limit}, func(*api.AuditRecord) bool {
			calls++
			return calls < 3
		})
		if err != nil || calls != 3 {
			t.Errorf("Limit %d: fn returning false after 3 calls: %d calls, %v", limit, calls, err)
		}
	}
}

func TestRing(t *testing.T) {
	r := ring{max: 4}
	var all []*api.AuditRecord
	for i := range 11 {
		rec := &api.AuditRecord{Message: fmt.Sprint(i)}
		all = append(all, rec)
		r.push(rec)
		n := min(i+1, 4)
		if got, want := messages(r.ordered()), messages(all[len(all)-n:]); !slices.Equal(got, want) {
			t.Fatalf("after %d pushes: %v, want %v", i+1, got, want)
		}
	}
}

func TestSegmentsFor(t *testing.T) {
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var segs []segment
	for i := range 4 {
		segs = append(segs, segment{start: base.Add(time.Duration(i) * time.Hour).UnixNano()})
	}
	at := func(d time.Duration) time.Time { return base.Add(d) }
	tests := []struct {
		name string
		q    api.AuditQuery
		want []int
	}{
		{"all", api.AuditQuery{}, []int{0, 1, 2, 3}},
		{"since in the third", api.AuditQuery{Since: at(150 * time.Minute)}, []int{2, 3}},
		{"since at a start, within slack", api.AuditQuery{Since: at(2 * time.Hour)}, []int{1, 2, 3}},
		{"since after all starts", api.AuditQuery{Since: at(10 * time.Hour)}, []int{3}},
		{"until in the second", api.AuditQuery{Until: at(90 * time.Minute)}, []int{0, 1}},
		{"until at a start, within slack", api.AuditQuery{Until: at(2 * time.Hour)}, []int{0, 1, 2}},
		{"until before all", api.AuditQuery{Until: at(-time.Hour)}, nil},
		{"window", api.AuditQuery{Since: at(70 * time.Minute), Until: at(110 * time.Minute)}, []int{1}},
	}
	for _, tt := range tests {
		var got []int
		for _, s := range segmentsFor(segs, tt.q) {
			got = append(got, int((s.start-segs[0].start)/int64(time.Hour)))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: segments %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestQuerySkipsMalformedLines(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(t.Context(), dir, Options{SegmentBytes: 600}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	want := appendMsgs(t, l, msgs("r", 0, 12)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := segmentFiles(t, dir)
	if len(files) < 2 {
		t.Fatalf("%d segments, want several", len(files))
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	damaged := slices.Concat(first, []byte("\n{not json\n\x00\x00\n"), rest)
	if err := os.WriteFile(files[0], damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{SegmentBytes: 600})
	if got := queryAll(t, l, api.AuditQuery{}); !slices.Equal(ids(got), ids(want)) {
		t.Errorf("query over a damaged segment: %v, want %v", messages(got), messages(want))
	}
}

func TestExport(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentBytes: 700})
	want := appendMsgs(t, l, msgs("r", 0, 20)...)
	odd := newRec("bob", "p", "vm/x", "vm.delete", api.AuditFailure, "two\nlines <b>&\"quoted\"</b>\u2028")
	if err := l.Append(t.Context(), odd); err != nil {
		t.Fatal(err)
	}
	want = append(want, odd)

	var buf bytes.Buffer
	if err := l.Export(t.Context(), api.AuditQuery{}, &buf); err != nil {
		t.Fatal(err)
	}
	var got []*api.AuditRecord
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		r := new(api.AuditRecord)
		if err := json.Unmarshal(sc.Bytes(), r); err != nil {
			t.Fatalf("export line %d: %v: %q", len(got)+1, err, sc.Bytes())
		}
		got = append(got, r)
	}
	if !slices.Equal(ids(got), ids(want)) || got[len(got)-1].Message != odd.Message {
		t.Fatalf("exported %v, want %v", messages(got), messages(want))
	}
	// The export of everything is the segments, byte for byte.
	var stored []byte
	for _, p := range segmentFiles(t, dir) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, data...)
	}
	if !bytes.Equal(buf.Bytes(), stored) {
		t.Errorf("export differs from the stored lines:\n%s\nstored:\n%s", buf.Bytes(), stored)
	}

	buf.Reset()
	if err := l.Export(t.Context(), api.AuditQuery{Actor: "bob", Limit: 5}, &buf); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"); len(lines) != 1 {
		t.Errorf("filtered export: %d lines, want 1: %q", len(lines), buf.String())
	}

	if err := l.Export(t.Context(), api.AuditQuery{}, failWriter{}); err == nil {
		t.Error("Export to a failing writer succeeded")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

func TestLastStamp(t *testing.T) {
	line := func(id string, pad int) string {
		return fmt.Sprintf(`{"id":%q,"time":"2025-01-02T03:04:05Z","message":%q}`+"\n", id, strings.Repeat("x", pad))
	}
	tests := []struct {
		name, data string
		want       string // ID found, "" for none
	}{
		{"empty", "", ""},
		{"one", line("a", 0), "a"},
		{"last of several", line("a", 0) + line("b", 0) + line("c", 0), "c"},
		{"partial tail", line("a", 0) + line("b", 0) + `{"id":"c","ti`, "b"},
		{"bad last line", line("a", 0) + "junk\n", "a"},
		{"long lines", line("a", 200<<10) + line("b", 300<<10), "b"},
		{"long line after short", line("a", 0) + line("b", 300<<10), "b"},
		{"only junk", "junk\n\x00\x00", ""},
	}
	for _, tt := range tests {
		st, _, ok, err := lastStamp(strings.NewReader(tt.data), int64(len(tt.data)))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := map[bool]string{true: st.ID}[ok]; got != tt.want {
			t.Errorf("%s: last record %q (found %v), want %q", tt.name, st.ID, ok, tt.want)
		}
	}
}

// QueryIn returns records of the projects it is given only, reads nothing
// for none, and reads no more than its byte budget, saying what it left.
func TestQueryWithin(t *testing.T) {
	l, _ := filterLog(t)
	got := func(q api.AuditQuery, opts QueryOptions) (string, QueryResult) {
		var out []string
		res, err := l.QueryIn(t.Context(), q, opts, func(r *api.AuditRecord) bool {
			out = append(out, r.Message)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, " "), res
	}
	if s, _ := got(api.AuditQuery{}, QueryOptions{Projects: []string{"prod", "defaults"}}); s != "r2 r3 r6" {
		t.Errorf("projects prod and defaults: %q, want r2 r3 r6", s)
	}
	if s, _ := got(api.AuditQuery{Project: "default"}, QueryOptions{Projects: []string{"prod"}}); s != "" {
		t.Errorf("project default within prod only: %q, want nothing", s)
	}
	before := l.ScannedBytes()
	if s, res := got(api.AuditQuery{}, QueryOptions{Projects: []string{}}); s != "" || res.ScannedBytes != 0 || l.ScannedBytes() != before {
		t.Errorf("no project: %q after reading %d bytes, want nothing read", s, res.ScannedBytes)
	}

	// Several segments; a budget of about one reads the newest only.
	l2 := openLog(t, t.TempDir(), Options{SegmentBytes: 2 << 10})
	appendMsgs(t, l2, msgs("m", 0, 100)...)
	segs := l2.snapshot()
	if len(segs) < 4 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	res, err := l2.QueryIn(t.Context(), api.AuditQuery{}, QueryOptions{MaxScanBytes: 3 << 10}, func(*api.AuditRecord) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.ScannedBytes > 3<<10 || res.SearchedFrom.IsZero() {
		t.Errorf("query within 3 KiB of %d segments: %+v, want incomplete, at most 3 KiB read, and from when", len(segs), res)
	}
}
