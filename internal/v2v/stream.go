package v2v

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Stream is a disk read through its hypervisor's API: its bytes as the
// source stores them (a raw or qcow2 volume's file, a VMDK), from any
// offset, so that an interrupted read resumes.
type Stream interface {
	// Size is the stream's length in bytes.
	Size() int64
	// Open reads the stream from offset to its end.
	Open(ctx context.Context, offset int64) (io.ReadCloser, error)
}

// Streams opens the stream of a disk whose source is SourceStream.
type Streams func(ctx context.Context, vm string, d Disk) (Stream, error)

// streamChunk is what one read and write of a stream moves; an all-zero
// chunk is not written (the staged file stays sparse).
const streamChunk = 1 << 20

// stageLimit bounds what a disk's stream may hold: its capacity (or the
// largest disk allowed) and the format's overhead beyond it: a
// VMDK's grain markers, sector padding and tables, a qcow2's metadata.
func stageLimit(maxDisk, capacity int64) int64 {
	base := maxDisk
	if capacity > 0 && capacity < maxDisk {
		base = capacity
	}
	if base > math.MaxInt64/2 {
		return math.MaxInt64 / 2
	}
	return base + base/16 + 4<<20
}

// resumable is a failure a later run resumes from (the source's stream
// could not be opened or broke): what was staged is kept.
type resumable struct{ err error }

func (e *resumable) Error() string { return e.err.Error() }
func (e *resumable) Unwrap() error { return e.err }

// stage reads st into the file dst from the checkpoint's offset on,
// saving the checkpoint every every bytes (synced), then reads dst back
// and matches its SHA-256 against the stream's. A stream longer than
// limit bytes is refused as soon as it is seen to be, known size or not.
func stage(ctx context.Context, st Stream, dst string, ck *checkpoint, save func() error, every, limit int64, m *meter) error {
	size := st.Size()
	unknown := size < 0 // read to its end
	if size == 0 {
		return errors.New("source stream is empty")
	}
	if size > limit {
		return fmt.Errorf("source stream is %d bytes, over the limit of %d (the disk's capacity and the format's overhead, at most the largest disk allowed): refused", size, limit)
	}
	h := sha256.New()
	if ck.StreamSize != size || !unknown && ck.Offset > size {
		*ck = checkpoint{StreamSize: size, Mode: ck.Mode}
	}
	if ck.Offset > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(ck.Hash); err != nil {
			*ck = checkpoint{StreamSize: size, Mode: ck.Mode}
			h.Reset()
		}
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening staged disk: %w", err)
	}
	defer f.Close()
	// What lies past the checkpoint was written after its last sync.
	if err := f.Truncate(ck.Offset); err != nil {
		return fmt.Errorf("truncating staged disk to its checkpoint: %w", err)
	}
	m.from, m.p.Resumed = ck.Offset, ck.Offset
	rc, err := st.Open(ctx, ck.Offset)
	if err != nil {
		return &resumable{fmt.Errorf("opening source stream at %d: %w", ck.Offset, err)}
	}
	defer rc.Close()
	buf := make([]byte, streamChunk)
	off, saved := ck.Offset, ck.Offset
	checkpointAt := func(off int64) error {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("syncing staged disk: %w", err)
		}
		state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return fmt.Errorf("saving stream hash: %w", err)
		}
		ck.Offset, ck.Hash = off, state
		return save()
	}
	for unknown || off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := int64(len(buf))
		if !unknown {
			want = min(want, size-off)
		} else {
			want = min(want, limit+1-off) // one byte past the limit tells
		}
		n, rerr := io.ReadFull(rc, buf[:want])
		if n > 0 {
			h.Write(buf[:n])
			if !allZero(buf[:n]) {
				if _, err := f.WriteAt(buf[:n], off); err != nil {
					return fmt.Errorf("writing staged disk: %w", err)
				}
			}
			off += int64(n)
			m.set(off, false)
		}
		if off > limit {
			return fmt.Errorf("source stream goes on past %d bytes, the limit (the disk's capacity and the format's overhead, at most the largest disk allowed): refused", limit)
		}
		if unknown && (errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)) {
			size = off
			break
		}
		if rerr != nil && (unknown || off < size) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Keep what was read: the next run resumes here.
			if err := checkpointAt(off); err != nil {
				return err
			}
			return &resumable{fmt.Errorf("source stream broke at byte %d: %w", off, rerr)}
		}
		if off-saved >= every && (unknown || off < size) {
			if err := checkpointAt(off); err != nil {
				return err
			}
			saved = off
		}
	}
	if size <= 0 {
		return errors.New("source stream is empty")
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("sizing staged disk: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing staged disk: %w", err)
	}
	m.p.Total = size
	m.set(off, true)
	want := hex.EncodeToString(h.Sum(nil))
	got, err := fileSHA256(ctx, dst)
	if err != nil {
		return err
	}
	if got != want {
		*ck = checkpoint{Mode: ck.Mode}
		_ = save()
		return fmt.Errorf("staged disk reads back as SHA-256 %s, the stream was %s: starting over on the next run", got, want)
	}
	ck.Offset, ck.Hash, ck.Staged, ck.StreamSHA256 = size, nil, true, want
	return save()
}

func allZero(b []byte) bool {
	var zero [4096]byte
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// fileSHA256 is the hex SHA-256 of the file at path.
func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading back %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", fmt.Errorf("reading back %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
