// Package diskspace watches the free space of the disks Polyvisor writes
// its state to, and says when one is too full to write to safely.
package diskspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Usage is the space of the filesystem holding Path.
type Usage struct {
	Path string
	// Free is what an unprivileged writer may still use; Total the size.
	Free, Total uint64
}

// Stat returns the space of the filesystem holding path.
func Stat(path string) (Usage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("checking the free space of %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return Usage{Path: path, Free: st.Bavail * bs, Total: st.Blocks * bs}, nil
}

// ErrLow is wrapped by the error of a disk under its reserve.
var ErrLow = errors.New("disk space low")

// LowError says which disk is under its reserve.
type LowError struct {
	Usage
	Reserve uint64
}

func (e *LowError) Error() string {
	return fmt.Sprintf("the disk holding %s is full: %s free of %s, under the %s kept in reserve; "+
		"Polyvisor refuses changes until space is freed there (reads keep working)",
		e.Path, Bytes(e.Free), Bytes(e.Total), Bytes(e.Reserve))
}

func (e *LowError) Unwrap() error { return ErrLow }

// Bytes formats a size for a person.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Guard keeps a reserve of free space on the disks of some paths: while a
// disk has less, Err says so; once it has the reserve and an eighth more,
// Err is nil again. Its methods are safe for concurrent use.
type Guard struct {
	paths   []string
	reserve uint64
	log     *slog.Logger
	now     func() time.Time
	stat    func(string) (Usage, error)
	// onChange is called, outside the lock, with the new state's error.
	onChange func(error)

	mu    sync.Mutex
	low   *LowError
	since time.Time
}

// NewGuard watches the disks of paths with a reserve of reserve bytes (0
// turns the guard off). onChange, if not nil, is called with the new error
// (nil once space is back) whenever the state changes.
func NewGuard(reserve uint64, log *slog.Logger, onChange func(error), paths ...string) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{paths: paths, reserve: reserve, log: log, now: time.Now, stat: Stat, onChange: onChange}
}

// Check looks at the disks now and returns a *LowError when one is under
// the reserve. A disk that cannot be looked at is not taken to be full.
func (g *Guard) Check() error {
	if g == nil || g.reserve == 0 {
		return nil
	}
	g.mu.Lock()
	wasLow := g.low != nil
	need := g.reserve
	if wasLow {
		need += g.reserve / 8 // leave read-only with some room to spare
	}
	g.mu.Unlock()
	var low *LowError
	for _, p := range g.paths {
		u, err := g.stat(p)
		if err != nil {
			g.log.Warn("checking free disk space", "path", p, "err", err)
			continue
		}
		if u.Free < need {
			low = &LowError{Usage: u, Reserve: g.reserve}
			break
		}
	}
	g.mu.Lock()
	changed := (low != nil) != wasLow
	if changed {
		g.since = g.now()
	}
	g.low = low
	g.mu.Unlock()
	if changed {
		if low != nil {
			g.log.Error("disk full: read-only until space is freed", "path", low.Path, "free", low.Free,
				"total", low.Total, "reserve", g.reserve)
		} else {
			g.log.Warn("disk space is back: writable again", "paths", g.paths)
		}
		if g.onChange != nil {
			if low != nil {
				g.onChange(low)
			} else {
				g.onChange(nil)
			}
		}
	}
	if low != nil {
		return low
	}
	return nil
}

// Err returns the state of the last check: a *LowError, or nil.
func (g *Guard) Err() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.low != nil {
		return g.low
	}
	return nil
}

// Alarm returns the disk-full alarm while a disk is under its reserve.
func (g *Guard) Alarm() *api.Alarm {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.low == nil {
		return nil
	}
	return &api.Alarm{Name: api.AlarmDiskFull, Message: g.low.Error(), Since: g.since, Path: g.low.Path}
}

// Run checks the disks every interval until ctx ends.
func (g *Guard) Run(ctx context.Context, interval time.Duration) {
	if g == nil || g.reserve == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = g.Check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
