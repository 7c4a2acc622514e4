// Package v2vrun runs VM migrations from other hypervisors in the control
// plane: on the leading server only, it plans each migration (reads its
// source's hardware with the provider binding's credentials, an uploaded
// package or one it fetched) and runs the started ones with internal/v2v,
// in waves, checkpointed in the server's data directory, so that a
// migration survives a restart of its server and resumes where its copy
// stopped. The disks become the project's images and the VMs are created
// through the server's own API; the source VM is then kept, powered off
// or deleted as the migration says.
package v2vrun

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Audit records what the controller did, as the system, to a migration.
type Audit func(ctx context.Context, action string, target api.Ref, opID, outcome, msg string)

// Config wires the controller.
type Config struct {
	// Migrations are the records; the controller writes their status.
	Migrations *store.Collection[api.VMMigration]
	// Dir holds the job directories, one per migration by UID.
	Dir string
	// Server names this server in the records it runs.
	Server string
	// Sources opens a migration's source.
	Sources Opener
	// Target makes images and VMs in the migration's project.
	Target Target
	Audit  Audit
	Logger *slog.Logger
	// Poll is how often the records are looked at (default 500 ms);
	// ReportEvery how often a run writes its progress (default 1 s).
	Poll, ReportEvery time.Duration
	// CheckpointBytes is how often a streamed copy is checkpointed
	// (default 64 MiB).
	CheckpointBytes int64
	// VirtV2V is virt-v2v-in-place's path, "" when not installed.
	VirtV2V string
}

// Controller plans and runs migrations while its server leads.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	jobs map[string]*job // by record key
	wg   sync.WaitGroup
}

// job is a plan or a run under way.
type job struct {
	uid    string
	cancel context.CancelCauseFunc
}

// Why a run stops before its end: the user's cancel or delete, which
// undo what the run half-made, unlike the end of the server's term,
// which leaves everything for the next leader to resume.
var (
	errCancelled = errors.New("migration cancelled")
	errDeleted   = errors.New("migration deleted")
)

// New makes a controller; Lead runs it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = time.Second
	}
	if cfg.Audit == nil {
		cfg.Audit = func(context.Context, string, api.Ref, string, string, string) {}
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "migrations"), jobs: map[string]*job{}}
}

// Lead plans and runs migrations until ctx ends (the term does), every
// write fenced by w. Runs under way when it ends stop where they are:
// the next leader resumes them from their checkpoints.
func (c *Controller) Lead(ctx context.Context, w store.Writer) {
	recs := &storeRecords{c: c.cfg.Migrations, w: w}
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for n := 0; ; n++ {
		c.tick(ctx, recs, n%20 == 0)
		select {
		case <-ctx.Done():
			c.wg.Wait()
			return
		case <-t.C:
		}
	}
}

// tick starts what the records ask for and stops what they no longer do.
func (c *Controller) tick(ctx context.Context, recs Records, sweep bool) {
	live := map[string]bool{}
	for _, m := range recs.List() {
		if !final(m.Status.State) {
			live[m.UID] = true
		}
		switch {
		case m.Spec.Cancel && m.Status.State == api.VMMigrationRunning:
			// Cancelled while no run of this server had it (it ran
			// under the previous leader): undo what it half-made.
			c.start(ctx, m, func(ctx context.Context) {
				cctx, cancel := context.WithCancelCause(ctx)
				cancel(errCancelled)
				c.run(cctx, recs, m)
			})
		case m.Spec.Cancel:
		case m.Status.State == api.VMMigrationPlanning:
			c.start(ctx, m, func(ctx context.Context) { c.plan(ctx, recs, m) })
		case m.Status.State == api.VMMigrationPending, m.Status.State == api.VMMigrationRunning:
			c.start(ctx, m, func(ctx context.Context) { c.run(ctx, recs, m) })
		}
	}
	c.mu.Lock()
	for key, j := range c.jobs {
		m, ok := recs.Get(key)
		switch {
		case !ok || m.UID != j.uid:
			j.cancel(errDeleted)
		case m.Spec.Cancel:
			j.cancel(errCancelled)
		}
		live[j.uid] = true
	}
	c.mu.Unlock()
	if sweep {
		c.sweep(live)
	}
}

// start runs fn for the record unless something runs for it already.
func (c *Controller) start(ctx context.Context, m *api.VMMigration, fn func(context.Context)) {
	key := m.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.jobs[key]; busy {
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	j := &job{uid: m.UID, cancel: cancel}
	c.jobs[key] = j
	c.wg.Go(func() {
		defer func() {
			cancel(nil)
			c.mu.Lock()
			if c.jobs[key] == j {
				delete(c.jobs, key)
			}
			c.mu.Unlock()
		}()
		fn(jctx)
	})
}

// sweep removes the job directories of migrations that ended or are
// gone: their uploads, fetched packages, copies and checkpoints.
func (c *Controller) sweep(live map[string]bool) {
	ents, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !live[e.Name()] {
			if err := os.RemoveAll(filepath.Join(c.cfg.Dir, e.Name())); err != nil {
				c.log.Warn("removing a migration's job directory", "dir", e.Name(), "err", err)
			}
		}
	}
}

func (c *Controller) jobDir(uid string) string { return filepath.Join(c.cfg.Dir, uid) }

func final(state string) bool {
	return state == api.VMMigrationSucceeded || state == api.VMMigrationFailed || state == api.VMMigrationCancelled
}

// Records is how the controller reads and writes migration records.
type Records interface {
	List() []*api.VMMigration
	Get(key string) (*api.VMMigration, bool)
	// Update changes the record of that key and UID with change, again
	// on a conflict; errGone when it is no longer there.
	Update(ctx context.Context, key, uid string, change func(*api.VMMigration)) (*api.VMMigration, error)
}

var errGone = errors.New("the migration's record is gone")

type storeRecords struct {
	c *store.Collection[api.VMMigration]
	w store.Writer
}

func (r *storeRecords) List() []*api.VMMigration {
	all, _, _ := r.c.List(store.ListOptions[api.VMMigration]{})
	return all
}

func (r *storeRecords) Get(key string) (*api.VMMigration, bool) { return r.c.Get(key) }

func (r *storeRecords) Update(ctx context.Context, key, uid string, change func(*api.VMMigration)) (*api.VMMigration, error) {
	for attempt := 0; ; attempt++ {
		cur, ok := r.c.Get(key)
		if !ok || cur.UID != uid {
			return nil, errGone
		}
		next := store.Clone(cur)
		change(next)
		next.UpdatedAt = time.Now().UTC()
		_, err := r.w.Txn(ctx, r.c.OpUpdate(key, next, cur.Version))
		if err == nil {
			m, _ := r.c.Get(key)
			return m, nil
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, errGone
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 20 {
			return nil, err
		}
	}
}
