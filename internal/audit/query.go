package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// orderSlack is how far out of time order records are allowed to be when
// whole segments are skipped by time.
const orderSlack = 5 * time.Minute

// Query calls fn with each record matching q, oldest first, until fn
// returns false. With q.Limit above zero it calls fn with only the newest
// q.Limit matching records, still oldest first. Every record whose Append
// has returned is seen; the records fn gets are its own to keep.
func (l *Log) Query(ctx context.Context, q api.AuditQuery, fn func(*api.AuditRecord) bool) error {
	_, err := l.QueryIn(ctx, q, QueryOptions{}, fn)
	return err
}

// QueryOptions bound what a query reads, beyond what it asks for.
type QueryOptions struct {
	// Projects, when not nil, are the only projects whose records the
	// query may return: records of other projects, and of none, are not
	// even decoded. An empty, non-nil list reads nothing.
	Projects []string
	// MaxScanBytes, when above zero, bounds the bytes of segments the
	// query reads: the newest segments that fit (at least one); older
	// ones are left unread and the result says from when it read, which
	// a query with that as Until pages back from.
	MaxScanBytes int64
}

// QueryResult says how much of the log a query read.
type QueryResult struct {
	// Complete is false when MaxScanBytes left older segments unread;
	// SearchedFrom is then the time from which the log was read.
	Complete     bool
	SearchedFrom time.Time
	// ScannedBytes is how many bytes of segments were read.
	ScannedBytes int64
}

// QueryIn is Query within opts: it reads only what opts allow, and says
// how much it read.
func (l *Log) QueryIn(ctx context.Context, q api.AuditQuery, opts QueryOptions, fn func(*api.AuditRecord) bool) (QueryResult, error) {
	if opts.Projects != nil && len(opts.Projects) == 0 {
		return QueryResult{Complete: true}, nil
	}
	m := newMatcher(q, opts.Projects)
	segs, res := l.plan(q, opts)
	scan := func(s segment, emit func(*api.AuditRecord) bool) (bool, error) {
		res.ScannedBytes += s.size
		l.scanned.Add(s.size)
		return l.scan(ctx, s, m, emit)
	}
	if q.Limit <= 0 {
		for _, s := range segs {
			stop, err := scan(s, fn)
			if err != nil || stop {
				return res, err
			}
		}
		return res, nil
	}
	// The newest records are at the end: read the segments newest first,
	// keeping from each only the last of the matches still wanted.
	var chunks [][]*api.AuditRecord
	for i, need := len(segs)-1, q.Limit; i >= 0 && need > 0; i-- {
		r := ring{max: need}
		if _, err := scan(segs[i], r.push); err != nil {
			return res, err
		}
		chunk := r.ordered()
		need -= len(chunk)
		chunks = append(chunks, chunk)
	}
	for i := len(chunks) - 1; i >= 0; i-- {
		for _, rec := range chunks[i] {
			if !fn(rec) {
				return res, nil
			}
		}
	}
	return res, nil
}

// Within tells, without reading anything, how much of the log a query
// within opts would read: whether all it asks for, or from when.
func (l *Log) Within(q api.AuditQuery, opts QueryOptions) QueryResult {
	if opts.Projects != nil && len(opts.Projects) == 0 {
		return QueryResult{Complete: true}
	}
	_, res := l.plan(q, opts)
	return res
}

// plan picks the segments a query reads: those that may hold records of
// its time range, the newest of them that fit in the byte budget.
func (l *Log) plan(q api.AuditQuery, opts QueryOptions) ([]segment, QueryResult) {
	res := QueryResult{Complete: true}
	segs := segmentsFor(l.snapshot(), q)
	if opts.MaxScanBytes > 0 {
		// Within a budget, a segment that starts at or after Until is left
		// out: it can hold only records whose writer set their time back,
		// and reading it would spend the budget of the query that pages
		// back from SearchedFrom with until=.
		if !q.Until.IsZero() {
			segs = slices.DeleteFunc(segs, func(s segment) bool { return !time.Unix(0, s.start).Before(q.Until) })
		}
		var total int64
		from := len(segs)
		for from > 0 && (from == len(segs) || total+segs[from-1].size <= opts.MaxScanBytes) {
			total += segs[from-1].size
			from--
		}
		if from > 0 {
			res.Complete, res.SearchedFrom = false, time.Unix(0, segs[from].start).UTC()
			segs = segs[from:]
		}
	}
	return segs, res
}

// ScannedBytes is how many bytes of segments queries have read since the
// log was opened.
func (l *Log) ScannedBytes() int64 { return l.scanned.Load() }

// Export writes the records matching q to w as JSON lines, one record per
// line as they are stored, oldest first.
func (l *Log) Export(ctx context.Context, q api.AuditQuery, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	var werr error
	err := l.Query(ctx, q, func(rec *api.AuditRecord) bool {
		werr = enc.Encode(rec)
		return werr == nil
	})
	if err != nil {
		return err
	}
	if werr == nil {
		werr = bw.Flush()
	}
	if werr != nil {
		return fmt.Errorf("exporting audit records: %w", werr)
	}
	return nil
}

// snapshot returns the segments as they are now, the last one's size being
// what has been synced.
func (l *Log) snapshot() []segment {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.segs)
}

// segmentsFor returns the segments that may hold records in [Since, Until):
// a segment holds records from its start to the start of the next one.
func segmentsFor(segs []segment, q api.AuditQuery) []segment {
	var out []segment
	for i, s := range segs {
		if !q.Until.IsZero() && !time.Unix(0, s.start).Before(q.Until.Add(orderSlack)) {
			break
		}
		if !q.Since.IsZero() && i+1 < len(segs) && time.Unix(0, segs[i+1].start).Before(q.Since.Add(-orderSlack)) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// scan reads the records of one segment and calls emit with each that
// matches, reporting whether emit asked to stop. A segment removed by
// retention since the snapshot was taken has nothing left to give.
func (l *Log) scan(ctx context.Context, s segment, m *matcher, emit func(*api.AuditRecord) bool) (stop bool, err error) {
	path := l.path(s.start)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening audit segment %s: %w", path, err)
	}
	defer f.Close()
	// The chain is checked within the segment as it is read: damage is
	// reported with what it cost, never skipped silently.
	var c checker
	name := segmentName(s.start)
	defer func() {
		if len(c.problems) > 0 {
			for _, p := range c.problems {
				l.log.Error("audit log damaged; skipped what cannot be read", "kind", p.Kind, "problem", p.Message)
			}
			l.noteProblems(c.problems, false)
		}
	}()
	lr := newLineReader(io.LimitReader(f, s.size))
	var off int64
	for i := 0; ; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return false, fmt.Errorf("querying audit log: %w", err)
			}
		}
		line, n, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			c.finish(0)
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading audit segment %s: %w", path, err)
		}
		end := off + int64(n)
		if !complete || !m.mayMatch(line) {
			// A record that cannot match is decoded only as far as the
			// chain needs.
			var lk link
			if !complete || json.Unmarshal(line, &lk) != nil || lk.Time.IsZero() {
				c.unreadable(name, off, end)
			} else {
				c.record(name, off, end, line, &lk)
			}
			off = end
			continue
		}
		rec := new(api.AuditRecord)
		if json.Unmarshal(line, rec) != nil || rec.Time.IsZero() {
			c.unreadable(name, off, end)
			off = end
			continue
		}
		lk := linkOf(rec)
		c.record(name, off, end, line, &lk)
		off = end
		if m.match(rec) && !emit(rec) {
			return true, nil
		}
	}
}

// matcher tests records against a query.
type matcher struct {
	q            api.AuditQuery
	kind, name   string // of q.Resource; kind empty for a bare name
	actionPrefix bool
	// projects, when not nil, are the projects a record must be of, and
	// needles what the line of such a record holds.
	projects []string
	needles  [][]byte
}

func newMatcher(q api.AuditQuery, projects []string) *matcher {
	m := &matcher{q: q, actionPrefix: strings.HasSuffix(q.Action, "."), projects: projects}
	if kind, name, ok := strings.Cut(q.Resource, "/"); ok {
		m.kind, m.name = kind, name
	} else {
		m.name = q.Resource
	}
	if q.Project != "" {
		if projects != nil && !slices.Contains(projects, q.Project) {
			m.projects = []string{} // nothing can match
		} else {
			m.projects = []string{q.Project}
		}
	}
	for _, p := range m.projects {
		// The record's project as encoding/json writes it.
		b, _ := json.Marshal(p)
		m.needles = append(m.needles, append([]byte(`"project":`), b...))
	}
	return m
}

// mayMatch tells, from its line alone, whether a record may match: a
// record of a project the query cannot return is not worth decoding.
func (m *matcher) mayMatch(line []byte) bool {
	if m.projects == nil {
		return true
	}
	for _, n := range m.needles {
		if bytes.Contains(line, n) {
			return true
		}
	}
	return false
}

func (m *matcher) match(r *api.AuditRecord) bool {
	q := &m.q
	switch {
	case !q.Since.IsZero() && r.Time.Before(q.Since),
		!q.Until.IsZero() && !r.Time.Before(q.Until),
		q.Actor != "" && r.Actor.Name != q.Actor,
		m.projects != nil && !slices.Contains(m.projects, r.Project),
		q.Outcome != "" && r.Outcome != q.Outcome:
		return false
	}
	if q.Resource != "" {
		if r.Resource.Name != m.name || (m.kind != "" && r.Resource.Kind != m.kind) {
			return false
		}
	}
	if q.Action != "" {
		if m.actionPrefix {
			return strings.HasPrefix(r.Action, q.Action)
		}
		return r.Action == q.Action
	}
	return true
}

// ring keeps the last max records pushed into it, growing only as needed.
type ring struct {
	buf  []*api.AuditRecord
	next int // where the next push goes once full
	max  int
}

func (r *ring) push(rec *api.AuditRecord) bool {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, rec)
		return true
	}
	r.buf[r.next] = rec
	r.next = (r.next + 1) % r.max
	return true
}

// ordered returns the records kept, oldest first.
func (r *ring) ordered() []*api.AuditRecord {
	if r.next == 0 {
		return r.buf
	}
	return slices.Concat(r.buf[r.next:], r.buf[:r.next])
}
