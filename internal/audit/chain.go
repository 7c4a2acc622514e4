package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// lineHash is the hash the next record holds of a record's line (without
// its newline).
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// link is what the chain needs of a record: decoding only this is much
// cheaper than the whole record.
type link struct {
	Time    time.Time      `json:"time"`
	Seq     uint64         `json:"seq"`
	Prev    string         `json:"prev"`
	Action  string         `json:"action"`
	Actor   api.AuditActor `json:"actor"`
	Removed *api.AuditSpan `json:"removed"`
}

func linkOf(r *api.AuditRecord) link {
	return link{Time: r.Time, Seq: r.Seq, Prev: r.Prev, Action: r.Action, Actor: r.Actor, Removed: r.Removed}
}

// checker follows the hash chain through the lines of the log, in order,
// and says what is wrong with it and where.
type checker struct {
	expect  uint64 // the next sequence number; 0 before the first record
	prev    string // hash of the last well-formed record; "" before it
	last    api.AuditSpan
	bad     []api.AuditSpan // unreadable bytes since the last record
	started bool            // a record or unreadable bytes were seen

	records, unchained int64
	firstSeq, lastSeq  uint64
	head               *api.AuditSpan // sequence numbers missing before the first
	pruned             []api.AuditSpan
	problems           []api.AuditProblem
}

// unreadable notes bytes [off, end) of seg that are not a whole record.
func (c *checker) unreadable(seg string, off, end int64) {
	c.started = true
	if n := len(c.bad); n > 0 && c.bad[n-1].Segment == seg && c.bad[n-1].End == off {
		c.bad[n-1].End = end
		return
	}
	c.bad = append(c.bad, api.AuditSpan{Segment: seg, Offset: off, End: end})
}

// record checks one well-formed record, at [off, end) of seg.
func (c *checker) record(seg string, off, end int64, line []byte, rec *link) {
	c.records++
	at := api.AuditSpan{Segment: seg, Offset: off, End: end, FromSeq: rec.Seq, ToSeq: rec.Seq}
	if rec.Action == "audit.prune" && rec.Removed != nil && rec.Actor == systemActor {
		c.pruned = append(c.pruned, *rec.Removed)
	}
	switch {
	case rec.Seq == 0:
		c.unchained++
		c.badBefore(0, 0)
	case c.expect == 0:
		// The first record of the chain.
		c.firstSeq = rec.Seq
		if len(c.bad) > 0 {
			c.badBefore(1, rec.Seq-1)
		} else if !c.started && rec.Seq > 1 {
			c.head = &api.AuditSpan{FromSeq: 1, ToSeq: rec.Seq - 1}
		}
		if c.prev != "" && rec.Prev != c.prev {
			c.altered(at)
		}
	case rec.Seq == c.expect:
		if len(c.bad) > 0 {
			c.badBefore(0, 0)
		}
		if rec.Prev != c.prev {
			c.altered(at)
		}
	case rec.Seq > c.expect:
		if len(c.bad) > 0 {
			c.badBefore(c.expect, rec.Seq-1)
		} else {
			c.problem(api.AuditMissing, api.AuditSpan{Segment: seg, Offset: off, FromSeq: c.expect, ToSeq: rec.Seq - 1},
				"records %d to %d are missing: record %d (%s) follows record %d (%s)",
				c.expect, rec.Seq-1, rec.Seq, where(at), c.expect-1, where(c.last))
		}
	default:
		c.badBefore(0, 0)
		c.problem(api.AuditOutOfOrder, at, "record %d (%s) comes after record %d (%s): it is out of order or repeated",
			rec.Seq, where(at), c.expect-1, where(c.last))
	}
	c.started = true
	c.prev, c.last = lineHash(line), at
	if rec.Seq > 0 {
		c.expect, c.lastSeq = rec.Seq+1, rec.Seq
	}
}

// badBefore reports the unreadable bytes before a record; from and to are
// the sequence numbers they must have held (0: none known).
func (c *checker) badBefore(from, to uint64) {
	for _, b := range c.bad {
		b.FromSeq, b.ToSeq = from, to
		switch {
		case to >= from && to > 0:
			c.problem(api.AuditUnreadable, b, "%s is not whole records: records %d to %d are lost", where(b), from, to)
		case c.expect > 0:
			c.problem(api.AuditUnreadable, b, "%s is not whole records, between record %d and the next (no record of the chain is missing: the bytes were damaged or added)",
				where(b), c.expect-1)
		default:
			c.problem(api.AuditUnreadable, b, "%s is not whole records; how many records it held is not known", where(b))
		}
	}
	c.bad = c.bad[:0]
}

func (c *checker) altered(at api.AuditSpan) {
	prev := c.last
	if prev.Segment == "" {
		prev = at
	}
	c.problem(api.AuditAltered, prev, "record %d (%s) does not have the hash record %d holds of it: one of them was altered",
		prev.ToSeq, where(prev), at.FromSeq)
}

func (c *checker) problem(kind string, at api.AuditSpan, format string, args ...any) {
	c.problems = append(c.problems, api.AuditProblem{Kind: kind, Span: at, Message: fmt.Sprintf(format, args...)})
}

// finish reports what is left at the end: unreadable bytes, and records
// written (lastSeq, when known) that are not there.
func (c *checker) finish(lastSeq uint64) {
	for _, b := range c.bad {
		if c.expect > 0 {
			b.FromSeq = c.expect
			c.problem(api.AuditUnreadable, b, "%s, at the end, is not whole records: records from %d on are lost", where(b), c.expect)
		} else {
			c.problem(api.AuditUnreadable, b, "%s, at the end, is not whole records", where(b))
		}
	}
	c.bad = nil
	if lastSeq > c.lastSeq && c.lastSeq > 0 {
		c.problem(api.AuditMissing, api.AuditSpan{Segment: c.last.Segment, Offset: c.last.End, FromSeq: c.lastSeq + 1, ToSeq: lastSeq},
			"records %d to %d were written but are not in the log: it was cut after record %d (%s)",
			c.lastSeq+1, lastSeq, c.lastSeq, where(c.last))
	}
}

// where names a place in the log for a person.
func where(s api.AuditSpan) string {
	if s.End > s.Offset {
		return fmt.Sprintf("segment %s, bytes %d-%d", s.Segment, s.Offset, s.End)
	}
	return fmt.Sprintf("segment %s at byte %d", s.Segment, s.Offset)
}

// result is the verification the checker made.
func (c *checker) result(segments int) api.AuditVerification {
	v := api.AuditVerification{
		Segments: segments, Records: c.records, FirstSeq: c.firstSeq, LastSeq: c.lastSeq,
		Unchained: c.unchained, Problems: c.problems,
	}
	if h := c.head; h != nil {
		// Retention notes the records it removes; missing records it did
		// not note were lost.
		var covered uint64
		for _, p := range c.pruned {
			if p.FromSeq <= covered+1 && p.ToSeq > covered {
				covered = p.ToSeq
			}
		}
		if covered >= h.ToSeq {
			v.Pruned = &api.AuditSpan{FromSeq: 1, ToSeq: h.ToSeq}
		} else {
			if covered > 0 {
				v.Pruned = &api.AuditSpan{FromSeq: 1, ToSeq: covered}
			}
			gap := api.AuditSpan{FromSeq: covered + 1, ToSeq: h.ToSeq}
			v.Problems = append([]api.AuditProblem{{Kind: api.AuditMissing, Span: gap,
				Message: fmt.Sprintf("records %d to %d, before the oldest segment, are missing and no record says retention removed them",
					gap.FromSeq, gap.ToSeq)}}, v.Problems...)
		}
	}
	if v.Problems == nil {
		v.Problems = []api.AuditProblem{}
	}
	v.OK = len(v.Problems) == 0
	return v
}

// Verify reads the whole log and checks its hash chain: every record's
// sequence number follows the one before it and it holds that record's
// hash, across segments. It reports what is lost or damaged and where, and
// raises the audit-corrupt alarm (or clears it) accordingly.
func (l *Log) Verify(ctx context.Context) (api.AuditVerification, error) {
	segs := l.snapshot()
	v, err := verifySegments(ctx, l.dir, segs, l.lastSeq(segs))
	if err != nil {
		return v, err
	}
	l.noteProblems(v.Problems, true)
	for _, p := range v.Problems {
		l.log.Error("audit log damaged", "kind", p.Kind, "problem", p.Message)
	}
	return v, nil
}

func (l *Log) lastSeq(segs []segment) uint64 {
	var n uint64
	for _, s := range segs {
		n = max(n, s.lastSeq)
	}
	return n
}

// VerifyDir checks the hash chain of the log kept in dir without opening it
// for writing (polyvisor audit verify --dir): nothing is repaired or
// removed.
func VerifyDir(ctx context.Context, dir string) (api.AuditVerification, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return api.AuditVerification{}, fmt.Errorf("listing audit directory %s: %w", dir, err)
	}
	var segs []segment
	for _, e := range entries {
		if start, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return api.AuditVerification{}, fmt.Errorf("reading audit directory %s: %w", dir, err)
			}
			segs = append(segs, segment{start: start, size: fi.Size()})
		}
	}
	sortSegments(segs)
	return verifySegments(ctx, dir, segs, 0)
}

// verifySegments runs the checker over segs, each up to its size.
func verifySegments(ctx context.Context, dir string, segs []segment, lastSeq uint64) (api.AuditVerification, error) {
	var c checker
	n := 0
	for _, s := range segs {
		path := pathIn(dir, s.start)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) && c.records == 0 && len(c.bad) == 0 {
			continue // removed by retention since the snapshot
		}
		if err != nil {
			return api.AuditVerification{}, fmt.Errorf("opening audit segment %s: %w", path, err)
		}
		n++
		err = checkSegment(ctx, f, segmentName(s.start), s.size, &c)
		f.Close()
		if err != nil {
			return api.AuditVerification{}, fmt.Errorf("verifying audit segment %s: %w", path, err)
		}
	}
	c.finish(lastSeq)
	return c.result(n), nil
}

// checkSegment feeds the first size bytes of one segment to c.
func checkSegment(ctx context.Context, f io.Reader, name string, size int64, c *checker) error {
	lr := newLineReader(io.LimitReader(f, size))
	var off int64
	for i := 0; ; i++ {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, n, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		end := off + int64(n)
		var rec link
		if !complete || json.Unmarshal(line, &rec) != nil || rec.Time.IsZero() {
			c.unreadable(name, off, end)
		} else {
			c.record(name, off, end, line, &rec)
		}
		off = end
	}
}
