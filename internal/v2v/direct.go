package v2v

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"

	"github.com/polyvisor/polyvisor/internal/images"
)

// Checkpoint modes of a streamed disk.
const (
	// modeDirect: the stream is a raw disk, written as it is read into
	// the destination qcow2 (<disk>.qcow2.part) through an NBD export.
	modeDirect = "direct"
	// modeStage: the stream is an image of another format (a VMDK, a
	// qcow2 volume...), staged whole, then checked and converted like an
	// image import.
	modeStage = "stage"
)

// errNotRaw: the stream is not a raw disk; it is staged instead.
var errNotRaw = errors.New("the stream is not a raw disk")

// contentDigest hashes a disk's contents chunk by chunk (streamChunk
// bytes from offset 0): the SHA-256 of the sequence of each chunk's
// SHA-256, 32 zero bytes standing for a chunk of zeros, which is thus
// not hashed. A stream and the disk read back hash alike when, and only
// when, every chunk is the same.
type contentDigest struct{ h hash.Hash }

func newContentDigest(state []byte) (*contentDigest, error) {
	d := &contentDigest{h: sha256.New()}
	if len(state) > 0 {
		if err := d.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
			return nil, fmt.Errorf("restoring the stream's digest: %w", err)
		}
	}
	return d, nil
}

// add hashes the next chunk; it tells whether the chunk is all zeros.
func (d *contentDigest) add(chunk []byte) (zero bool) {
	var sum [32]byte
	zero = allZero(chunk)
	if !zero {
		sum = sha256.Sum256(chunk)
	}
	d.h.Write(sum[:])
	return zero
}

// addZero hashes a chunk of zeros without looking at it.
func (d *contentDigest) addZero() {
	var sum [32]byte
	d.h.Write(sum[:])
}

func (d *contentDigest) state() ([]byte, error) {
	b, err := d.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("saving the stream's digest: %w", err)
	}
	return b, nil
}

func (d *contentDigest) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// directSize is the virtual size of the qcow2 a raw stream is written
// into: the stream's size, or, unknown, the disk's capacity; 0 when the
// stream cannot be a raw disk (not whole sectors).
func directSize(st Stream, capacity int64) int64 {
	v := st.Size()
	if v < 0 {
		v = capacity
	}
	if v <= 0 || v%512 != 0 {
		return 0
	}
	return v
}

// copyDirect writes a raw stream into the qcow2 part as it reads it:
// zero chunks are not written (the qcow2 leaves them unallocated),
// the content digest of the stream is kept as it goes, and every every
// bytes the qcow2 is flushed and the offset and digest state saved, so
// a restarted copy goes on from there. Then the qcow2 is read back once
// through the same export and its digest matched with the stream's.
// errNotRaw says the stream is not a raw disk (its first or last bytes
// are another format's): nothing of it is kept. A stream that begins
// with a VMDK's sparse extent header goes to copyVMDK.
func (c *Copier) copyDirect(ctx context.Context, p VMPlan, d DiskPlan, st Stream, ck *checkpoint, save func() error, every, maxDisk int64, part string) error {
	size := st.Size()
	v := directSize(st, d.From.CapacityBytes)
	if v == 0 && size > 0 {
		// Not whole sectors: not a raw disk, but maybe a VMDK's stream.
		return c.copyVMDK(ctx, p, d, st, ck, save, every, maxDisk, part, nil)
	}
	if v == 0 {
		return errNotRaw // of unknown length and capacity: staged
	}
	if v > maxDisk {
		return fmt.Errorf("source stream is %d bytes, over the limit of %d (the largest disk allowed): refused", v, maxDisk)
	}
	if capa := d.From.CapacityBytes; capa > 0 && v > capa+1<<20 {
		return fmt.Errorf("the image's virtual size of %d bytes is over the %d bytes its source declared: refused", v, capa)
	}
	if ck.Mode == modeDirect && (ck.StreamSize != size || ck.VirtualSize != v) {
		*ck = checkpoint{} // the source changed: start over
	}
	if _, err := os.Stat(part); ck.Offset > 0 && err != nil {
		*ck = checkpoint{} // the partial disk is gone
	}
	rc, err := st.Open(ctx, ck.Offset)
	if err != nil {
		return &resumable{fmt.Errorf("opening source stream at %d: %w", ck.Offset, err)}
	}
	ra := newReadAhead(rc, streamChunk)
	defer ra.Close()
	if ck.Offset == 0 {
		// Its first bytes tell whether it is a raw disk, as an image
		// import would detect it.
		head := ra.peek()
		if bytes.HasPrefix(head, []byte("KDMV")) {
			// A VMDK's sparse extent: a streamOptimized one is
			// written as it streams too, from this same read.
			return c.copyVMDK(ctx, p, d, st, ck, save, every, maxDisk, part, ra)
		}
		if !images.LooksRaw(head[:min(len(head), 4096)], nil) {
			return errNotRaw
		}
		if err := createPart(ctx, part, v); err != nil {
			return err
		}
		*ck = checkpoint{Mode: modeDirect, StreamSize: size, VirtualSize: v}
		if err := save(); err != nil {
			return err
		}
	}
	w, err := openPart(ctx, part, v, ck.Offset, ck, save)
	if err != nil {
		return err
	}
	defer w.exp.stop()
	m := newMeter(c.Progress, p.Name, d.Name, PhaseStream, ck.Offset, v)
	off, saved := ck.Offset, ck.Offset
	checkpointAt := func(off int64) error {
		return w.checkpoint(ck, save, func() { ck.Offset = off })
	}
	var tail []byte
	for off < v {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(int64(streamChunk), v-off)
		buf, rerr := ra.next(int(want))
		if int64(len(buf)) < want {
			// A short chunk is not taken: the next run reads it whole.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := checkpointAt(off); err != nil {
				return err
			}
			if rerr == nil || errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			return &resumable{fmt.Errorf("source stream broke at byte %d of %d: %w", off+int64(len(buf)), v, rerr)}
		}
		if err := w.put(buf, off); err != nil {
			return err
		}
		off += want
		if off == v {
			tail = append(tail, buf[len(buf)-512:]...)
		}
		ra.done(buf)
		m.set(off, false)
		if off-saved >= every && off < v {
			if err := checkpointAt(off); err != nil {
				return err
			}
			saved = off
		}
	}
	if size < 0 {
		// Of unknown length, sized by the disk's capacity: it must end there.
		if more, _ := ra.next(1); len(more) > 0 {
			return fmt.Errorf("source stream goes on past %d bytes, the disk's capacity, as a raw disk: refused", v)
		}
	}
	m.set(off, true)
	if !images.LooksRaw(nil, tail) {
		return errNotRaw // a fixed VHD, say: its footer is the last sector
	}
	if err := c.verifyPart(ctx, p, d, w, v, ck, save); err != nil {
		return err
	}
	ck.Offset = v
	return nil
}

// createPart makes the empty qcow2 of v bytes at part that a stream is
// written into (an earlier one is replaced).
func createPart(ctx context.Context, part string, v int64) error {
	_ = os.Remove(part)
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", part, strconv.FormatInt(v, 10)).CombinedOutput(); err != nil {
		return fmt.Errorf("creating the disk's qcow2: %w: %s", err, lastLine(out))
	}
	return nil
}

// partWriter writes a stream's chunks into the qcow2 part through its
// NBD export, keeping the content digest of what it was given.
type partWriter struct {
	exp *qcow2Export
	dg  *contentDigest
}

// openPart exports the qcow2 part of v bytes to write into it from the
// content offset from on, with the checkpoint's digest state: what lies
// past from was written after the last flush, or not, and is made zeros
// again. A part or a state that cannot be resumed resets the checkpoint
// (the next run starts over). The caller stops the export.
func openPart(ctx context.Context, part string, v, from int64, ck *checkpoint, save func() error) (*partWriter, error) {
	dg, err := newContentDigest(ck.Hash)
	if err != nil {
		*ck = checkpoint{}
		_ = save()
		return nil, &resumable{err}
	}
	exp, err := exportQCOW2(ctx, part)
	if err != nil {
		// Kept for the next run (a daemon of a killed run may still
		// hold the qcow2's lock for a moment).
		return nil, &resumable{err}
	}
	if exp.size != v {
		exp.stop()
		*ck = checkpoint{}
		_ = save()
		return nil, &resumable{fmt.Errorf("the partial disk is %d bytes, not %d: starting over on the next run", exp.size, v)}
	}
	if from > 0 {
		if err := exp.Zero(from, v); err != nil {
			exp.stop()
			return nil, err
		}
	}
	return &partWriter{exp: exp, dg: dg}, nil
}

// put hashes the chunk at content offset off and writes it unless it is
// all zeros (the qcow2 leaves those unallocated).
func (w *partWriter) put(chunk []byte, off int64) error {
	if w.dg.add(chunk) {
		return nil
	}
	return w.exp.WriteAt(chunk, off)
}

// checkpoint flushes the qcow2, then saves the checkpoint with the
// digest's state and what set records of where the copy is.
func (w *partWriter) checkpoint(ck *checkpoint, save func() error, set func()) error {
	if err := w.exp.Flush(); err != nil {
		return err
	}
	state, err := w.dg.state()
	if err != nil {
		return err
	}
	set()
	ck.Hash = state
	return save()
}

// verifyPart reads the qcow2 of v bytes back through its export and
// matches its content digest with the stream's, then flushes and stops
// the export; the checkpoint keeps the digest (StreamSHA256). A
// mismatch resets the checkpoint: the next run starts over.
func (c *Copier) verifyPart(ctx context.Context, p VMPlan, d DiskPlan, w *partWriter, v int64, ck *checkpoint, save func() error) error {
	want := w.dg.sum()
	got, err := c.readBack(ctx, p, d, w.exp, v)
	if err != nil {
		return err
	}
	if got != want {
		*ck = checkpoint{}
		_ = save()
		return fmt.Errorf("the written disk reads back as digest %s, the stream was %s: starting over on the next run", got, want)
	}
	if err := w.exp.Flush(); err != nil {
		return err
	}
	if err := w.exp.stop(); err != nil {
		return err
	}
	ck.Hash, ck.StreamSHA256 = nil, want
	return nil
}

// readBack reads the disk of v bytes back through the export once and
// returns its content digest. The chunks that the qcow2's own metadata
// says read as zeros (zeroRanges) are not read: QEMU answers them as
// zeros without reading anything either, and a chunk the stream had as
// zeros but that was written anyway is not among them.
func (c *Copier) readBack(ctx context.Context, p VMPlan, d DiskPlan, exp *qcow2Export, v int64) (string, error) {
	m := newMeter(c.Progress, p.Name, d.Name, PhaseVerify, 0, v)
	dg, _ := newContentDigest(nil)
	if err := exp.Flush(); err != nil {
		return "", err
	}
	zeros, err := zeroRanges(ctx, exp.path, v)
	if err != nil {
		return "", err
	}
	// Read in requests of several chunks: fewer round trips to the
	// daemon; the digest still goes chunk by chunk.
	buf := make([]byte, readBackRequest)
	for off := int64(0); off < v; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if end := min(off+streamChunk, v); zeros.cover(off, end) {
			dg.addZero()
			off = end
			m.set(off, off == v)
			continue
		}
		// The chunks from off up to the next zero one, in one read.
		n := min(int64(len(buf)), v-off)
		for k := int64(streamChunk); k < n; k += streamChunk {
			if zeros.cover(off+k, min(off+k+streamChunk, v)) {
				n = k
				break
			}
		}
		if err := exp.ReadAt(buf[:n], off); err != nil {
			return "", err
		}
		for b := buf[:n]; len(b) > 0; {
			k := min(len(b), streamChunk)
			dg.add(b[:k])
			b = b[k:]
		}
		off += n
		m.set(off, off == v)
	}
	return dg.sum(), nil
}

// extents are sorted, disjoint byte ranges [start, end).
type extents [][2]int64

// cover tells whether [a, b) lies within one of the ranges.
func (e extents) cover(a, b int64) bool {
	i, _ := slices.BinarySearchFunc(e, a, func(r [2]int64, a int64) int { return cmp.Compare(r[1], a+1) })
	return i < len(e) && e[i][0] <= a && b <= e[i][1]
}

// mapExtent is one extent of `qemu-img map --output=json`.
type mapExtent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Zero   bool  `json:"zero"`
}

// maxMapOutput bounds what qemu-img map may say of the qcow2 Polyvisor
// itself made: ~100 bytes an extent.
const maxMapOutput = 64 << 20

// zeroRanges are the ranges of the first v bytes of the qcow2 at path
// that read as zeros, by its metadata (`qemu-img map`, sharing the image
// with the daemon that has it open: the caller flushed it and writes
// nothing meanwhile), adjacent ones merged.
func zeroRanges(ctx context.Context, path string, v int64) (extents, error) {
	cmd := exec.CommandContext(ctx, "qemu-img", "map", "-U", "--output=json", "-f", "qcow2", path)
	out, errb := limitedBuffer{max: maxMapOutput}, limitedBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("mapping the written disk: %w: %s", err, lastLine(errb.b))
	}
	var m []mapExtent
	if out.over {
		return nil, nil // a map this long: every chunk is read
	}
	if err := json.Unmarshal(out.b, &m); err != nil {
		return nil, fmt.Errorf("reading the map of the written disk: %w", err)
	}
	slices.SortFunc(m, func(a, b mapExtent) int { return cmp.Compare(a.Start, b.Start) })
	var z extents
	for _, r := range m {
		if !r.Zero || r.Length <= 0 || r.Start < 0 || r.Start >= v {
			continue
		}
		end := min(r.Start+r.Length, v)
		if n := len(z); n > 0 && z[n-1][1] >= r.Start {
			z[n-1][1] = max(z[n-1][1], end)
			continue
		}
		z = append(z, [2]int64{r.Start, end})
	}
	return z, nil
}

// readBackRequest is what one read of the read-back asks the export
// for: whole chunks, within the NBD server's limit of 32 MiB.
const readBackRequest = 8 * streamChunk

// readAhead reads a stream in chunks in the background, a few ahead of
// the chunk being hashed and written, so that the source's stream and
// the disk's writes overlap.
type readAhead struct {
	rc    io.ReadCloser
	size  int
	ch    chan chunkRead
	free  chan []byte
	stop  chan struct{}
	spare []byte // a short chunk given back to next's caller whole
	// pending is the chunk peek read, next's to return.
	pending *chunkRead
}

type chunkRead struct {
	b   []byte
	err error
}

const readAheadChunks = 4

func newReadAhead(rc io.ReadCloser, size int) *readAhead {
	r := &readAhead{rc: rc, size: size, ch: make(chan chunkRead, readAheadChunks), free: make(chan []byte, readAheadChunks+1), stop: make(chan struct{})}
	for i := 0; i < readAheadChunks+1; i++ {
		r.free <- make([]byte, size)
	}
	go r.loop()
	return r
}

func (r *readAhead) loop() {
	defer close(r.ch)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
		n, err := io.ReadFull(r.rc, b)
		select {
		case r.ch <- chunkRead{b[:n], err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next want bytes (want at most the chunk size), fewer
// with the error that cut them short. The chunks the loop reads are
// whole; a caller that asks for less (the end of a disk) is given the
// rest of the last one on its next call.
func (r *readAhead) next(want int) ([]byte, error) {
	if r.spare != nil {
		b := r.spare
		r.spare = nil
		if len(b) >= want {
			if len(b) > want {
				r.spare = b[want:]
			}
			return b[:want], nil
		}
		return b, io.ErrUnexpectedEOF
	}
	c, ok := r.fetch()
	if !ok {
		return nil, io.EOF
	}
	if len(c.b) > want {
		r.spare = c.b[want:]
		return c.b[:want], nil
	}
	if len(c.b) < want && c.err == nil {
		c.err = io.ErrUnexpectedEOF
	}
	if len(c.b) == want {
		c.err = nil
	}
	return c.b, c.err
}

func (r *readAhead) fetch() (chunkRead, bool) {
	if r.pending != nil {
		c := *r.pending
		r.pending = nil
		return c, true
	}
	c, ok := <-r.ch
	return c, ok
}

// peek returns the first chunk without taking it (fewer bytes when the
// stream is shorter or broke).
func (r *readAhead) peek() []byte {
	c, ok := r.fetch()
	if !ok {
		return nil
	}
	r.pending = &c
	return c.b
}

// done gives a chunk's buffer back once it is written.
func (r *readAhead) done(b []byte) {
	if r.spare != nil || cap(b) < r.size {
		return // part of a chunk whose rest is still to be read
	}
	select {
	case r.free <- b[:r.size]:
	default:
	}
}

// Close stops the loop and closes the stream.
func (r *readAhead) Close() error {
	close(r.stop)
	err := r.rc.Close()
	for range r.ch {
	}
	return err
}
