package audit

import (
	"errors"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// systemActor is the log itself, in the records it writes of its own.
var systemActor = api.AuditActor{Kind: "system", Name: "audit"}

// health is what is wrong with the log, for its alarms (guarded by l.mu).
type health struct {
	// fault is why records are not being written, since faultSince; lost
	// counts the records not written since.
	fault      error
	faultSince time.Time
	lost       int64
	// overSince is when the log went past MaxBytes (WhenFull "alarm").
	overSince time.Time
	// problems are what the last verification found, at checkedAt.
	problems  []api.AuditProblem
	checkedAt time.Time
}

// fail answers reqs with err and counts them as not written. The log's own
// records are kept to be written later.
func (l *Log) fail(reqs []*request, err error, now time.Time) {
	n := 0
	var requeue []*api.AuditRecord
	for _, r := range reqs {
		if r.err == nil {
			r.err = err
		}
		switch {
		case r.outage, r.barrier:
		case r.sys:
			requeue = append(requeue, requeued(r))
		case r.keep && l.pending()+len(requeue) < maxPending:
			r.err = fmt.Errorf("%w: %w", ErrKept, r.err)
			requeue = append(requeue, kept(r, err, now))
		default:
			n++
		}
	}
	l.requeue(requeue)
	l.noteOutage(err, false, n, now)
}

// requeued is the record of r to write again later.
func requeued(r *request) *api.AuditRecord {
	rec := r.rec
	rec.ID, rec.Seq, rec.Prev = "", 0, ""
	return &rec
}

// kept is the record of r, kept to be written once the log can write,
// saying when it was carried out and why it was not written then.
func kept(r *request, cause error, now time.Time) *api.AuditRecord {
	rec := requeued(r)
	rec.Time = time.Time{}
	rec.Message = Truncate(rec.Message, MaxMessageBytes/2)
	if rec.Message != "" {
		rec.Message += "; "
	}
	rec.Message += Truncate(fmt.Sprintf("carried out at %s while the audit log could not write (%v): kept in memory and written once it could",
		now.UTC().Format(time.RFC3339Nano), cause), MaxMessageBytes/2-2)
	return rec
}

// pending is how many records wait in memory to be written.
func (l *Log) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sys)
}

// requeue puts records back first in line, to be written once the log can.
func (l *Log) requeue(recs []*api.AuditRecord) {
	if len(recs) > 0 {
		l.mu.Lock()
		l.sys = append(recs, l.sys...)
		l.mu.Unlock()
	}
}

// refuse answers reqs with ErrFull: the log is at MaxBytes with nothing
// old enough to drop, and WhenFull is "refuse".
func (l *Log) refuse(reqs []*request, now time.Time) {
	err := fmt.Errorf("%w: its segments take %d bytes of the %d allowed, and none holds only records older than %v",
		ErrFull, l.total(), l.opts.MaxBytes, l.opts.MaxAge)
	n := 0
	var requeue []*api.AuditRecord
	for _, r := range reqs {
		switch {
		case r.barrier, r.outage:
		case r.sys:
			requeue = append(requeue, requeued(r))
		case r.keep && l.pending()+len(requeue) < maxPending:
			r.err = fmt.Errorf("%w: %w", ErrKept, err)
			requeue = append(requeue, kept(r, err, now))
		default:
			r.err = err
			n++
		}
	}
	l.requeue(requeue)
	l.noteOutage(err, true, n, now)
}

// noteOutage records that n records could not be written, and why.
func (l *Log) noteOutage(err error, full bool, n int, now time.Time) {
	if l.trouble == nil {
		l.trouble = &outage{since: now}
		l.log.Error("audit records cannot be written; retrying", "dir", l.dir, "err", err,
			"retry", l.opts.RetryInterval)
	}
	t := l.trouble
	t.err, t.full, t.last = err, full, now
	t.lost += int64(n)
	l.mu.Lock()
	l.health.fault, l.health.faultSince, l.health.lost = err, t.since, t.lost
	l.mu.Unlock()
}

// recovered ends an outage: its record has just been written.
func (l *Log) recovered() {
	t := l.trouble
	l.trouble = nil
	l.log.Warn("audit records are written again", "dir", l.dir, "since", t.since, "lost", t.lost, "err", t.err)
	l.mu.Lock()
	l.health.fault, l.health.faultSince, l.health.lost = nil, time.Time{}, 0
	l.mu.Unlock()
}

// outageRecord is the log's account of an outage, written first when
// records can be written again.
func (l *Log) outageRecord(now time.Time) api.AuditRecord {
	t := l.trouble
	what := "could not be written"
	if t.full {
		what = "were refused: the log was full"
	}
	return api.AuditRecord{
		Actor: systemActor, Action: "audit.outage",
		Outcome: api.AuditFailure, Count: t.lost, First: t.since.UTC(), Last: t.last.UTC(),
		Message: fmt.Sprintf("%d audit records %s from %s to %s: %v", t.lost, what,
			t.since.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), t.err),
	}
}

// updateFullLocked raises or clears the alarm of a log past MaxBytes.
func (l *Log) updateFullLocked() {
	over := l.opts.MaxBytes > 0 && l.totalLocked() > l.opts.MaxBytes
	switch {
	case over && l.health.overSince.IsZero():
		l.health.overSince = l.now()
		l.log.Error("audit log past its size limit; its records are younger than the age limit and are kept",
			"dir", l.dir, "bytes", l.totalLocked(), "maxBytes", l.opts.MaxBytes, "maxAge", l.opts.MaxAge)
	case !over && !l.health.overSince.IsZero():
		l.health.overSince = time.Time{}
		l.log.Info("audit log back under its size limit", "dir", l.dir, "bytes", l.totalLocked())
	}
}

// noteProblems records what a verification found.
func (l *Log) noteProblems(problems []api.AuditProblem, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if all || len(problems) > 0 {
		l.health.problems = problems
		l.health.checkedAt = time.Now() // not l.now: verification runs beside the writer
	}
}

// Writable returns nil when records can be written, or why they cannot:
// writing failed the last time it was tried, or the log is full and
// refuses records.
func (l *Log) Writable() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.health.fault != nil {
		return l.health.fault
	}
	return nil
}

// Alarms returns what is wrong with the log now.
func (l *Log) Alarms() []api.Alarm {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.Alarm
	h := &l.health
	switch {
	case h.fault != nil && errors.Is(h.fault, ErrFull):
		out = append(out, api.Alarm{Name: api.AlarmAuditFull, Since: h.faultSince, Path: l.dir,
			Message: fmt.Sprintf("audit log full, refusing records (%d so far): %v; raise --audit-max-bytes or free the records' age", h.lost, h.fault)})
	case h.fault != nil:
		out = append(out, api.Alarm{Name: api.AlarmAuditWrite, Since: h.faultSince, Path: l.dir,
			Message: fmt.Sprintf("audit records cannot be written (%d lost so far): %v", h.lost, h.fault)})
	}
	if !h.overSince.IsZero() {
		out = append(out, api.Alarm{Name: api.AlarmAuditFull, Since: h.overSince, Path: l.dir,
			Message: fmt.Sprintf("audit log takes %d bytes, past its %d-byte limit, with records younger than %v: they are kept; raise the limit or make room",
				l.totalLocked(), l.opts.MaxBytes, l.opts.MaxAge)})
	}
	if len(h.problems) > 0 {
		p := h.problems[0]
		msg := fmt.Sprintf("audit log verification found %d problems; the first: %s", len(h.problems), p.Message)
		out = append(out, api.Alarm{Name: api.AlarmAuditCorrupt, Since: h.checkedAt, Path: l.dir, Message: msg})
	}
	return out
}

// Status returns the log's size, limits and alarms.
func (l *Log) Status() api.AuditStatus {
	alarms := l.Alarms()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := api.AuditStatus{
		Writable: l.health.fault == nil, Bytes: l.totalLocked(), MaxBytes: l.opts.MaxBytes,
		MaxAgeSeconds: int64(l.opts.MaxAge / time.Second), Segments: len(l.segs), WhenFull: l.opts.WhenFull,
		Lost: l.health.lost, Alarms: alarms,
	}
	for _, s := range l.segs {
		st.LastSeq = max(st.LastSeq, s.lastSeq)
	}
	if st.Alarms == nil {
		st.Alarms = []api.Alarm{}
	}
	return st
}

// Dir is the directory the log is kept in.
func (l *Log) Dir() string { return l.dir }
