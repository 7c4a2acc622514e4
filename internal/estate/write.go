package estate

import (
	"context"
	"errors"
	"fmt"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// maxRetries bounds how often a write that lost a race with another
// writer is made again on the object's newest version.
const maxRetries = 10

// errGone says the object to write no longer exists (or no longer is the
// one meant); a write that finds it so has nothing left to do.
var errGone = errors.New("gone")

// update writes what change makes of the object name holds in c, reading
// it again and calling change again when another writer got there first
// (a conflict). change returns nil when there is nothing to write, or
// errGone wrapped when the object is no longer the one to write. An object
// gone is not an error; any other failure, and a conflict that persists,
// is returned, wrapped, for the caller to log or pass on.
func update[T any](ctx context.Context, w store.Writer, c *store.Collection[T], name string, version func(*T) int64, change func(cur *T) (*T, error)) error {
	for range maxRetries {
		cur, ok := c.Get(name)
		if !ok {
			return nil
		}
		next, err := change(cur)
		if errors.Is(err, errGone) {
			return nil
		}
		if err != nil || next == nil {
			return err
		}
		_, err = w.Txn(ctx, c.OpUpdate(name, next, version(cur)))
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("updating %s %q: %w", c.Kind(), name, err)
		}
	}
	return fmt.Errorf("updating %s %q: it kept changing: %w", c.Kind(), name, store.ErrConflict)
}

// remove deletes the object name holds in c if keep says it is still the
// one to delete, reading it again after a conflict. An object already gone
// is not an error.
func remove[T any](ctx context.Context, w store.Writer, c *store.Collection[T], name string, version func(*T) int64, keep func(cur *T) bool) error {
	for range maxRetries {
		cur, ok := c.Get(name)
		if !ok || !keep(cur) {
			return nil
		}
		_, err := w.Txn(ctx, c.OpDelete(name, version(cur)))
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("removing %s %q: %w", c.Kind(), name, err)
		}
	}
	return fmt.Errorf("removing %s %q: it kept changing: %w", c.Kind(), name, store.ErrConflict)
}

func vmVersion(v *api.VM) int64             { return v.Version }
func hostVersion(h *api.Host) int64         { return h.Version }
func providerVersion(p *api.Provider) int64 { return p.Version }
