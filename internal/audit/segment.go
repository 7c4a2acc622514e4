package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

const (
	segmentPrefix = "audit-"
	segmentSuffix = ".jsonl"
	startDigits   = 20
)

// segment is what the log keeps in memory about one segment file.
type segment struct {
	start  int64 // Unix nanoseconds, from the file name
	size   int64 // bytes of whole records (for the last segment, synced ones)
	newest int64 // Unix nanoseconds of its newest record, start if none
	lastID int64 // nanoseconds of its last record's ID, if known
	// firstSeq and lastSeq are the sequence numbers of its first and last
	// records (0: none, or written before records had them); lastHash is
	// the hash of its last record's line ("" if it has none).
	firstSeq, lastSeq uint64
	lastHash          string
}

// stamp is the part of a record the log itself reads back.
type stamp struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Seq  uint64    `json:"seq"`
}

func segmentName(start int64) string {
	return fmt.Sprintf("%s%0*d%s", segmentPrefix, startDigits, start, segmentSuffix)
}

// parseSegmentName returns the start of a segment file name.
func parseSegmentName(name string) (int64, bool) {
	digits, ok := strings.CutPrefix(name, segmentPrefix)
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, segmentSuffix)
	if !ok || len(digits) != startDigits {
		return 0, false
	}
	start, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || start < 0 {
		return 0, false
	}
	return start, true
}

func (l *Log) path(start int64) string {
	return pathIn(l.dir, start)
}

func pathIn(dir string, start int64) string {
	return filepath.Join(dir, segmentName(start))
}

func sortSegments(segs []segment) {
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(a.start, b.start) })
}

// prepareDir creates the log's directory, or narrows its mode to 0700.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating audit directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking audit directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("opening audit directory %s: not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restricting audit directory %s: %w", dir, err)
		}
	}
	return nil
}

// syncDir makes the directory entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening audit directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing audit directory %s: %w", dir, err)
	}
	return nil
}

// loadSegments lists the segments of dir, oldest first. It reads the last
// record of each older segment, and the whole newest one, which it cuts
// back to its last well-formed record.
func loadSegments(ctx context.Context, dir string, log *slog.Logger) ([]segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing audit directory %s: %w", dir, err)
	}
	var segs []segment
	for _, e := range entries {
		if start, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, segment{start: start})
		}
	}
	sortSegments(segs)
	for i := range segs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("opening audit log %s: %w", dir, err)
		}
		s := &segs[i]
		path := filepath.Join(dir, segmentName(s.start))
		if i == len(segs)-1 {
			err = repairSegment(ctx, path, s, log)
		} else {
			err = readSegmentEnd(path, s)
		}
		if err != nil {
			return nil, err
		}
	}
	return segs, nil
}

// readSegmentEnd fills in the size, newest record, last ID and sequence
// numbers of a segment that is no longer written to, from its first and
// last well-formed records.
func readSegmentEnd(path string, s *segment) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening audit segment %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading audit segment %s: %w", path, err)
	}
	s.size, s.newest = fi.Size(), s.start
	st, line, ok, err := lastStamp(f, s.size)
	if err != nil {
		return fmt.Errorf("reading audit segment %s: %w", path, err)
	}
	if ok {
		s.newest = max(s.start, st.Time.UnixNano())
		s.lastID = idNanos(st.ID)
		s.lastSeq, s.lastHash = st.Seq, lineHash(line)
	}
	lr := newLineReader(io.NewSectionReader(f, 0, s.size))
	for range 16 { // the first well-formed record, not far from the start
		line, _, complete, err := lr.next()
		if err != nil {
			break
		}
		var st stamp
		if complete && json.Unmarshal(line, &st) == nil && !st.Time.IsZero() {
			s.firstSeq = st.Seq
			break
		}
	}
	return nil
}

// lastStamp finds the last complete, well-formed record among the size
// first bytes of f, reading backwards in growing windows, and returns it
// with its line.
func lastStamp(f io.ReaderAt, size int64) (stamp, []byte, bool, error) {
	window := min(size, 64<<10)
	for window > 0 {
		buf := make([]byte, window)
		if _, err := f.ReadAt(buf, size-window); err != nil {
			return stamp{}, nil, false, err
		}
		whole := window == size
		for {
			end := bytes.LastIndexByte(buf, '\n')
			if end < 0 {
				break
			}
			buf = buf[:end]
			begin := bytes.LastIndexByte(buf, '\n')
			if begin < 0 && !whole {
				break // the line may begin before the window
			}
			var st stamp
			if json.Unmarshal(buf[begin+1:], &st) == nil && !st.Time.IsZero() {
				return st, buf[begin+1:], true, nil
			}
		}
		if whole || window >= 4*maxRecordBytes {
			break
		}
		window = min(size, window*4)
	}
	return stamp{}, nil, false, nil
}

// repairSegment reads the newest segment through, and truncates it after
// its last complete, well-formed record: what follows is a write the
// process did not finish, which was never acknowledged.
func repairSegment(ctx context.Context, path string, s *segment, log *slog.Logger) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening audit segment %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading audit segment %s: %w", path, err)
	}
	s.newest = s.start
	var off, good int64
	lr := newLineReader(f)
	for i := 0; ; i++ {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("reading audit segment %s: %w", path, err)
			}
		}
		line, n, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading audit segment %s: %w", path, err)
		}
		off += int64(n)
		var st stamp
		if !complete || json.Unmarshal(line, &st) != nil || st.Time.IsZero() {
			continue
		}
		good = off
		s.newest = max(s.newest, st.Time.UnixNano())
		s.lastID = idNanos(st.ID)
		if s.lastHash == "" {
			s.firstSeq = st.Seq
		}
		s.lastSeq, s.lastHash = st.Seq, lineHash(line)
	}
	s.size = good
	if good == fi.Size() {
		return nil
	}
	log.Warn("audit segment ends with an incomplete record; cutting it off",
		"segment", path, "bytes", fi.Size()-good)
	if err := f.Truncate(good); err != nil {
		return fmt.Errorf("truncating audit segment %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing audit segment %s: %w", path, err)
	}
	return nil
}

// lineReader reads newline-ended lines of any length, giving up on the
// content (not the position) of lines longer than a record may be.
type lineReader struct {
	r    *bufio.Reader
	long []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line without its newline and the bytes it took.
// complete is false for a line without a newline (at the end) or too long
// to be a record, whose content is then not returned. The line is valid
// until the next call. At the end, next returns io.EOF.
func (lr *lineReader) next() (line []byte, n int, complete bool, err error) {
	lr.long = lr.long[:0]
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		n += len(chunk)
		if !tooLong && (err != nil || len(lr.long) > 0) {
			if len(lr.long)+len(chunk) > maxRecordBytes {
				tooLong, lr.long = true, lr.long[:0]
			} else {
				lr.long = append(lr.long, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, n, false, nil
			}
			if len(lr.long) > 0 {
				chunk = lr.long
			}
			return chunk[:len(chunk)-1], n, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && n > 0:
			return nil, n, false, nil
		default:
			return nil, n, false, err
		}
	}
}

// retain deletes the oldest segments while they hold nothing newer than
// MaxAge, never the last one, and notes each removal in the log. Size
// never removes a record younger than MaxAge: past MaxBytes the log raises
// an alarm (and, with WhenFull "refuse", refuses records) instead.
func (l *Log) retain(ctx context.Context) error {
	cutoff := l.now().Add(-l.opts.MaxAge).UnixNano()
	l.mu.Lock()
	k := 0
	for ; k < len(l.segs)-1; k++ {
		if l.opts.MaxAge <= 0 || l.segs[k].newest >= cutoff {
			break
		}
	}
	drop := slices.Clone(l.segs[:k])
	l.segs = slices.Delete(l.segs, 0, k)
	l.updateFullLocked()
	l.mu.Unlock()

	var errs []error
	for i, s := range drop {
		if err := ctx.Err(); err != nil {
			// Forgotten but not removed: the next Open finds them again.
			errs = append(errs, fmt.Errorf("pruning audit log %s: %d segments left: %w", l.dir, len(drop)-i, err))
			break
		}
		path := l.path(s.start)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing audit segment %s: %w", path, err))
			continue
		}
		newest := time.Unix(0, s.newest).UTC()
		l.log.Info("audit segment removed by retention", "segment", path, "bytes", s.size, "newest", newest)
		rec := &api.AuditRecord{
			Actor: systemActor, Action: "audit.prune", Outcome: api.AuditSuccess,
			Resource: api.Ref{Kind: "audit-segment", Name: segmentName(s.start)},
			Removed:  &api.AuditSpan{Segment: segmentName(s.start), End: s.size, FromSeq: s.firstSeq, ToSeq: s.lastSeq},
			Last:     newest,
			Message: fmt.Sprintf("segment %s removed by retention: %d bytes, records %d to %d, the newest from %s, older than %v",
				segmentName(s.start), s.size, s.firstSeq, s.lastSeq, newest.Format(time.RFC3339), l.opts.MaxAge),
		}
		l.mu.Lock()
		l.sys = append(l.sys, rec)
		l.mu.Unlock()
	}
	return errors.Join(errs...)
}
