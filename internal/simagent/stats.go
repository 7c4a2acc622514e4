package simagent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
)

// Stats is what a fleet has done so far, for the people and benchmarks
// watching it. Counters count since the fleet started.
type Stats struct {
	Time  time.Time `json:"time"`
	Hosts int       `json:"hosts"`
	// Registered hosts have credentials (from this run or an earlier one);
	// RegisterSeconds is from the first registration of this run to the
	// last, once every host is registered.
	Registered      int     `json:"registered"`
	Registrations   int64   `json:"registrations"`
	RegisterErrors  int64   `json:"registerErrors"`
	RegisterSeconds float64 `json:"registerSeconds,omitempty"`
	// Heartbeating hosts had their last heartbeat answered.
	Heartbeating    int     `json:"heartbeating"`
	Heartbeats      int64   `json:"heartbeats"`
	HeartbeatErrors int64   `json:"heartbeatErrors"`
	Heartbeat       Latency `json:"heartbeat"`
	// HeartbeatLate is how late heartbeats left against their schedule:
	// the simulator's own lag, which must stay small for the load it puts
	// on the server to be the load it claims.
	HeartbeatLate Latency `json:"heartbeatLate"`
	Watching      int     `json:"watching"`
	WatchConnects int64   `json:"watchConnects"`
	WatchErrors   int64   `json:"watchErrors"`
	Revoked       int     `json:"revoked"`
	// VMs are those the hosts know of, Running those running on them.
	VMs          int     `json:"vms"`
	Running      int     `json:"running"`
	Converging   int64   `json:"converging"`
	Reports      int64   `json:"reports"`
	ReportErrors int64   `json:"reportErrors"`
	ConvergeErrs int64   `json:"convergeErrors"`
	Report       Latency `json:"report"`
	Streams      int64   `json:"streams"`
	// Starts counts the VM starts the hosts made (a create that runs its
	// VM starts it once).
	Starts int64 `json:"starts"`
}

// Latency summarises recent samples of a duration, in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"p50Ms"`
	P99Ms   float64 `json:"p99Ms"`
	MaxMs   float64 `json:"maxMs"`
}

// ring keeps the last samples of a duration.
type ring struct {
	mu   sync.Mutex
	buf  []time.Duration
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]time.Duration, n)} }

func (r *ring) add(d time.Duration) {
	r.mu.Lock()
	r.buf[r.next] = d
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

func (r *ring) summary() Latency {
	r.mu.Lock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	s := slices.Clone(r.buf[:n])
	r.mu.Unlock()
	if len(s) == 0 {
		return Latency{}
	}
	slices.Sort(s)
	at := func(p float64) float64 { return ms(s[min(int(p*float64(len(s))), len(s)-1)]) }
	return Latency{Samples: len(s), P50Ms: at(0.50), P99Ms: at(0.99), MaxMs: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// counters are the fleet's running counts.
type counters struct {
	registrations, registerErrors  atomic.Int64
	heartbeats, heartbeatErrors    atomic.Int64
	watchConnects, watchErrors     atomic.Int64
	watching                       atomic.Int64
	converging                     atomic.Int64
	reports, reportErrors, convErr atomic.Int64
	streams                        atomic.Int64
	starts                         atomic.Int64
	heartbeat, late, report        *ring
}

func newCounters() *counters {
	return &counters{heartbeat: newRing(8192), late: newRing(8192), report: newRing(8192)}
}

// warner logs a kind of failure at most once per period, with how many of
// that kind it did not log: ten thousand hosts losing their server at once
// make one line, not ten thousand.
type warner struct {
	log    *slog.Logger
	period time.Duration

	mu    sync.Mutex
	kinds map[string]*warnKind
}

type warnKind struct {
	last       time.Time
	suppressed int
}

func newWarner(log *slog.Logger, period time.Duration) *warner {
	return &warner{log: log, period: period, kinds: map[string]*warnKind{}}
}

func (w *warner) warn(kind, host string, err error) {
	w.mu.Lock()
	k := w.kinds[kind]
	if k == nil {
		k = &warnKind{}
		w.kinds[kind] = k
	}
	now := time.Now()
	if now.Sub(k.last) < w.period {
		k.suppressed++
		w.mu.Unlock()
		return
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	w.mu.Unlock()
	w.log.Warn(kind, "host", host, "err", err, "alsoSince", n)
}

// writeStats saves s as JSON at path, atomically.
func writeStats(path string, s Stats) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding simulator stats: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return fmt.Errorf("writing simulator stats: %w", err)
	}
	return nil
}
