package v2v

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// modeVMDK: the stream is a streamOptimized VMDK, its grains
// decompressed and written into the destination qcow2 as they are read.
const modeVMDK = "vmdk-stream"

// errNotStreamable: the stream is not a streamOptimized VMDK that can be
// written as it is read (another format or subformat, a parent disk
// named, grains out of order); it is staged instead, and the image
// import's checks and qemu-img take it from there.
var errNotStreamable = errors.New("not a streamOptimized VMDK written as it streams")

// The VMDK sparse extent format (VMware's "Virtual Disk Format 5.0"):
// a 512-byte header, the embedded descriptor, then from overHead on
// sector-aligned markers: a grain (LBA, compressed size, zlib data) or
// metadata (size 0, a type, then val sectors of tables) up to the
// end-of-stream marker.
const (
	vmdkSector          = 512
	vmdkFlagCompressed  = 1 << 16
	vmdkFlagMarkers     = 1 << 17
	vmdkCompressDeflate = 1
	// A grain of up to a chunk lies within one; larger ones are staged.
	vmdkMaxGrainSectors = streamChunk / vmdkSector
	// What precedes the first marker: the header and the descriptor.
	vmdkMaxOverhead   = 16 << 20
	vmdkMaxDescriptor = 1 << 20

	vmdkGDAtEnd = ^uint64(0)

	vmdkMarkerEOS    = 0
	vmdkMarkerGT     = 1
	vmdkMarkerGD     = 2
	vmdkMarkerFooter = 3
)

// vmdkHeader is what the copy takes of a SparseExtentHeader, checked.
type vmdkHeader struct {
	capacity   int64 // bytes
	grain      int64 // bytes
	descOffset int64 // bytes
	descSize   int64 // bytes
	overhead   int64 // bytes: the first marker's offset
	// tablesAtEnd: the grain directory is at the end (GD_AT_END), after
	// the grains, with the footer and the end-of-stream marker, as
	// VMware streams it; otherwise it is in the header's area (as
	// qemu-img writes a streamOptimized VMDK) and no such marker need
	// end the stream.
	tablesAtEnd bool
}

// parseVMDKHeader checks a streamOptimized VMDK's header against the
// largest disk allowed: errNotStreamable for a header that is not one
// (or one this copy leaves to staging), a clear error for one that is
// but cannot be a sane disk.
func parseVMDKHeader(b []byte, maxDisk int64) (vmdkHeader, error) {
	if len(b) < vmdkSector || string(b[:4]) != "KDMV" {
		return vmdkHeader{}, fmt.Errorf("%w: no VMDK sparse extent header", errNotStreamable)
	}
	le := binary.LittleEndian
	version, flags := le.Uint32(b[4:]), le.Uint32(b[8:])
	capacity, grain := le.Uint64(b[12:]), le.Uint64(b[20:])
	descOffset, descSize := le.Uint64(b[28:]), le.Uint64(b[36:])
	gd, overhead := le.Uint64(b[56:]), le.Uint64(b[64:])
	compress := le.Uint16(b[77:])
	if version < 1 || version > 3 || flags&(vmdkFlagCompressed|vmdkFlagMarkers) != vmdkFlagCompressed|vmdkFlagMarkers || compress != vmdkCompressDeflate {
		return vmdkHeader{}, fmt.Errorf("%w: VMDK header version %d, flags %#x, compressAlgorithm %d", errNotStreamable, version, flags, compress)
	}
	if capacity == 0 || capacity > uint64(maxDisk)/vmdkSector {
		return vmdkHeader{}, fmt.Errorf("VMDK header: capacity of %d sectors is 0 or over the limit of %d bytes (the largest disk allowed): refused", capacity, maxDisk)
	}
	if grain == 0 || grain&(grain-1) != 0 {
		return vmdkHeader{}, fmt.Errorf("VMDK header: grainSize of %d sectors is not a power of two: refused", grain)
	}
	if grain > vmdkMaxGrainSectors {
		return vmdkHeader{}, fmt.Errorf("%w: VMDK grainSize of %d sectors is over %d", errNotStreamable, grain, vmdkMaxGrainSectors)
	}
	if overhead < 1 || overhead > vmdkMaxOverhead/vmdkSector {
		return vmdkHeader{}, fmt.Errorf("VMDK header: overHead of %d sectors is not within 1 to %d: refused", overhead, vmdkMaxOverhead/vmdkSector)
	}
	if descOffset == 0 {
		// No embedded descriptor to check for a parent disk: the image
		// import's checks, which look as QEMU does, take it.
		return vmdkHeader{}, fmt.Errorf("%w: a VMDK header without an embedded descriptor", errNotStreamable)
	}
	// Compared without a sum that could wrap round.
	if descOffset > overhead || descSize > vmdkMaxDescriptor/vmdkSector || descSize > overhead-descOffset {
		return vmdkHeader{}, fmt.Errorf("VMDK header: descriptor of %d sectors at sector %d does not lie within the overHead of %d sectors: refused", descSize, descOffset, overhead)
	}
	return vmdkHeader{
		capacity: int64(capacity) * vmdkSector, grain: int64(grain) * vmdkSector,
		descOffset: int64(descOffset) * vmdkSector, descSize: int64(descSize) * vmdkSector,
		overhead: int64(overhead) * vmdkSector, tablesAtEnd: gd == vmdkGDAtEnd,
	}, nil
}

// checkVMDKDescriptor leaves to staging (and the image import's
// refusal of backing files) a descriptor that is not a streamOptimized
// disk's or that names a parent disk.
func checkVMDKDescriptor(desc []byte) error {
	text := string(bytes.TrimRight(desc, "\x00"))
	streamOpt := false
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		switch {
		case k == "createType":
			streamOpt = strings.EqualFold(v, "streamOptimized")
		case k == "parentCID" && !strings.EqualFold(v, "ffffffff"), strings.HasPrefix(k, "parentFileNameHint"):
			return fmt.Errorf("%w: the VMDK descriptor names a parent disk (%s)", errNotStreamable, k)
		}
	}
	if !streamOpt {
		return fmt.Errorf("%w: the VMDK descriptor's createType is not streamOptimized", errNotStreamable)
	}
	return nil
}

// vmdkReader reads a VMDK stream sequentially, counting its offset and
// refusing to go past limit.
type vmdkReader struct {
	r     io.Reader
	pos   int64
	limit int64
}

// errPastLimit: the stream is longer than its disk can make it.
var errPastLimit = errors.New("the VMDK stream goes on past its limit (the disk's capacity and the format's overhead)")

func (v *vmdkReader) full(b []byte) error {
	if v.pos+int64(len(b)) > v.limit {
		return fmt.Errorf("%w of %d bytes: refused", errPastLimit, v.limit)
	}
	n, err := io.ReadFull(v.r, b)
	v.pos += int64(n)
	return err
}

func (v *vmdkReader) skip(n int64) error {
	if n > v.limit-v.pos {
		return fmt.Errorf("%w of %d bytes: refused", errPastLimit, v.limit)
	}
	k, err := io.CopyN(io.Discard, v.r, n)
	v.pos += k
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// aheadReader reads a readAhead's chunks as a byte stream. The end of
// the stream is io.EOF; a stream that broke gives its error.
type aheadReader struct {
	ra  *readAhead
	cur []byte
	buf []byte
	err error
}

func (a *aheadReader) Read(p []byte) (int, error) {
	if len(a.cur) == 0 {
		if a.buf != nil {
			a.ra.done(a.buf)
			a.buf = nil
		}
		if a.err != nil {
			return 0, a.err
		}
		b, err := a.ra.next(streamChunk)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF // a short last chunk: the stream's end
		}
		a.cur, a.buf, a.err = b, b, err
		if len(b) == 0 {
			return 0, a.err
		}
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// copyVMDK writes a streamOptimized VMDK stream into the qcow2 part as
// it reads it: each grain is decompressed (at most a grain's bytes) and
// gathered into the same chunks as a raw stream's, in disk order; chunks
// with data are written, the chunks between them are zeros, and the
// content digest is kept as copyDirect keeps it. At chunk boundaries,
// every every bytes of the stream, the qcow2 is flushed and the
// checkpoint saved (the offset of the grain marker that begins the next
// chunk, that chunk's disk offset, the digest state), so that a
// restarted copy opens the stream there. The disk is read back as
// copyDirect's is. errNotStreamable: staged instead (nothing kept).
//
// ra, when not nil, is the stream already opened at 0 (by copyDirect,
// which saw its header); the copy then starts at 0.
func (c *Copier) copyVMDK(ctx context.Context, p VMPlan, d DiskPlan, st Stream, ck *checkpoint, save func() error, every, maxDisk int64, part string, ra *readAhead) error {
	size := st.Size()
	if ra != nil || ck.Mode != modeVMDK || ck.StreamSize != size || ck.Offset%vmdkSector != 0 || ck.ContentOffset%streamChunk != 0 ||
		ck.ContentOffset < 0 || ck.ContentOffset >= ck.VirtualSize || ck.GrainSize <= 0 || ck.GrainSize > streamChunk {
		*ck = checkpoint{} // a new copy, or a source that changed: start over
	}
	if _, err := os.Stat(part); ck.Offset > 0 && err != nil {
		*ck = checkpoint{} // the partial disk is gone
	}
	if ra == nil {
		rc, err := st.Open(ctx, ck.Offset)
		if err != nil {
			return &resumable{fmt.Errorf("opening source stream at %d: %w", ck.Offset, err)}
		}
		ra = newReadAhead(rc, streamChunk)
		defer ra.Close()
	}
	in := &vmdkReader{r: &aheadReader{ra: ra}, pos: ck.Offset}
	if ck.Offset == 0 {
		if err := c.startVMDK(ctx, d, in, size, maxDisk, ck, part); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	v, grain := ck.VirtualSize, ck.GrainSize
	in.limit = stageLimit(maxDisk, v)
	if size > in.limit {
		return fmt.Errorf("source stream is %d bytes, over the limit of %d (the disk's capacity and the format's overhead): refused", size, in.limit)
	}
	w, err := openPart(ctx, part, v, ck.ContentOffset, ck, save)
	if err != nil {
		return err
	}
	defer w.exp.stop()
	m := newMeter(c.Progress, p.Name, d.Name, PhaseStream, ck.ContentOffset, v)

	// off is the disk offset of the chunk being gathered in chunk
	// (filled once a grain is in it), begun by the marker at chunkAt;
	// next the end of the last grain: the next one must lie past it.
	chunk := make([]byte, streamChunk)
	off, next, filled := ck.ContentOffset, ck.ContentOffset, false
	chunkAt, saved := ck.Offset, ck.Offset
	resumeAt := int64(-1) // a resumed copy's first marker, a grain's of the chunk at off
	if ck.Offset > 0 {
		resumeAt = ck.Offset
	}
	chunkLen := func(off int64) int64 { return min(int64(streamChunk), v-off) }
	// flush writes the chunk gathered and counts the chunks of zeros
	// up to the one at to.
	flush := func(to int64) error {
		if filled {
			if err := w.put(chunk[:chunkLen(off)], off); err != nil {
				return err
			}
			clear(chunk)
			filled = false
			off += chunkLen(off)
		}
		for ; off < to; off += chunkLen(off) {
			w.dg.addZero()
		}
		m.set(off, false)
		return nil
	}
	broke := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			switch {
			case size >= 0 && in.pos < size:
				err = io.ErrUnexpectedEOF // broke: resumed below
			case ck.VMDKTablesAtEnd:
				return fmt.Errorf("the VMDK stream ends at byte %d before its end-of-stream marker: refused", in.pos)
			case size < 0:
				// Its grain tables were in its header: an end without
				// the marker may be a cut. qemu-img reads the tables.
				return fmt.Errorf("%w: the VMDK stream of unknown length ends at byte %d without an end-of-stream marker", errNotStreamable, in.pos)
			default:
				return fmt.Errorf("the VMDK stream ends at byte %d, inside a marker or a grain: refused", in.pos)
			}
		}
		if errors.Is(err, errPastLimit) {
			return err
		}
		// What was gathered of the chunk at off is read again from its
		// first marker on the next run.
		if chunkAt > 0 {
			if cerr := w.checkpoint(ck, save, func() { ck.Offset, ck.ContentOffset = chunkAt, off }); cerr != nil {
				return cerr
			}
		}
		return &resumable{fmt.Errorf("source stream broke at byte %d: %w", in.pos, err)}
	}
	grainBuf := make([]byte, grain)
	var comp []byte
	var zr io.ReadCloser
	var marker [vmdkSector]byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// All of a stream whose tables are in its header, as qemu-img
		// writes it, ends with its last grain (and its padding, or not):
		// no end-of-stream marker need follow.
		whole := func() bool { return in.pos == size && !ck.VMDKTablesAtEnd }
		if whole() {
			return c.endVMDK(ctx, p, d, w, v, ck, save, flush, m)
		}
		if pad := (vmdkSector - in.pos%vmdkSector) % vmdkSector; pad > 0 {
			if err := in.skip(pad); err != nil && !whole() {
				return broke(err)
			}
			if whole() {
				return c.endVMDK(ctx, p, d, w, v, ck, save, flush, m)
			}
		}
		at := in.pos
		if err := in.full(marker[:12]); err != nil {
			return broke(err)
		}
		val, n := binary.LittleEndian.Uint64(marker[:]), binary.LittleEndian.Uint32(marker[8:])
		if n == 0 && at != resumeAt {
			if err := in.full(marker[12:]); err != nil {
				return broke(err)
			}
			switch typ := binary.LittleEndian.Uint32(marker[12:]); typ {
			case vmdkMarkerEOS:
				return c.endVMDK(ctx, p, d, w, v, ck, save, flush, m)
			case vmdkMarkerGT, vmdkMarkerGD, vmdkMarkerFooter:
				if val > uint64(in.limit)/vmdkSector {
					return fmt.Errorf("%w of %d bytes: the metadata marker at byte %d spans %d sectors: refused", errPastLimit, in.limit, at, val)
				}
				if err := in.skip(int64(val) * vmdkSector); err != nil {
					return broke(err)
				}
				continue
			default:
				return fmt.Errorf("the VMDK marker at byte %d is of unknown type %d: refused", at, typ)
			}
		}
		if at == resumeAt && (n == 0 || val >= uint64(v)/vmdkSector || val%uint64(grain/vmdkSector) != 0 || int64(val)*vmdkSector&^(streamChunk-1) != off) {
			// A source that does not send the same bytes again (one
			// that compresses differently on each export).
			*ck = checkpoint{}
			_ = save()
			return &resumable{fmt.Errorf("the VMDK stream at its checkpoint (byte %d) is not the grain marker it was there: starting over on the next run", at)}
		}
		if int64(n) > grain+grain/64+1024 {
			return fmt.Errorf("the VMDK grain at byte %d is %d bytes compressed, over the bound of %d for a grain of %d bytes: refused", at, n, grain+grain/64+1024, grain)
		}
		if val >= uint64(v)/vmdkSector {
			return fmt.Errorf("the VMDK grain at byte %d is at sector %d, outside the disk's %d sectors: refused", at, val, v/vmdkSector)
		}
		g := int64(val) * vmdkSector
		if g%grain != 0 {
			return fmt.Errorf("the VMDK grain at byte %d is at sector %d, not at a grain's boundary (%d sectors): refused", at, val, grain/vmdkSector)
		}
		if g < next {
			return fmt.Errorf("%w: the VMDK grain at sector %d comes after grains past it (not in disk order)", errNotStreamable, val)
		}
		if cap(comp) < int(n) {
			comp = make([]byte, n)
		}
		comp = comp[:n] // the data follows the 12-byte marker
		if err := in.full(comp); err != nil {
			return broke(err)
		}
		got, err := inflateGrain(&zr, comp, grainBuf)
		if err != nil {
			return fmt.Errorf("the VMDK grain at sector %d: %w: refused", val, err)
		}
		if cs := g &^ (streamChunk - 1); cs > off {
			if err := flush(cs); err != nil {
				return err
			}
		}
		if !filled {
			chunkAt = at
			if at-saved >= every {
				if err := w.checkpoint(ck, save, func() { ck.Offset, ck.ContentOffset = at, off }); err != nil {
					return err
				}
				saved = at
			}
		}
		data := grainBuf[:got]
		if end := g + int64(len(data)); end > v {
			if !allZero(data[v-g:]) {
				return fmt.Errorf("the VMDK grain at sector %d holds data past the disk's capacity of %d bytes: refused", val, v)
			}
			data = data[:v-g]
		}
		copy(chunk[g-off:], data)
		filled = true
		next = g + grain
	}
}

// startVMDK reads a fresh stream's header and descriptor up to its
// first marker, checks them against the disk, and creates the qcow2
// part; the checkpoint then says the copy is a VMDK's at its first
// marker.
func (c *Copier) startVMDK(ctx context.Context, d DiskPlan, in *vmdkReader, size, maxDisk int64, ck *checkpoint, part string) error {
	var head [vmdkSector]byte
	in.limit = vmdkMaxOverhead
	if err := in.full(head[:]); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: reading its header: %v", errNotStreamable, err)
	}
	h, err := parseVMDKHeader(head[:], maxDisk)
	if err != nil {
		return err
	}
	if capa := d.From.CapacityBytes; capa > 0 && h.capacity > capa+1<<20 {
		return fmt.Errorf("the image's virtual size of %d bytes is over the %d bytes its source declared: refused", h.capacity, capa)
	}
	readErr := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &resumable{fmt.Errorf("source stream broke at byte %d, in the VMDK's descriptor: %w", in.pos, err)}
	}
	if h.descOffset > 0 {
		if err := in.skip(h.descOffset - in.pos); err != nil {
			return readErr(err)
		}
		desc := make([]byte, h.descSize)
		if err := in.full(desc); err != nil {
			return readErr(err)
		}
		if err := checkVMDKDescriptor(desc); err != nil {
			return err
		}
	}
	if err := in.skip(h.overhead - in.pos); err != nil {
		return readErr(err)
	}
	if err := createPart(ctx, part, h.capacity); err != nil {
		return err
	}
	*ck = checkpoint{Mode: modeVMDK, StreamSize: size, VirtualSize: h.capacity, GrainSize: h.grain, VMDKTablesAtEnd: h.tablesAtEnd}
	return nil
}

// endVMDK ends the copy at the end-of-stream marker: the last chunk
// written, the rest of the disk zeros, then read back as copyDirect's.
func (c *Copier) endVMDK(ctx context.Context, p VMPlan, d DiskPlan, w *partWriter, v int64, ck *checkpoint, save func() error, flush func(int64) error, m *meter) error {
	if err := flush(v); err != nil {
		return err
	}
	m.set(v, true)
	return c.verifyPart(ctx, p, d, w, v, ck, save)
}

// inflateGrain decompresses a grain's zlib data into buf (a grain's
// bytes) and says how many bytes it holds. Data that inflates to more
// than a grain is refused without inflating more than a byte past it.
func inflateGrain(zr *io.ReadCloser, comp, buf []byte) (int, error) {
	src := bytes.NewReader(comp)
	if *zr == nil {
		r, err := zlib.NewReader(src)
		if err != nil {
			return 0, fmt.Errorf("inflating: %w", err)
		}
		*zr = r
	} else if err := (*zr).(zlib.Resetter).Reset(src, nil); err != nil {
		return 0, fmt.Errorf("inflating: %w", err)
	}
	n := 0
	for n < len(buf) {
		k, err := (*zr).Read(buf[n:])
		n += k
		if errors.Is(err, io.EOF) {
			return n, nil // a grain shorter than its size (the disk's last)
		}
		if err != nil {
			return 0, fmt.Errorf("inflating: %w", err)
		}
	}
	var one [1]byte
	if k, err := io.ReadFull(*zr, one[:]); k > 0 {
		return 0, fmt.Errorf("inflates to more than the grain's %d bytes", len(buf))
	} else if !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("inflating: %w", err)
	}
	return n, nil
}
