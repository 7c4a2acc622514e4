package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Defaults of AggregateOptions.
const (
	DefaultAggregateWindow  = time.Minute
	DefaultAggregateEach    = 10
	DefaultAggregateMaxKeys = 10000
	// DefaultAggregateCallerKeys bounds the keys one caller has counted
	// apart in a window, and DefaultAggregateCallerWrites the records of
	// it written one by one.
	DefaultAggregateCallerKeys   = 32
	DefaultAggregateCallerWrites = 60
)

// callerPrefix starts a caller's own coarse key: its records past its
// bound of keys fold there.
const callerPrefix = "\x00caller|"

// overflowPrefix starts the keys of records counted while the table is
// full: those fold coarser, by action, outcome and status alone, and say
// how many addresses, callers and projects they came from.
const overflowPrefix = "\x00overflow|"

// maxOverflowKeys bounds the coarse keys; past it every new record shares
// one last count, which names the actions it holds.
const maxOverflowKeys = 256

// maxSamples bounds the distinct values a count names of each field.
const maxSamples = 8

// AggregateOptions shape an Aggregator. Zero fields take the defaults.
type AggregateOptions struct {
	// Window is how long records of one key are counted together.
	Window time.Duration
	// Each is how many records of one key are written one by one in a
	// window before the rest are only counted.
	Each int
	// MaxKeys bounds the keys counted at once; past it, new records fold
	// by action, outcome and status only (at most maxOverflowKeys more
	// keys), then all into one count.
	MaxKeys int
	// CallerKeys bounds the keys one caller (see AppendAs) has counted in
	// a window; its records of further keys fold into one count of the
	// caller's. CallerWrites bounds the records of one caller written one
	// by one in a window; past it they are counted under their key. So a
	// caller writes at most CallerWrites records and CallerKeys+1 counts a
	// window, however it varies routes, answers or projects.
	CallerKeys   int
	CallerWrites int
}

// Aggregator folds repeated records into counted ones, so that a flood of
// refusals costs a few records rather than one each: per key and window,
// the first Each records are written as they come and the rest are
// counted, then written as one record (Count, First, Last) when the window
// ends. Its methods are safe for concurrent use.
type Aggregator struct {
	log    *Log
	opts   AggregateOptions
	now    func() time.Time
	folded atomic.Int64

	mu      sync.Mutex
	keys    map[string]*tally
	callers map[string]*budget

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// tally is one key's window.
type tally struct {
	end         time.Time
	written     int
	count       int64
	first, last time.Time
	rec         api.AuditRecord // the last record counted
	// Of the records counted: their projects (one unless mixed), and for
	// coarse keys a few of their addresses, callers and actions.
	project          string
	mixedProject     bool
	coarse           coarseness
	remotes, callers samples
	actions          samples
}

// coarseness says what a tally folds beyond one key.
type coarseness int

const (
	oneKey     coarseness = iota
	tableFull             // records of new keys while the table was full
	callerKeys            // records of one caller past its bound of keys
)

// budget is what one caller has spent in its window.
type budget struct {
	end     time.Time
	keys    int
	written int
}

// samples keeps up to maxSamples distinct values, and whether there were
// more.
type samples struct {
	vals []string
	more bool
}

func (s *samples) add(v string) {
	if v == "" || slices.Contains(s.vals, v) {
		return
	}
	if len(s.vals) < maxSamples {
		s.vals = append(s.vals, v)
		return
	}
	s.more = true
}

func (s *samples) String() string {
	out := strings.Join(s.vals, ", ")
	if s.more {
		out += " and more"
	}
	return out
}

// count adds a record to what t counted.
func (t *tally) add(rec *api.AuditRecord, now time.Time) {
	t.count++
	if t.count == 1 {
		t.first, t.project = now, rec.Project
	} else if rec.Project != t.project {
		t.mixedProject = true
	}
	t.last, t.rec = now, *rec
	if t.coarse != oneKey {
		t.remotes.add(rec.Remote)
		t.callers.add(callerOf(rec))
		t.actions.add(fmt.Sprintf("%s (%s %d)", rec.Action, rec.Outcome, rec.Status))
	}
}

func callerOf(rec *api.AuditRecord) string {
	if rec.Actor.Name == "" {
		return rec.Actor.Kind
	}
	return rec.Actor.Kind + " " + rec.Actor.Name
}

// NewAggregator returns an Aggregator writing to l, and starts the
// goroutine that writes the counts of ended windows; Close stops it.
func NewAggregator(l *Log, opts AggregateOptions) *Aggregator {
	if opts.Window <= 0 {
		opts.Window = DefaultAggregateWindow
	}
	if opts.Each <= 0 {
		opts.Each = DefaultAggregateEach
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultAggregateMaxKeys
	}
	if opts.CallerKeys <= 0 {
		opts.CallerKeys = DefaultAggregateCallerKeys
	}
	if opts.CallerWrites <= 0 {
		opts.CallerWrites = DefaultAggregateCallerWrites
	}
	a := &Aggregator{log: l, opts: opts, now: time.Now, keys: map[string]*tally{}, callers: map[string]*budget{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// Append writes rec to the log, or counts it: key names the records that
// fold together ("" never folds). It returns at once for a record counted,
// and once the record is on disk for one written.
func (a *Aggregator) Append(ctx context.Context, key string, rec *api.AuditRecord) error {
	return a.AppendAs(ctx, "", key, rec)
}

// AppendAs is Append for a record of caller (the address and identity it
// came from; "" for none), whose keys and records written one by one are
// bounded per window (CallerKeys, CallerWrites).
func (a *Aggregator) AppendAs(ctx context.Context, caller, key string, rec *api.AuditRecord) error {
	if key == "" {
		return a.log.Append(ctx, rec)
	}
	now := a.now()
	a.mu.Lock()
	var ended []api.AuditRecord
	t := a.keys[key]
	if t != nil && !now.Before(t.end) {
		ended = appendSummary(ended, key, t)
		delete(a.keys, key)
		t = nil
	}
	b := a.budgetOf(caller, now)
	coarse := oneKey
	if t == nil && b != nil && b.keys >= a.opts.CallerKeys {
		coarse, key = callerKeys, callerPrefix+caller
		if t = a.keys[key]; t != nil && !now.Before(t.end) {
			ended = appendSummary(ended, key, t)
			delete(a.keys, key)
			t = nil
		}
	}
	if t == nil && len(a.keys) >= a.opts.MaxKeys {
		coarse = tableFull
		key = overflowPrefix + fmt.Sprintf("%s|%s|%d", rec.Action, rec.Outcome, rec.Status)
		if t = a.keys[key]; t == nil && len(a.keys) >= a.opts.MaxKeys+maxOverflowKeys {
			key = overflowPrefix
			t = a.keys[key]
		}
	}
	if t == nil {
		t = &tally{end: now.Add(a.opts.Window), coarse: coarse}
		a.keys[key] = t
		if b != nil && coarse == oneKey {
			b.keys++
		}
	}
	write := t.written < a.opts.Each && (b == nil || b.written < a.opts.CallerWrites)
	if write {
		t.written++
		if b != nil {
			b.written++
		}
	} else {
		t.add(rec, now)
		a.folded.Add(1)
	}
	a.mu.Unlock()
	a.write(ctx, ended)
	if write {
		return a.log.Append(ctx, rec)
	}
	return nil
}

// budgetOf returns caller's budget for the window under way, or nil for no
// caller, or when the table of callers is full (the table of keys then
// bounds what is written).
func (a *Aggregator) budgetOf(caller string, now time.Time) *budget {
	if caller == "" {
		return nil
	}
	b := a.callers[caller]
	if b != nil && !now.Before(b.end) {
		b = nil
	}
	if b == nil {
		if len(a.callers) >= a.opts.MaxKeys {
			return nil
		}
		b = &budget{end: now.Add(a.opts.Window)}
		a.callers[caller] = b
	}
	return b
}

// Folded is how many records were counted rather than written.
func (a *Aggregator) Folded() int64 { return a.folded.Load() }

// Close writes the counts of every window and stops. The log stays open.
func (a *Aggregator) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		a.flush(time.Time{})
	})
}

func (a *Aggregator) run() {
	defer close(a.done)
	t := time.NewTicker(min(a.opts.Window/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.flush(a.now())
		}
	}
}

// flush writes the counts of the windows ended at now (all of them for a
// zero now).
func (a *Aggregator) flush(now time.Time) {
	a.mu.Lock()
	var ended []api.AuditRecord
	for key, t := range a.keys {
		if now.IsZero() || !now.Before(t.end) {
			ended = appendSummary(ended, key, t)
			delete(a.keys, key)
		}
	}
	for caller, b := range a.callers {
		if now.IsZero() || !now.Before(b.end) {
			delete(a.callers, caller)
		}
	}
	a.mu.Unlock()
	a.write(context.Background(), ended)
}

func (a *Aggregator) write(ctx context.Context, recs []api.AuditRecord) {
	for i := range recs {
		if err := a.log.Append(context.WithoutCancel(ctx), &recs[i]); err != nil {
			a.log.log.Error("writing a count of audit records", "action", recs[i].Action, "count", recs[i].Count, "err", err)
		}
	}
}

// appendSummary adds the record standing for what t counted, if anything.
func appendSummary(out []api.AuditRecord, key string, t *tally) []api.AuditRecord {
	if t.count == 0 {
		return out
	}
	r := t.rec
	r.ID, r.Time, r.Seq, r.Prev = "", time.Time{}, 0, ""
	r.Count, r.First, r.Last = t.count, t.first.UTC(), t.last.UTC()
	like := "like this one (same address, caller, route and answer)"
	if t.mixedProject {
		// A count is shown in one project only if all it counts is of it.
		r.Project, r.Resource.Project = "", ""
		like = "like this one (same address, caller, route and answer), in several projects"
	}
	if t.coarse != oneKey {
		// Counted past a bound of keys: what it folded, as far as a few
		// samples tell.
		what := "of action " + t.actions.String()
		if key == overflowPrefix || t.coarse == callerKeys {
			what = "of actions " + t.actions.String()
		}
		why := "while the audit aggregation table was full"
		if t.coarse == callerKeys {
			why = "past the routes and answers one caller has counted apart in a window"
		}
		like = fmt.Sprintf("%s, counted together %s, from addresses %s, by %s",
			what, why, t.remotes.String(), t.callers.String())
		if len(t.remotes.vals) > 1 || t.remotes.more {
			r.Remote = "many"
		}
		if len(t.callers.vals) > 1 || t.callers.more {
			r.Actor = api.AuditActor{Kind: "many"}
		}
		r.Path, r.Resource.Name, r.Resource.UID, r.RequestID = "", "", "", ""
		if key == overflowPrefix || (t.coarse == callerKeys && len(t.actions.vals) > 1) {
			r.Action, r.Method, r.Status = "audit.overflow", "", 0
		}
		if t.mixedProject {
			like += ", in several projects"
		}
	}
	r.Message = fmt.Sprintf("%d more records %s between %s and %s, counted rather than written one by one",
		t.count, like, r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339))
	if t.rec.Message != "" {
		r.Message += "; the last said: " + Truncate(t.rec.Message, MaxMessageBytes/2)
	}
	return append(out, r)
}
