package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CorruptError is the error of an embedded etcd whose database cannot be
// read: it names the file and says what to do.
type CorruptError struct {
	Path string // the database file
	Dir  string // the etcd data dir holding it
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("the embedded etcd database %s is damaged (%v); Polyvisor will not start on it. "+
		"Move %s aside, then restore the data dir from a backup, or restore an etcd snapshot into it "+
		"(etcdutl snapshot restore SNAPSHOT --name %s --data-dir %s); starting without it starts an empty store",
		e.Path, e.Err, e.Dir, embeddedName, e.Dir)
}

func (e *CorruptError) Unwrap() error { return e.Err }

func corruptError(etcdDir string, err error) error {
	return &CorruptError{Path: dbPath(etcdDir), Dir: etcdDir, Err: err}
}

// dbPath is where etcd keeps its database under its data dir.
func dbPath(etcdDir string) string { return filepath.Join(etcdDir, "member", "snap", "db") }

// checkDatabase reads the embedded etcd's database through, if it has one,
// before etcd opens it: a damaged page makes etcd panic, in goroutines no
// one can recover. It returns a *CorruptError for a database that cannot
// be read.
func checkDatabase(etcdDir string) error {
	path := dbPath(etcdDir)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking the etcd database %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return corruptError(etcdDir, errors.New("the file is empty"))
	}
	if err := readDatabase(path); err != nil {
		return corruptError(etcdDir, err)
	}
	return nil
}

// readDatabase opens a bbolt database read-only and visits every key of
// every bucket, which reads every branch and leaf page.
func readDatabase(path string) (err error) {
	// The file is read through a memory map: a page past its end faults,
	// which this goroutine turns into a panic, recovered here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reading it failed: %v", p)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("the file has %d bytes but its pages reach %d: it was cut short", fi.Size(), tx.Size())
		}
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walkBucket(b) })
	})
}

func walkBucket(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkBucket(nb)
			}
		}
		return nil
	})
}
