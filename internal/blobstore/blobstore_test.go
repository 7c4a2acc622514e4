package blobstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	d1 = "abcdef0000000000000000000000000000000000000000000000000000000001"
	d2 = "0000000000000000000000000000000000000000000000000000000000000002"
)

func file(t *testing.T, dir, content string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, ".src-*")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(content)
	f.Close()
	return f.Name()
}

// TestPutSharesRemoveCounts: a second Put of the same digest keeps one
// file; a failed record takes back the blob it added, not one that was
// there; Remove keeps a used blob and removes an unused one.
func TestPutSharesRemoveCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ok := func() error { return nil }
	if err := s.Put(file(t, dir, "one"), d1, ok); err != nil {
		t.Fatal(err)
	}
	src := file(t, dir, "one again")
	if err := s.Put(src, d1, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the second copy of a blob was kept")
	}
	if b, _ := os.ReadFile(s.Path(d1)); string(b) != "one" {
		t.Fatalf("blob holds %q, want the first copy", b)
	}
	boom := errors.New("record failed")
	if err := s.Put(file(t, dir, "x"), d1, func() error { return boom }); !errors.Is(err, boom) || !s.Has(d1) {
		t.Fatalf("a failed record of an existing blob: %v, still there %v; want the error and the blob kept", err, s.Has(d1))
	}
	if err := s.Put(file(t, dir, "two"), d2, func() error { return boom }); !errors.Is(err, boom) || s.Has(d2) {
		t.Fatalf("a failed record of a new blob: %v, still there %v; want it gone", err, s.Has(d2))
	}
	if err := s.Remove(d1, func() bool { return true }); err != nil || !s.Has(d1) {
		t.Fatalf("a used blob: %v, there %v", err, s.Has(d1))
	}
	if err := s.Remove(d1, func() bool { return false }); err != nil || s.Has(d1) {
		t.Fatalf("an unused blob: %v, there %v", err, s.Has(d1))
	}
}

// TestNamesAreDigests: a name that is not a SHA-256 never reaches the
// filesystem, and Sweep removes what is not wanted or not a blob.
func TestNamesAreDigests(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	for _, bad := range []string{"", "../../etc/passwd", strings.Repeat("G", 64), strings.ToUpper(d1), d1 + "/x"} {
		if s.Path(bad) != "" || s.Has(bad) {
			t.Fatalf("%q was taken for a digest", bad)
		}
		src := file(t, dir, "x")
		if err := s.Put(src, bad, func() error { return nil }); err == nil {
			t.Fatalf("Put named %q", bad)
		}
		if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Put of %q left its source", bad)
		}
	}
	s.Put(file(t, dir, "a"), d1, func() error { return nil })
	s.Put(file(t, dir, "b"), d2, func() error { return nil })
	os.WriteFile(filepath.Join(dir, "sha256", "stray"), nil, 0o600)
	gone, err := s.Sweep(func(d string) bool { return d == d2 })
	if err != nil || len(gone) != 2 || s.Has(d1) || !s.Has(d2) {
		t.Fatalf("sweep removed %v (%v); d1 there %v, d2 there %v", gone, err, s.Has(d1), s.Has(d2))
	}
}
