// Package usage keeps the utilization history of a host and its VMs: CPU
// (cores busy) and memory (bytes) per series, in fixed-size round-robin
// archives in the manner of RRD. Each series is one file whose size never
// changes after it is made: a 5-minute archive for four weeks and an
// hourly one for a year by default. Every sample updates one slot of each
// archive in place; a slot carries its own time and checksum, so a write
// torn by a crash costs that slot's point and nothing else, and nothing
// but the slots is ever rewritten.
package usage

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
)

// Archive is one round-robin archive: Rows consolidated points of Step.
type Archive struct {
	Step time.Duration
	Rows int
}

// DefaultArchives keep 5-minute points for 28 days and hourly points for
// 366 days.
var DefaultArchives = []Archive{{Step: 5 * time.Minute, Rows: 28 * 24 * 12}, {Step: time.Hour, Rows: 366 * 24}}

// Kinds of series.
const (
	KindHost = "host"
	KindVM   = "vm"
)

// MaxIDBytes bounds a series' id (a host's name or a VM's UID).
const MaxIDBytes = 512

const (
	magic      = "PVUSAGE1"
	headerSize = 4096
	slotSize   = 32
	maxRows    = 1 << 20
	fileSuffix = ".rrd"
)

// Options configure a Store.
type Options struct {
	// Archives default to DefaultArchives; each step a whole number of
	// seconds, each a multiple of the one before.
	Archives []Archive
	// MaxSeries bounds the files kept: making one more removes the series
	// written least recently. Default 4096.
	MaxSeries int
	// MaxOpen bounds the files held open. Default 64.
	MaxOpen int
}

// Store is a directory of series files.
type Store struct {
	dir  string
	opts Options

	mu     sync.Mutex
	open   map[string]*series // by file name
	nfiles int
}

// Point is one consolidated point: the mean and the largest of the
// samples that fell in [Time, Time+step).
type Point struct {
	Time        time.Time
	CPU         float64 // cores busy, mean
	CPUMax      float64
	MemoryBytes float64 // mean
	MemoryMax   float64
	Samples     int
}

// Open opens (making it if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Archives == nil {
		opts.Archives = DefaultArchives
	}
	if err := checkArchives(opts.Archives); err != nil {
		return nil, err
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = 4096
	}
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = 64
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the usage dir: %w", err)
	}
	s := &Store{dir: dir, opts: opts, open: map[string]*series{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the usage dir: %w", err)
	}
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".tmp"):
			_ = os.Remove(filepath.Join(dir, e.Name())) // a series being made when the process stopped
		case strings.HasSuffix(e.Name(), fileSuffix):
			s.nfiles++
		}
	}
	return s, nil
}

func checkArchives(as []Archive) error {
	if len(as) == 0 || len(as) > 8 {
		return errors.New("usage archives: from 1 to 8")
	}
	for i, a := range as {
		if a.Step < time.Second || a.Step%time.Second != 0 || a.Rows < 1 || a.Rows > maxRows {
			return fmt.Errorf("usage archive %d: step %s and rows %d: a whole number of seconds and 1 to %d rows", i, a.Step, a.Rows, maxRows)
		}
		if i > 0 && (a.Step <= as[i-1].Step || a.Step%as[i-1].Step != 0) {
			return fmt.Errorf("usage archive %d: step %s is not a multiple of %s", i, a.Step, as[i-1].Step)
		}
	}
	return nil
}

// SeriesBytes is the size on disk of one series with these archives.
func SeriesBytes(as []Archive) int64 {
	n := int64(headerSize)
	for _, a := range as {
		n += int64(a.Rows) * slotSize
	}
	return n
}

// fileName is the series' file: a hash of its kind and id, so that no
// name reaches the file system.
func fileName(kind, id string) string {
	h := sha256.Sum256([]byte(kind + "\x00" + id))
	return kind + "-" + hex.EncodeToString(h[:20]) + fileSuffix
}

func checkKey(kind, id string) error {
	if kind != KindHost && kind != KindVM {
		return fmt.Errorf("usage series kind %q: host or vm", kind)
	}
	if id == "" || len(id) > MaxIDBytes {
		return fmt.Errorf("usage series id: 1 to %d bytes", MaxIDBytes)
	}
	return nil
}

// Add records one sample at t into every archive of the series, making
// the series if it is new. A sample older than what a slot already holds
// is dropped.
func (s *Store) Add(kind, id string, t time.Time, cpu, memBytes float64) error {
	if err := checkKey(kind, id); err != nil {
		return err
	}
	if !finite(cpu) || !finite(memBytes) || cpu < 0 || memBytes < 0 {
		return fmt.Errorf("usage sample of %s %q: cpu %v, memory %v", kind, id, cpu, memBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sr, err := s.series(kind, id, true)
	if err != nil {
		return err
	}
	return sr.add(t.Unix(), float32(cpu), float32(memBytes))
}

// Query returns the points of the series whose steps overlap [since,
// until), from the
// finest archive that reaches back to since, merged into points of step
// when step is longer than the archive's. A series never written has no
// points.
func (s *Store) Query(kind, id string, since, until time.Time, step time.Duration) ([]Point, time.Duration, error) {
	if err := checkKey(kind, id); err != nil {
		return nil, 0, err
	}
	if !until.After(since) {
		return nil, 0, fmt.Errorf("usage query: until %s is not after since %s", until, since)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sr, err := s.series(kind, id, false)
	if err != nil || sr == nil {
		return nil, 0, err
	}
	a := s.opts.Archives[len(s.opts.Archives)-1]
	ai := len(s.opts.Archives) - 1
	for i, c := range s.opts.Archives {
		if !until.Add(-time.Duration(c.Rows) * c.Step).After(since) {
			a, ai = c, i
			break
		}
	}
	pts, err := sr.read(ai, since.Unix(), until.Unix())
	if err != nil {
		return nil, 0, err
	}
	if step <= a.Step {
		return pts, a.Step, nil
	}
	step = step.Truncate(a.Step)
	return merge(pts, step), step, nil
}

// merge consolidates points into longer steps.
func merge(pts []Point, step time.Duration) []Point {
	var out []Point
	for _, p := range pts {
		b := time.Unix(floorDiv(p.Time.Unix(), int64(step/time.Second))*int64(step/time.Second), 0).UTC()
		if n := len(out); n > 0 && out[n-1].Time.Equal(b) {
			o := &out[n-1]
			w := float64(o.Samples + p.Samples)
			o.CPU = (o.CPU*float64(o.Samples) + p.CPU*float64(p.Samples)) / w
			o.MemoryBytes = (o.MemoryBytes*float64(o.Samples) + p.MemoryBytes*float64(p.Samples)) / w
			o.CPUMax, o.MemoryMax = math.Max(o.CPUMax, p.CPUMax), math.Max(o.MemoryMax, p.MemoryMax)
			o.Samples += p.Samples
			continue
		}
		p.Time = b
		out = append(out, p)
	}
	return out
}

// Remove deletes a series.
func (s *Store) Remove(kind, id string) error {
	if err := checkKey(kind, id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fileName(kind, id)
	if sr, ok := s.open[name]; ok {
		_ = sr.f.Close()
		delete(s.open, name)
	}
	err := os.Remove(filepath.Join(s.dir, name))
	if err == nil {
		s.nfiles--
	} else if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return err
}

// Sync flushes the open series to disk.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sr := range s.open {
		errs = append(errs, sr.f.Sync())
	}
	return errors.Join(errs...)
}

// Close closes the store's files.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, sr := range s.open {
		errs = append(errs, sr.f.Close())
		delete(s.open, name)
	}
	return errors.Join(errs...)
}

// series returns the open series, opening or (with create) making it.
// A nil series without error means it does not exist.
func (s *Store) series(kind, id string, create bool) (*series, error) {
	name := fileName(kind, id)
	if sr, ok := s.open[name]; ok {
		return sr, nil
	}
	path := filepath.Join(s.dir, name)
	sr, err := openSeries(path, kind, id, s.opts.Archives)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, nil
		}
		if s.nfiles >= s.opts.MaxSeries {
			if err := s.evictOldest(); err != nil {
				return nil, err
			}
		}
		if err := makeSeries(path, kind, id, s.opts.Archives); err != nil {
			return nil, err
		}
		s.nfiles++
		sr, err = openSeries(path, kind, id, s.opts.Archives)
	}
	if err != nil {
		return nil, err
	}
	if len(s.open) >= s.opts.MaxOpen {
		for n, o := range s.open {
			_ = o.f.Close()
			delete(s.open, n)
			break
		}
	}
	s.open[name] = sr
	return sr, nil
}

// evictOldest removes the series written least recently.
func (s *Store) evictOldest() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("reading the usage dir: %w", err)
	}
	type fileAge struct {
		name string
		mod  time.Time
	}
	var files []fileAge
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), fileSuffix) {
			continue
		}
		if info, err := e.Info(); err == nil {
			files = append(files, fileAge{e.Name(), info.ModTime()})
		}
	}
	s.nfiles = len(files)
	if len(files) < s.opts.MaxSeries {
		return nil
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files[:len(files)-s.opts.MaxSeries+1] {
		if sr, ok := s.open[f.name]; ok {
			_ = sr.f.Close()
			delete(s.open, f.name)
		}
		if err := os.Remove(filepath.Join(s.dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the oldest usage series: %w", err)
		}
		s.nfiles--
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// header encodes a series' header: magic, archives, kind and id, CRC.
func header(kind, id string, as []Archive) []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	binary.LittleEndian.PutUint16(b[8:], uint16(len(as)))
	binary.LittleEndian.PutUint16(b[10:], uint16(len(kind)))
	binary.LittleEndian.PutUint16(b[12:], uint16(len(id)))
	off := 16
	for _, a := range as {
		binary.LittleEndian.PutUint32(b[off:], uint32(a.Step/time.Second))
		binary.LittleEndian.PutUint32(b[off+4:], uint32(a.Rows))
		off += 8
	}
	off += copy(b[off:], kind)
	copy(b[off:], id)
	binary.LittleEndian.PutUint32(b[headerSize-4:], crc32.ChecksumIEEE(b[:headerSize-4]))
	return b
}

// makeSeries writes a new series file whole (a sparse file of its final
// size) and renames it into place, so a crash leaves it made or absent.
func makeSeries(path, kind, id string, as []Archive) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".series.*.tmp")
	if err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(header(kind, id, as)); err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	if err := f.Truncate(SeriesBytes(as)); err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("making a usage series: %w", err)
	}
	ok = true
	return atomicfile.SyncDir(filepath.Dir(path))
}
