// Package blobstore keeps files by their content: each file is named for
// its SHA-256, so two images with the same bytes share one file, and a
// file can be checked against its name. Adding a blob and recording who
// uses it happen under one lock, as do deciding that nobody uses a blob
// and removing it, so a blob is never removed under a use being recorded.
package blobstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Valid tells whether digest is a SHA-256 in lowercase hex, the only
// names blobs have.
func Valid(digest string) bool { return digestRE.MatchString(digest) }

// Store is a directory of blobs, under <dir>/sha256/.
type Store struct {
	dir string
	mu  sync.Mutex
}

// Open makes the store's directory if needed.
func Open(dir string) (*Store, error) {
	s := &Store{dir: filepath.Join(dir, "sha256")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the blob store %s: %w", s.dir, err)
	}
	return s, nil
}

// Path is where the blob of digest is (or would be); "" for a name that
// is not a digest.
func (s *Store) Path(digest string) string {
	if !Valid(digest) {
		return ""
	}
	return filepath.Join(s.dir, digest)
}

// Has tells whether the blob of digest is there.
func (s *Store) Has(digest string) bool {
	p := s.Path(digest)
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}

// Put moves src (on the store's filesystem, its SHA-256 being digest:
// the caller computed it) in as the blob of digest, or removes src when
// that blob is there already. Then, under the same lock, it runs record,
// which records the blob's new use; when record fails, a blob Put added
// is removed again and record's error returned.
func (s *Store) Put(src, digest string, record func() error) error {
	dst := s.Path(digest)
	if dst == "" {
		os.Remove(src)
		return fmt.Errorf("storing a blob: %q is not a SHA-256", digest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	added := false
	if _, err := os.Stat(dst); err == nil {
		os.Remove(src) // the same bytes are there already
	} else {
		if err := os.Rename(src, dst); err != nil {
			os.Remove(src)
			return fmt.Errorf("storing blob %s: %w", digest, err)
		}
		added = true
	}
	if err := record(); err != nil {
		if added {
			os.Remove(dst)
		}
		return err
	}
	return nil
}

// Remove removes the blob of digest unless used, asked under the lock,
// says something still uses it.
func (s *Store) Remove(digest string, used func() bool) error {
	p := s.Path(digest)
	if p == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if used() {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing blob %s: %w", digest, err)
	}
	return nil
}

// Sweep removes every blob keep (asked under the lock) does not want,
// and any file in the store that is not a blob, and returns the digests
// it removed.
func (s *Store) Sweep(keep func(digest string) bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading the blob store: %w", err)
	}
	var gone []string
	for _, e := range entries {
		name := e.Name()
		if Valid(name) && keep(name) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, name)); err == nil {
			gone = append(gone, name)
		}
	}
	return gone, nil
}
