package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// filledStore makes an embedded store in a new data dir, writes enough
// keys to spread over many pages, and closes it.
func filledStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(testCtx(t), Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	val := strings.Repeat("v", 1000)
	for i := range 2000 {
		if _, err := s.Client().Put(testCtx(t), fmt.Sprintf("/polyvisor/v1/vms/k%05d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rootPageOf returns the offset of the root page of bucket name.
func rootPageOf(t *testing.T, path, name string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var off int64
	if err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("no bucket %s", name)
		}
		if b.RootPage() == 0 {
			return fmt.Errorf("bucket %s is inline", name)
		}
		off = int64(b.RootPage()) * int64(db.Info().PageSize)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return off
}

// A damaged database gives one clear error naming the file and what to do,
// not a panic. (etcd panicked with a Go trace.)
func TestCorruptDatabase(t *testing.T) {
	pageSize := int64(os.Getpagesize())
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"meta pages overwritten", func(t *testing.T, path string) {
			writeAt(t, path, 0, make([]byte, 2*pageSize))
		}},
		{"keys' root page overwritten", func(t *testing.T, path string) {
			junk := make([]byte, pageSize)
			rand.Read(junk)
			writeAt(t, path, rootPageOf(t, path, "key"), junk)
		}},
		{"file cut short", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/8/pageSize*pageSize); err != nil {
				t.Fatal(err)
			}
		}},
		{"file empty", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filledStore(t)
			db := filepath.Join(dir, "etcd", "member", "snap", "db")
			tc.damage(t, db)
			s, err := Open(testCtx(t), Config{DataDir: dir, Logger: testLogger(t)})
			if err == nil {
				s.Close()
				t.Fatal("the store opened on a damaged database")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Path != db {
				t.Fatalf("Open: %v; want a CorruptError naming %s", err, db)
			}
			for _, want := range []string{db, "snapshot restore", "backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// The data dir is free again: the lock was released.
			if s, err := Open(context.Background(), Config{DataDir: dir, Logger: testLogger(t)}); err == nil || strings.Contains(err.Error(), "in use") {
				if s != nil {
					s.Close()
				}
				t.Errorf("opening again: %v", err)
			}
		})
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
