package audit

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Defaults of Options.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultMaxAge       = 90 * 24 * time.Hour
	DefaultSegmentBytes = 16 << 20
)

const (
	// maxRecordBytes bounds one encoded record, newline included.
	maxRecordBytes = 1 << 20
	// maxBatch bounds the records written with one sync.
	maxBatch = 1024
	// clockSlack is how far back the clock may step and still have record
	// stamps nudged forward past the last one.
	clockSlack = time.Minute
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit log closed")

// Options bounds the log. Zero fields take the defaults; a negative MaxBytes
// or MaxAge turns that limit off.
type Options struct {
	// MaxBytes bounds the total size of the segments kept (default 256 MiB).
	MaxBytes int64
	// MaxAge is how long records are kept (default 90 days).
	MaxAge time.Duration
	// SegmentBytes is the size at which a new segment is started (default
	// 16 MiB).
	SegmentBytes int64
}

func (o Options) withDefaults() Options {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	return o
}

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu   sync.Mutex
	segs []segment // oldest first; the last one is written to

	sendMu sync.RWMutex // held to send on reqs, and to close it
	closed bool
	reqs   chan *request
	done   chan struct{} // closed when the writer has stopped

	// Owned by the writer goroutine (and by Open before it starts).
	cur       *os.File // the last segment, nil until one is created
	curSize   int64
	lastNanos int64
	buf       []byte
	closeErr  error

	syncs atomic.Int64 // file syncs made for records
}

type request struct {
	rec  api.AuditRecord
	err  error
	done chan error
}

// Open opens the audit log kept in dir, creating it if needed. It repairs a
// partial last record left by a crash, applies retention, and starts the
// goroutine that writes appended records; Close stops it.
func Open(ctx context.Context, dir string, opts Options, log *slog.Logger) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		dir:  dir,
		opts: opts.withDefaults(),
		log:  log,
		now:  time.Now,
		reqs: make(chan *request, maxBatch),
		done: make(chan struct{}),
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	segs, err := loadSegments(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	l.segs = segs
	if n := len(segs); n > 0 {
		for _, s := range segs {
			l.lastNanos = max(l.lastNanos, s.lastID)
		}
		last := segs[n-1]
		f, err := os.OpenFile(l.path(last.start), os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening audit segment %s: %w", l.path(last.start), err)
		}
		l.cur, l.curSize = f, last.size
	}
	if err := l.retain(ctx); err != nil {
		log.Warn("audit retention failed", "dir", dir, "err", err)
	}
	go l.run()
	return l, nil
}

// Append stamps rec with a new ID, and with the current time if its Time is
// zero (a Time given is kept, in UTC), and returns once the record is
// synced to disk. If ctx ends first Append returns its error, and the record
// may or may not be in the log; rec is then left as it was.
func (l *Log) Append(ctx context.Context, rec *api.AuditRecord) error {
	if rec == nil {
		return errors.New("appending audit record: nil record")
	}
	r := &request{rec: *rec, done: make(chan error, 1)}
	l.sendMu.RLock()
	if l.closed {
		l.sendMu.RUnlock()
		return ErrClosed
	}
	select {
	case l.reqs <- r:
		l.sendMu.RUnlock()
	case <-ctx.Done():
		l.sendMu.RUnlock()
		return fmt.Errorf("appending audit record: %w", ctx.Err())
	}
	select {
	case err := <-r.done:
		if err != nil {
			return err
		}
		rec.ID, rec.Time = r.rec.ID, r.rec.Time
		return nil
	case <-ctx.Done():
		return fmt.Errorf("appending audit record: %w", ctx.Err())
	}
}

// Prune deletes the segments retention no longer keeps. The server calls it
// periodically, so that age applies even when nothing is appended.
func (l *Log) Prune(ctx context.Context) error {
	return l.retain(ctx)
}

// Close writes the records already appended and stops the log. Calls after
// the first do nothing.
func (l *Log) Close() error {
	l.sendMu.Lock()
	if l.closed {
		l.sendMu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.sendMu.Unlock()
	<-l.done
	return l.closeErr
}

// run is the writer goroutine: it takes every request waiting, writes and
// syncs them together, and answers each.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*request, 0, maxBatch)
	for r := range l.reqs {
		batch = append(batch[:0], r)
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		l.writeBatch(batch)
		for _, r := range batch {
			r.done <- r.err
		}
		clear(batch)
	}
	if l.cur != nil {
		if err := l.cur.Close(); err != nil {
			l.closeErr = fmt.Errorf("closing audit segment %s: %w", l.cur.Name(), err)
		}
		l.cur = nil
	}
}

// writeBatch writes a batch of records, starting new segments as they fill,
// and sets each request's error.
func (l *Log) writeBatch(batch []*request) {
	now := l.now()
	pending := make([]*request, 0, len(batch)) // encoded in l.buf, not yet written
	var newest int64
	l.buf = l.buf[:0]
	for _, r := range batch {
		n := l.stamp(now)
		r.rec.ID = newID(n)
		if r.rec.Time.IsZero() {
			r.rec.Time = time.Unix(0, n).UTC()
		} else {
			r.rec.Time = r.rec.Time.UTC()
		}
		line, err := json.Marshal(&r.rec)
		if err != nil {
			r.err = fmt.Errorf("encoding audit record: %w", err)
			continue
		}
		if len(line)+1 > maxRecordBytes {
			r.err = fmt.Errorf("appending audit record: %d bytes encoded, more than the %d allowed", len(line)+1, maxRecordBytes)
			continue
		}
		if l.cur == nil || l.curSize+int64(len(l.buf)) >= l.opts.SegmentBytes {
			l.flush(pending, newest)
			pending, newest = pending[:0], 0
			if err := l.rotate(r.rec.Time); err != nil {
				r.err = err
				continue
			}
		}
		l.buf = append(append(l.buf, line...), '\n')
		pending = append(pending, r)
		newest = max(newest, r.rec.Time.UnixNano())
	}
	l.flush(pending, newest)
}

// flush writes the encoded records of pending to the current segment and
// syncs it, then makes them visible to queries. On failure the segment is
// given up, so that the next record starts a new one after the last good
// byte of this one.
func (l *Log) flush(pending []*request, newest int64) {
	defer func() { l.buf = l.buf[:0] }()
	if len(pending) == 0 {
		return
	}
	name := l.cur.Name()
	_, err := l.cur.Write(l.buf)
	if err != nil {
		err = fmt.Errorf("writing audit segment %s: %w", name, err)
	} else if err = l.cur.Sync(); err != nil {
		err = fmt.Errorf("syncing audit segment %s: %w", name, err)
	}
	l.syncs.Add(1)
	if err != nil {
		l.log.Error("audit write failed; starting a new segment", "segment", name, "records", len(pending), "err", err)
		_ = l.cur.Close()
		l.cur = nil
		for _, r := range pending {
			r.err = err
		}
		return
	}
	l.curSize += int64(len(l.buf))
	l.mu.Lock()
	s := &l.segs[len(l.segs)-1]
	s.size = l.curSize
	s.newest = max(s.newest, newest)
	l.mu.Unlock()
}

// rotate closes the current segment and creates the next one, named after
// the time of its first record, then applies retention.
func (l *Log) rotate(first time.Time) error {
	if l.cur != nil {
		if err := l.cur.Close(); err != nil {
			l.log.Warn("closing audit segment", "segment", l.cur.Name(), "err", err)
		}
		l.cur = nil
	}
	start := max(first.UnixNano(), 0)
	l.mu.Lock()
	if n := len(l.segs); n > 0 {
		start = max(start, l.segs[n-1].start+1)
	}
	l.mu.Unlock()
	path := l.path(start)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating audit segment %s: %w", path, err)
	}
	if err := syncDir(l.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	l.cur, l.curSize = f, 0
	l.mu.Lock()
	l.segs = append(l.segs, segment{start: start, newest: start})
	l.mu.Unlock()
	l.log.Debug("audit segment started", "segment", path)
	if err := l.retain(context.Background()); err != nil {
		l.log.Warn("audit retention failed", "dir", l.dir, "err", err)
	}
	return nil
}

// stamp returns the Unix nanoseconds of the next record: now, unless that is
// not after the last stamp by less than clockSlack, then just after it.
func (l *Log) stamp(now time.Time) int64 {
	n := now.UnixNano()
	if n <= l.lastNanos && l.lastNanos-n < int64(clockSlack) {
		n = l.lastNanos + 1
	}
	l.lastNanos = n
	return n
}

// newID makes a record ID: 16 hex digits of nanos, then 8 random ones.
func newID(nanos int64) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(nanos))
	binary.BigEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

// idNanos returns the nanoseconds at the start of an ID, or 0.
func idNanos(id string) int64 {
	if len(id) < 16 {
		return 0
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(id[:16])); err != nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b[:]))
}
