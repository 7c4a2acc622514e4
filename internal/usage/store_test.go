package usage

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var small = []Archive{{Step: 5 * time.Minute, Rows: 12}, {Step: time.Hour, Rows: 48}}

func openSmall(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Archives: small})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func TestDownsampling(t *testing.T) {
	s := openSmall(t, t.TempDir())
	// One sample a minute for 3 hours: CPU is the minute's index mod 5,
	// memory the hour's index (in GiB).
	for m := 0; m < 180; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		if err := s.Add(KindVM, "uid-1", at, float64(m%5), float64(m/60)*(1<<30)); err != nil {
			t.Fatal(err)
		}
	}
	end := t0.Add(3 * time.Hour)
	// The 5-minute archive holds the last hour: 12 points, mean 2, max 4.
	pts, step, err := s.Query(KindVM, "uid-1", end.Add(-time.Hour), end, 0)
	if err != nil {
		t.Fatal(err)
	}
	if step != 5*time.Minute || len(pts) != 12 {
		t.Fatalf("last hour: step %s, %d points, want 5m and 12", step, len(pts))
	}
	for _, p := range pts {
		if p.Samples != 5 || p.CPU != 2 || p.CPUMax != 4 || p.MemoryBytes != 2<<30 {
			t.Fatalf("5-minute point %+v: want 5 samples, cpu mean 2 max 4, memory 2 GiB", p)
		}
	}
	if !pts[0].Time.Equal(t0.Add(2*time.Hour)) || !pts[11].Time.Equal(t0.Add(2*time.Hour+55*time.Minute)) {
		t.Errorf("5-minute points from %s to %s", pts[0].Time, pts[11].Time)
	}
	// Three hours back is past the 5-minute archive: the hourly one answers.
	pts, step, err = s.Query(KindVM, "uid-1", t0, end, 0)
	if err != nil {
		t.Fatal(err)
	}
	if step != time.Hour || len(pts) != 3 {
		t.Fatalf("3 hours: step %s, %d points", step, len(pts))
	}
	for i, p := range pts {
		if p.Samples != 60 || p.CPU != 2 || p.MemoryBytes != float64(i)*(1<<30) || p.MemoryMax != float64(i)*(1<<30) {
			t.Errorf("hour %d: %+v", i, p)
		}
	}
	// A longer step merges points, weighted by their samples.
	pts, step, err = s.Query(KindVM, "uid-1", t0, end, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if step != 2*time.Hour || len(pts) != 2 || pts[0].Samples != 120 || pts[0].MemoryBytes != 0.5*(1<<30) || pts[1].MemoryMax != 2<<30 {
		t.Errorf("2-hour points: step %s %+v", step, pts)
	}
	// The 5-minute ring wraps: points older than its hour are gone from
	// it, not shown at a wrong time.
	pts, _, _ = s.Query(KindVM, "uid-1", end.Add(-50*time.Minute), end, 0)
	if len(pts) != 10 || !pts[0].Time.Equal(end.Add(-50*time.Minute)) {
		t.Errorf("last 50 minutes: %d points from %v", len(pts), pts[0].Time)
	}
}

func TestOldSampleDoesNotOverwriteNewer(t *testing.T) {
	s := openSmall(t, t.TempDir())
	_ = s.Add(KindHost, "h1", t0.Add(2*time.Hour), 3, 100)
	// An hour earlier maps to the same 5-minute slot (12 rows of 5 min).
	if err := s.Add(KindHost, "h1", t0.Add(time.Hour), 7, 100); err != nil {
		t.Fatal(err)
	}
	pts, _, _ := s.Query(KindHost, "h1", t0.Add(2*time.Hour), t0.Add(2*time.Hour+time.Second), 0)
	if len(pts) != 1 || pts[0].CPU != 3 {
		t.Errorf("the newer point was overwritten: %+v", pts)
	}
}

func TestBoundedSize(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Archives: small, MaxSeries: 3, MaxOpen: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := SeriesBytes(small)
	if want != 4096+60*32 {
		t.Fatalf("series bytes %d", want)
	}
	for i := 0; i < 5; i++ {
		id := strings.Repeat("x", i+1)
		for m := 0; m < 2000; m += 7 { // far more samples than slots
			if err := s.Add(KindVM, id, t0.Add(time.Duration(m)*time.Minute), 1, 1); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		_ = os.Chtimes(filepath.Join(dir, fileName(KindVM, id)), now, now.Add(time.Duration(i)*time.Second))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Fatalf("%d files, MaxSeries is 3", len(ents))
	}
	for _, e := range ents {
		info, _ := e.Info()
		if info.Size() != want {
			t.Errorf("%s: %d bytes, want %d", e.Name(), info.Size(), want)
		}
	}
	// The two written first were removed.
	if pts, _, _ := s.Query(KindVM, "x", t0, t0.Add(48*time.Hour), 0); len(pts) != 0 {
		t.Errorf("the oldest series is still there")
	}
	if pts, _, _ := s.Query(KindVM, "xxxxx", t0, t0.Add(33*time.Hour), 0); len(pts) == 0 {
		t.Errorf("the newest series is gone")
	}
	if d := DefaultArchives; SeriesBytes(d) != 4096+(8064+8784)*32 {
		t.Errorf("default series bytes %d", SeriesBytes(d))
	}
}

func TestHostileIDsAreNotPaths(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir)
	for _, id := range []string{"../../etc/passwd", "/abs", "a/b", "..", "nul\x00byte", strings.Repeat("é", 200)} {
		if err := s.Add(KindVM, id, t0, 1, 1); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if pts, _, err := s.Query(KindVM, id, t0, t0.Add(time.Second), 0); err != nil || len(pts) != 1 {
			t.Errorf("id %q: %v %v", id, pts, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "vm-") || !strings.HasSuffix(e.Name(), ".rrd") || len(e.Name()) != len("vm-")+40+4 {
			t.Errorf("file %q", e.Name())
		}
	}
	if len(ents) != 6 {
		t.Errorf("%d files for 6 ids", len(ents))
	}
	for _, bad := range []struct{ kind, id string }{{"vm", ""}, {"vm", strings.Repeat("a", MaxIDBytes+1)}, {"../x", "a"}} {
		if err := s.Add(bad.kind, bad.id, t0, 1, 1); err == nil {
			t.Errorf("kind %q id of %d bytes taken", bad.kind, len(bad.id))
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), -1} {
		if err := s.Add(KindVM, "a", t0, v, 1); err == nil {
			t.Errorf("cpu %v taken", v)
		}
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, Options{Archives: small})
	for m := 0; m < 30; m++ {
		_ = s.Add(KindHost, "h1", t0.Add(time.Duration(m)*time.Minute), 1.5, 1<<20)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openSmall(t, dir)
	pts, _, err := s2.Query(KindHost, "h1", t0, t0.Add(30*time.Minute), 0)
	if err != nil || len(pts) != 6 || pts[0].CPU != 1.5 {
		t.Fatalf("after a restart: %+v %v", pts, err)
	}
	// Writing goes on into the same buckets.
	_ = s2.Add(KindHost, "h1", t0.Add(29*time.Minute+30*time.Second), 1.5, 1<<20)
	pts, _, _ = s2.Query(KindHost, "h1", t0.Add(25*time.Minute), t0.Add(30*time.Minute), 0)
	if len(pts) != 1 || pts[0].Samples != 6 {
		t.Errorf("the bucket after the restart: %+v", pts)
	}
	// Other archives are refused, not misread.
	if _, err := Open(dir, Options{Archives: []Archive{{Step: time.Minute, Rows: 10}}}); err != nil {
		t.Fatal(err)
	}
	s3, _ := Open(dir, Options{Archives: []Archive{{Step: time.Minute, Rows: 10}}})
	if _, _, err := s3.Query(KindHost, "h1", t0, t0.Add(time.Second), 0); err == nil || !strings.Contains(err.Error(), "other archives") {
		t.Errorf("a series read with other archives: %v", err)
	}
}

func TestCrashMidWrite(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, Options{Archives: small})
	for m := 0; m < 20; m++ {
		_ = s.Add(KindVM, "u", t0.Add(time.Duration(m)*time.Minute), 2, 4)
	}
	s.Close()
	path := filepath.Join(dir, fileName(KindVM, "u"))
	// A write torn after its first bytes: the 5-minute slot of minute 15
	// has a new time but the old rest.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	off := int64(headerSize) + 3*slotSize
	_, _ = f.WriteAt([]byte{0x99, 0x99}, off)
	f.Close()
	// And a series being made when the process stopped.
	_ = os.WriteFile(filepath.Join(dir, ".series.123.tmp"), []byte("half"), 0o600)

	s2 := openSmall(t, dir)
	pts, _, err := s2.Query(KindVM, "u", t0, t0.Add(19*time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 3 || !pts[2].Time.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("after a torn slot: %+v, want the 3 whole points before it", pts)
	}
	hours, _, _ := s2.Query(KindVM, "u", t0, t0.Add(19*time.Minute), time.Hour)
	if len(hours) != 1 || hours[0].Samples != 15 {
		t.Errorf("the hourly archive merged from 5-minute points: %+v", hours)
	}
	// The torn slot takes new samples.
	if err := s2.Add(KindVM, "u", t0.Add(16*time.Minute), 2, 4); err != nil {
		t.Fatal(err)
	}
	pts, _, _ = s2.Query(KindVM, "u", t0.Add(15*time.Minute), t0.Add(19*time.Minute), 0)
	if len(pts) != 1 || pts[0].Samples != 1 {
		t.Errorf("the torn slot after a new sample: %+v", pts)
	}
	if _, err := os.Stat(filepath.Join(dir, ".series.123.tmp")); err == nil {
		t.Errorf("a half-made series is left")
	}
}

func TestRecorderRates(t *testing.T) {
	s := openSmall(t, t.TempDir())
	r := NewRecorder(s, "h1")
	ctx := context.Background()
	round := func(m int, a, b float64) {
		t.Helper()
		if err := r.Round(ctx, t0.Add(time.Duration(m)*time.Minute), []VMSample{{UID: "a", CPUSeconds: a, MemoryBytes: 100}, {UID: "b", CPUSeconds: b, MemoryBytes: 50}}); err != nil {
			t.Fatal(err)
		}
	}
	round(0, 0, 1000)
	round(1, 60, 1030)  // a: 1 core, b: 0.5
	round(2, 180, 1060) // a: 2 cores, b: 0.5
	round(3, 240, 10)   // b restarted: no point for it
	pts, _, _ := s.Query(KindVM, "a", t0, t0.Add(5*time.Minute), 0)
	if len(pts) != 1 || pts[0].Samples != 3 || math.Abs(pts[0].CPU-4.0/3) > 1e-6 || pts[0].CPUMax != 2 {
		t.Errorf("vm a: %+v", pts)
	}
	pts, _, _ = s.Query(KindVM, "b", t0, t0.Add(5*time.Minute), 0)
	if len(pts) != 1 || pts[0].Samples != 2 || pts[0].CPU != 0.5 {
		t.Errorf("vm b: %+v", pts)
	}
	// The host sums its VMs in the rounds where each added a point: not
	// the first (no VM had a count yet), nor the one where b restarted.
	pts, _, _ = s.Query(KindHost, "h1", t0, t0.Add(5*time.Minute), 0)
	if len(pts) != 1 || pts[0].Samples != 2 || pts[0].CPUMax != 2.5 || pts[0].MemoryMax != 150 {
		t.Errorf("host: %+v", pts)
	}
	if d := Mean(pts); d.Points != 1 || math.Abs(d.CPU-(1.5+2.5)/2) > 1e-6 || d.MemoryBytes != 150 {
		t.Errorf("host mean %+v", d)
	}
	// A host with no VM running adds zeros.
	_ = r.Round(ctx, t0.Add(10*time.Minute), nil)
	if pts, _, _ = s.Query(KindHost, "h1", t0.Add(10*time.Minute), t0.Add(11*time.Minute), 0); len(pts) != 1 || pts[0].CPU != 0 {
		t.Errorf("an idle host: %+v", pts)
	}
}
