package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// withTemp runs fn with the path of a new empty temporary file next to
// dst, then publishes the file as dst: by a hard link, which never
// replaces an existing dst, or, with replace, by a rename over it. The
// temporary file is always removed; dst changes only if fn and the
// publication succeed.
func withTemp(dst string, replace bool, fn func(tmp string) error) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating image directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Close(); err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	if err := fn(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o640); err != nil {
		return fmt.Errorf("storing %s: %w", dst, err)
	}
	if replace {
		err = os.Rename(tmp, dst)
	} else {
		err = os.Link(tmp, dst)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("storing %s: destination already exists", dst)
	}
	if err != nil {
		return fmt.Errorf("storing %s: %w", dst, err)
	}
	if err := syncDir(dir); err != nil {
		if !replace {
			_ = os.Remove(dst)
		}
		return fmt.Errorf("storing %s: %w", dst, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// hashAndSync reads the file at path to compute its SHA-256 and size, and
// fsyncs it.
func hashAndSync(ctx context.Context, path string, progress func(done, total int64)) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("hashing image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("hashing image: %w", err)
	}
	h := sha256.New()
	n, err := copyCtx(ctx, h, f, fi.Size(), progress)
	if err != nil {
		return "", 0, fmt.Errorf("hashing image: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("syncing image: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// copyToFile writes r to the existing file at path, returning the SHA-256
// of what it wrote and its size, and fsyncs the file.
func copyToFile(ctx context.Context, path string, r io.Reader, total int64, progress func(done, total int64)) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, io.MultiWriter(f, h), r, total, progress)
	if err != nil {
		return "", n, err
	}
	if err := f.Sync(); err != nil {
		return "", n, err
	}
	if err := f.Close(); err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// copyCtx copies r to w in chunks, stopping when ctx ends and reporting
// progress against total (which may be 0 when unknown).
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, total int64, progress func(done, total int64)) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			if progress != nil {
				progress(n, total)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// fileBytes is what the file at path takes: the larger of its apparent
// size and its allocated blocks; 0 when it cannot be read.
func fileBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	n := fi.Size()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		n = max(n, st.Blocks*512)
	}
	return n
}
