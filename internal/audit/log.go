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
	DefaultMaxBytes      = 256 << 20
	DefaultMaxAge        = 90 * 24 * time.Hour
	DefaultSegmentBytes  = 16 << 20
	DefaultRetryInterval = 5 * time.Second
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

// ErrFull is returned by Append for a record refused because the log is at
// its size limit with records younger than its age limit (WhenFull
// "refuse").
var ErrFull = errors.New("audit log full")

// ErrKept is wrapped by the error of AppendKept for a record that could
// not be written now and is kept to be written once the log can write.
var ErrKept = errors.New("audit record kept in memory until the log can write")

// maxPending bounds the records kept in memory while the log cannot write:
// the log's own and those of AppendKept. Past it a kept record is counted
// as lost, like any other.
const maxPending = 1024

// Options bounds the log. Zero fields take the defaults; a negative MaxBytes
// or MaxAge turns that limit off.
type Options struct {
	// MaxBytes is the size the segments may take together (default 256
	// MiB). Records younger than MaxAge are never dropped to stay under
	// it: past it the log raises the audit-full alarm and, with WhenFull
	// "refuse", refuses new records.
	MaxBytes int64
	// MaxAge is how long records are kept (default 90 days).
	MaxAge time.Duration
	// SegmentBytes is the size at which a new segment is started (default
	// 16 MiB).
	SegmentBytes int64
	// WhenFull is api.AuditWhenFullAlarm (the default: keep writing past
	// MaxBytes) or api.AuditWhenFullRefuse.
	WhenFull string
	// RetryInterval is how often the log retries writing while it cannot
	// (default 5s).
	RetryInterval time.Duration
	// NoVerify skips the verification of the hash chain that Open starts
	// in the background.
	NoVerify bool

	// now is the log's clock, time.Now when nil. Tests set it here, before
	// Open starts the writer that reads it.
	now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	switch o.WhenFull {
	case "":
		o.WhenFull = api.AuditWhenFullAlarm
	case api.AuditWhenFullAlarm, api.AuditWhenFullRefuse:
	default:
		return o, fmt.Errorf("audit whenFull: must be %s or %s, not %q", api.AuditWhenFullAlarm, api.AuditWhenFullRefuse, o.WhenFull)
	}
	return o, nil
}

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	segs   []segment          // oldest first; the last one is written to
	health health             // what is wrong, for alarms
	sys    []*api.AuditRecord // the log's own records, written next

	sendMu sync.RWMutex // held to send on reqs, and to close it
	closed bool
	reqs   chan *request
	kick   chan struct{} // wakes the writer to write l.sys or retry
	done   chan struct{} // closed when the writer has stopped

	bgCancel context.CancelFunc
	bg       sync.WaitGroup // the verification started by Open

	// Owned by the writer goroutine (and by Open before it starts).
	cur       *os.File // the last segment, nil until one is created
	curSize   int64
	lastNanos int64
	buf       []byte
	closeErr  error
	seq       uint64  // of the last record written
	prev      string  // hash of the last record written
	trouble   *outage // set while records are not being written

	syncs   atomic.Int64 // file syncs made for records
	scanned atomic.Int64 // bytes of segments read by queries
}

// outage is a time during which records could not be written.
type outage struct {
	err         error
	full        bool // refused for size, not failed
	since, last time.Time
	lost        int64
}

type request struct {
	rec  api.AuditRecord
	err  error
	done chan error
	sys  bool // written by the log itself; nobody waits
	// keep: a record of AppendKept, kept when it cannot be written.
	keep bool
	// outage marks the record of an outage, made anew at each attempt.
	outage bool
	// barrier carries no record: it is answered once what came before it
	// was written.
	barrier bool
}

// Open opens the audit log kept in dir, creating it if needed. It repairs a
// partial last record left by a crash, applies retention, starts the
// goroutine that writes appended records (Close stops it) and, unless
// opts.NoVerify, a verification of the whole log in the background, once
// retention's notes are written.
func Open(ctx context.Context, dir string, opts Options, log *slog.Logger) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	now := opts.now
	if now == nil {
		now = time.Now
	}
	l := &Log{
		dir:  dir,
		opts: opts,
		log:  log,
		now:  now,
		reqs: make(chan *request, maxBatch),
		kick: make(chan struct{}, 1),
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
	for _, s := range segs {
		l.lastNanos = max(l.lastNanos, s.lastID)
		if s.lastHash != "" {
			l.seq, l.prev = s.lastSeq, s.lastHash
		}
	}
	if n := len(segs); n > 0 {
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
	l.wake() // retention's notes, if it removed anything
	bgCtx, cancel := context.WithCancel(context.Background())
	l.bgCancel = cancel
	if !opts.NoVerify {
		l.bg.Add(1)
		go func() {
			defer l.bg.Done()
			// Retention's notes first: without them the records it
			// removed read as lost.
			if err := l.barrier(bgCtx); err != nil {
				return
			}
			if _, err := l.Verify(bgCtx); err != nil && bgCtx.Err() == nil {
				l.log.Warn("verifying the audit log", "dir", dir, "err", err)
			}
		}()
	}
	return l, nil
}

// Append stamps rec with a new ID, a sequence number and the hash of the
// record before it, and with the current time if its Time is zero (a Time
// given is kept, in UTC), and returns once the record is synced to disk.
// If ctx ends first Append returns its error, and the record may or may
// not be in the log; rec is then left as it was.
func (l *Log) Append(ctx context.Context, rec *api.AuditRecord) error {
	return l.append(ctx, rec, false)
}

// AppendKept is Append for the record of something carried out whether or
// not it can be recorded now (the server lets revocations and deletions
// through while its audit log cannot write): a record that cannot be
// written is kept in memory, up to a bound, and written once the log can
// write again, right after the account of the outage, with a message
// saying when it happened. The error then wraps ErrKept and the cause. A
// record kept is lost if the process ends before the log can write.
func (l *Log) AppendKept(ctx context.Context, rec *api.AuditRecord) error {
	return l.append(ctx, rec, true)
}

func (l *Log) append(ctx context.Context, rec *api.AuditRecord, keep bool) error {
	if rec == nil {
		return errors.New("appending audit record: nil record")
	}
	r := &request{rec: *rec, done: make(chan error, 1), keep: keep}
	Bound(&r.rec)
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
		rec.ID, rec.Time, rec.Seq, rec.Prev = r.rec.ID, r.rec.Time, r.rec.Seq, r.rec.Prev
		return nil
	case <-ctx.Done():
		return fmt.Errorf("appending audit record: %w", ctx.Err())
	}
}

// Prune deletes the segments retention no longer keeps, and returns once
// the log's records of what it removed are written (or could not be). The
// server calls it periodically, so that age applies even when nothing is
// appended.
func (l *Log) Prune(ctx context.Context) error {
	err := l.retain(ctx)
	if berr := l.barrier(ctx); berr != nil {
		return errors.Join(err, fmt.Errorf("pruning audit log: %w", berr))
	}
	return err
}

// barrier returns once the log's own records appended before it (the
// notes of retention) are written, or could not be, or the log is closed.
func (l *Log) barrier(ctx context.Context) error {
	// A request with no record: answered once the notes before it are out.
	r := &request{barrier: true, done: make(chan error, 1)}
	l.sendMu.RLock()
	if l.closed {
		l.sendMu.RUnlock()
		return nil
	}
	select {
	case l.reqs <- r:
		l.sendMu.RUnlock()
	case <-ctx.Done():
		l.sendMu.RUnlock()
		return ctx.Err()
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// wake asks the writer to write the log's own records, or to retry.
func (l *Log) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
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
	l.bgCancel()
	l.bg.Wait()
	<-l.done
	return l.closeErr
}

// run is the writer goroutine: it takes every request waiting, writes and
// syncs them together, and answers each. While records cannot be written
// it retries every RetryInterval, so that the log recovers by itself.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*request, 0, maxBatch)
	var retry <-chan time.Time
	for {
		batch = batch[:0]
		select {
		case r, ok := <-l.reqs:
			if !ok {
				l.writeBatch(nil) // the log's own records still waiting
				if l.cur != nil {
					if err := l.cur.Close(); err != nil {
						l.closeErr = fmt.Errorf("closing audit segment %s: %w", l.cur.Name(), err)
					}
					l.cur = nil
				}
				return
			}
			batch = append(batch, r)
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
		case <-l.kick:
		case <-retry:
			if l.trouble != nil && l.trouble.full {
				if err := l.retain(context.Background()); err != nil {
					l.log.Warn("audit retention failed", "dir", l.dir, "err", err)
				}
			}
		}
		l.writeBatch(batch)
		for _, r := range batch {
			r.done <- r.err
		}
		clear(batch)
		retry = nil
		if l.trouble != nil {
			retry = time.After(l.opts.RetryInterval)
		}
		l.mu.Lock()
		pending := len(l.sys) > 0
		l.mu.Unlock()
		if pending && l.trouble == nil {
			l.wake()
		}
	}
}

// writeBatch writes a batch of records, starting new segments as they fill,
// and sets each request's error. The log's own records go first: the
// account of records that could not be written, then retention's notes.
func (l *Log) writeBatch(batch []*request) {
	now := l.now()
	refuse := l.opts.WhenFull == api.AuditWhenFullRefuse && l.opts.MaxBytes > 0
	if refuse && l.trouble != nil && l.trouble.full && l.total() > l.opts.MaxBytes-l.headroom() {
		// Still full: nothing is written, not even the log's own records,
		// until there is room for more than a few.
		l.refuse(batch, now)
		return
	}
	var all []*request
	if l.trouble != nil {
		all = append(all, &request{rec: l.outageRecord(now), sys: true, outage: true, done: make(chan error, 1)})
	}
	l.mu.Lock()
	for _, rec := range l.sys {
		all = append(all, &request{rec: *rec, sys: true, done: make(chan error, 1)})
	}
	l.sys = nil
	l.mu.Unlock()
	for _, r := range batch {
		if !r.barrier {
			all = append(all, r)
		}
	}

	pending := make([]*request, 0, len(all)) // encoded in l.buf, not yet written
	var newest int64
	seq0, prev0 := l.seq, l.prev
	l.buf = l.buf[:0]
	for i, r := range all {
		n := l.stamp(now)
		r.rec.ID = newID(n)
		if r.rec.Time.IsZero() {
			r.rec.Time = time.Unix(0, n).UTC()
		} else {
			r.rec.Time = r.rec.Time.UTC()
		}
		r.rec.Seq, r.rec.Prev = l.seq+1, l.prev
		line, err := json.Marshal(&r.rec)
		if err != nil {
			r.err = fmt.Errorf("encoding audit record: %w", err)
			continue
		}
		if len(line)+1 > maxRecordBytes {
			r.err = fmt.Errorf("appending audit record: %d bytes encoded, more than the %d allowed", len(line)+1, maxRecordBytes)
			continue
		}
		if refuse && l.total()+int64(len(l.buf)+len(line)+1) > l.opts.MaxBytes {
			if l.flush(pending, newest, seq0, prev0) {
				l.refuse(all[i:], now)
			} else {
				l.fail(all[i:], l.trouble.err, now)
			}
			return
		}
		if l.cur == nil || l.curSize+int64(len(l.buf)) >= l.opts.SegmentBytes {
			if !l.flush(pending, newest, seq0, prev0) {
				l.fail(all[i:], l.trouble.err, now)
				return
			}
			pending, newest = pending[:0], 0
			seq0, prev0 = l.seq, l.prev
			if err := l.rotate(r.rec.Time); err != nil {
				l.fail(all[i:], err, now)
				return
			}
		}
		l.buf = append(append(l.buf, line...), '\n')
		l.seq, l.prev = r.rec.Seq, lineHash(line)
		pending = append(pending, r)
		newest = max(newest, r.rec.Time.UnixNano())
	}
	l.flush(pending, newest, seq0, prev0)
}

// flush writes the encoded records of pending to the current segment and
// syncs it, then makes them visible to queries, and reports whether it
// did. On failure the chain goes back to seq0 and prev0, the segment is
// cut back to its last good byte, and the records are counted as lost.
func (l *Log) flush(pending []*request, newest int64, seq0 uint64, prev0 string) bool {
	defer func() { l.buf = l.buf[:0] }()
	if len(pending) == 0 {
		return true
	}
	name := l.cur.Name()
	_, err := l.cur.Write(l.buf)
	if err != nil {
		err = fmt.Errorf("writing audit segment %s: %w", name, err)
	} else if err = l.cur.Sync(); err != nil {
		err = fmt.Errorf("syncing audit segment %s: %w", name, err)
		// After a failed sync the file's state is unknown: start anew.
		l.abandon()
	}
	l.syncs.Add(1)
	if err != nil {
		l.seq, l.prev = seq0, prev0
		if l.cur != nil {
			if terr := l.cur.Truncate(l.curSize); terr != nil {
				l.log.Error("cutting a failed write off the audit segment", "segment", name, "err", terr)
				l.abandon()
			}
		}
		l.fail(pending, err, l.now())
		return false
	}
	l.curSize += int64(len(l.buf))
	first, last := pending[0].rec, pending[len(pending)-1].rec
	l.mu.Lock()
	s := &l.segs[len(l.segs)-1]
	s.size = l.curSize
	s.newest = max(s.newest, newest)
	if s.firstSeq == 0 {
		s.firstSeq = first.Seq
	}
	s.lastSeq, s.lastHash = last.Seq, l.prev
	l.updateFullLocked()
	l.mu.Unlock()
	if l.trouble != nil {
		l.recovered()
	}
	return true
}

// abandon closes the current segment; the next record starts a new one.
func (l *Log) abandon() {
	if l.cur != nil {
		_ = l.cur.Close()
		l.cur = nil
	}
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
	n := len(l.segs)
	if n > 0 {
		start = max(start, l.segs[n-1].start+1)
	}
	// An empty last segment, left by a failed write, is written to again.
	reuse := n > 0 && l.segs[n-1].size == 0
	if reuse {
		start = l.segs[n-1].start
	}
	l.mu.Unlock()
	path := l.path(start)
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL | os.O_APPEND
	if reuse {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return fmt.Errorf("creating audit segment %s: %w", path, err)
	}
	if err := syncDir(l.dir); err != nil {
		_ = f.Close()
		if !reuse {
			_ = os.Remove(path)
		}
		return err
	}
	l.cur, l.curSize = f, 0
	if !reuse {
		l.mu.Lock()
		l.segs = append(l.segs, segment{start: start, newest: start})
		l.mu.Unlock()
		l.log.Debug("audit segment started", "segment", path)
	}
	if err := l.retain(context.Background()); err != nil {
		l.log.Warn("audit retention failed", "dir", l.dir, "err", err)
	}
	return nil
}

// headroom is the room a full log needs before it takes records again:
// a segment's worth, or a quarter of MaxBytes if that is less.
func (l *Log) headroom() int64 {
	return min(l.opts.SegmentBytes, l.opts.MaxBytes/4)
}

// total is the size of the segments.
func (l *Log) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.totalLocked()
}

func (l *Log) totalLocked() int64 {
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	return total
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
