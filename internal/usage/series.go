package usage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"time"
)

// series is one open series file.
type series struct {
	f    *os.File
	as   []Archive
	offs []int64 // where each archive's slots start
	// last is, per archive, the slot last written and where: the next
	// sample most often falls in it, and needs no read.
	last    []slot
	lastOff []int64
}

// slot is one consolidated point as stored: its bucket's start (Unix
// seconds; 0 is empty), the samples in it, sums and maxima, and a CRC over
// the rest.
type slot struct {
	t              int64
	n              uint32
	cpuSum, cpuMax float32
	memSum, memMax float32
}

func (s slot) encode(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], uint64(s.t))
	binary.LittleEndian.PutUint32(b[8:], s.n)
	binary.LittleEndian.PutUint32(b[16:], math.Float32bits(s.cpuSum))
	binary.LittleEndian.PutUint32(b[20:], math.Float32bits(s.cpuMax))
	binary.LittleEndian.PutUint32(b[24:], math.Float32bits(s.memSum))
	binary.LittleEndian.PutUint32(b[28:], math.Float32bits(s.memMax))
	binary.LittleEndian.PutUint32(b[12:], slotCRC(b))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func slotCRC(b []byte) uint32 {
	c := crc32.Checksum(b[0:12], castagnoli)
	return crc32.Update(c, castagnoli, b[16:slotSize])
}

// decodeSlot reads a slot; ok is false for an empty or torn one.
func decodeSlot(b []byte) (slot, bool) {
	s := slot{
		t:      int64(binary.LittleEndian.Uint64(b[0:])),
		n:      binary.LittleEndian.Uint32(b[8:]),
		cpuSum: math.Float32frombits(binary.LittleEndian.Uint32(b[16:])),
		cpuMax: math.Float32frombits(binary.LittleEndian.Uint32(b[20:])),
		memSum: math.Float32frombits(binary.LittleEndian.Uint32(b[24:])),
		memMax: math.Float32frombits(binary.LittleEndian.Uint32(b[28:])),
	}
	if s.n == 0 || binary.LittleEndian.Uint32(b[12:]) != slotCRC(b) {
		return slot{}, false
	}
	return s, true
}

// openSeries opens a series file and checks that it is the series asked
// for, with these archives.
func openSeries(path, kind, id string, as []Archive) (*series, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	want := header(kind, id, as)
	got := make([]byte, headerSize)
	if _, err := f.ReadAt(got, 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("reading the usage series of %s %q: %w", kind, id, err)
	}
	if !bytes.Equal(got, want) {
		_ = f.Close()
		return nil, fmt.Errorf("usage series of %s %q: the file %s holds another series or other archives", kind, id, path)
	}
	if info, err := f.Stat(); err != nil || info.Size() != SeriesBytes(as) {
		_ = f.Close()
		return nil, fmt.Errorf("usage series of %s %q: the file %s is not %d bytes", kind, id, path, SeriesBytes(as))
	}
	sr := &series{f: f, as: as, last: make([]slot, len(as)), lastOff: make([]int64, len(as))}
	off := int64(headerSize)
	for _, a := range as {
		sr.offs = append(sr.offs, off)
		off += int64(a.Rows) * slotSize
	}
	return sr, nil
}

// add adds a sample to the slot of its bucket in every archive.
func (sr *series) add(t int64, cpu, mem float32) error {
	var b [slotSize]byte
	for i, a := range sr.as {
		step := int64(a.Step / time.Second)
		bucket := floorDiv(t, step) * step
		off := sr.offs[i] + (floorDiv(bucket, step)%int64(a.Rows)+int64(a.Rows))%int64(a.Rows)*slotSize
		s, ok := sr.last[i], sr.lastOff[i] == off && sr.last[i].n > 0
		if !ok {
			if _, err := sr.f.ReadAt(b[:], off); err != nil {
				return fmt.Errorf("reading a usage slot: %w", err)
			}
			s, ok = decodeSlot(b[:])
		}
		switch {
		case ok && s.t > bucket:
			continue // the slot already holds a later bucket
		case !ok || s.t != bucket:
			s = slot{t: bucket}
		}
		s.n++
		s.cpuSum += cpu
		s.memSum += mem
		s.cpuMax = max(s.cpuMax, cpu)
		s.memMax = max(s.memMax, mem)
		s.encode(b[:])
		sr.lastOff[i] = 0
		if _, err := sr.f.WriteAt(b[:], off); err != nil {
			return fmt.Errorf("writing a usage slot: %w", err)
		}
		sr.last[i], sr.lastOff[i] = s, off
	}
	return nil
}

// read returns the points of archive i whose buckets overlap [since,
// until), by time.
func (sr *series) read(i int, since, until int64) ([]Point, error) {
	a := sr.as[i]
	step := int64(a.Step / time.Second)
	last := floorDiv(until-1, step) * step
	first := floorDiv(since, step) * step
	if lo := last - (int64(a.Rows)-1)*step; first < lo {
		first = lo
	}
	n := (last-first)/step + 1
	if n <= 0 {
		return nil, nil
	}
	buf := make([]byte, int64(a.Rows)*slotSize)
	if _, err := sr.f.ReadAt(buf, sr.offs[i]); err != nil {
		return nil, fmt.Errorf("reading a usage archive: %w", err)
	}
	out := make([]Point, 0, n)
	for k := int64(0); k < n; k++ {
		bucket := first + k*step
		idx := (floorDiv(bucket, step)%int64(a.Rows) + int64(a.Rows)) % int64(a.Rows)
		s, ok := decodeSlot(buf[idx*slotSize : (idx+1)*slotSize])
		if !ok || s.t != bucket || bucket < floorDiv(since, step)*step {
			continue
		}
		out = append(out, Point{
			Time: time.Unix(bucket, 0).UTC(), Samples: int(s.n),
			CPU: float64(s.cpuSum) / float64(s.n), CPUMax: float64(s.cpuMax),
			MemoryBytes: float64(s.memSum) / float64(s.n), MemoryMax: float64(s.memMax),
		})
	}
	return out, nil
}
