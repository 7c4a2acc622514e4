package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/google/btree"
)

// btreeDegree suits trees of thousands of small entries.
const btreeDegree = 32

// Collection is a typed view of the objects of one kind, stored as JSON at
// "<prefix><kind>/<name>". Reads come from the in-memory index; writes go
// to etcd and return once the index has them.
type Collection[T any] struct {
	s          *Store
	kind       string
	keyPrefix  string
	setVersion func(*T, int64)
	log        *slog.Logger

	// tree is written only by the watch loop; readers use snap, an
	// immutable copy-on-write clone published after each batch of events,
	// so reads never wait for writes.
	tree    *btree.BTreeG[*entry[T]]
	pending []Change[T] // applied, not yet published
	dirty   bool
	snap    atomic.Pointer[btree.BTreeG[*entry[T]]]

	subMu     sync.Mutex
	subs      map[*subscriber[T]]struct{}
	observers []func(Change[T])
	// partitions see each change after every observer, so that what they
	// hand to their subscribers is already known to all observers (a
	// host told of its VM finds the placer knows it too).
	partitions []func(Change[T])
}

// entry is one indexed object.
type entry[T any] struct {
	name string
	rev  int64 // ModRevision of the key
	obj  *T
}

func lessEntry[T any](a, b *entry[T]) bool { return a.name < b.name }

// ChangeType says whether a change stored or removed an object.
type ChangeType int

const (
	Put    ChangeType = iota + 1 // an object was created or replaced
	Delete                       // an object was removed
)

func (t ChangeType) String() string {
	switch t {
	case Put:
		return "put"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("ChangeType(%d)", int(t))
}

// Change is one change to a collection, as seen by Subscribe.
type Change[T any] struct {
	Type ChangeType
	Name string
	// Obj is the new value, or on Delete the last value. Shared, read-only.
	Obj *T
	// Prev is the value before a Put (nil for a new object). Shared, read-only.
	Prev *T
	// Rev is the etcd revision of the change.
	Rev int64
}

// ListOptions select and page a List.
type ListOptions[T any] struct {
	// Limit caps the objects returned; 0 returns all.
	Limit int
	// Continue is the token a previous List returned, to get the next page.
	Continue string
	// Filter, when set, keeps only the objects it returns true for. It runs
	// on shared objects and must not modify them.
	Filter func(*T) bool
}

// NewCollection registers the collection of kind (one path segment, such as
// "vms") in s. Register every collection before Start. setVersion, when not
// nil, stores an object's etcd ModRevision into it (its Meta.Version).
func NewCollection[T any](s *Store, kind string, setVersion func(*T, int64)) *Collection[T] {
	c := &Collection[T]{
		s:          s,
		kind:       kind,
		keyPrefix:  s.prefix + kind + "/",
		setVersion: setVersion,
		log:        s.log.With("kind", kind),
		tree:       btree.NewG(btreeDegree, lessEntry[T]),
		subs:       make(map[*subscriber[T]]struct{}),
	}
	c.snap.Store(c.tree.Clone())
	s.register(kind, c)
	return c
}

// Kind is the collection's kind, the key segment after the prefix.
func (c *Collection[T]) Kind() string { return c.kind }

// Key is the etcd key of the object name.
func (c *Collection[T]) Key(name string) string { return c.keyPrefix + name }

// Get returns the object name from the index. The object is shared with
// every other reader: do not modify it (see Clone).
func (c *Collection[T]) Get(name string) (*T, bool) {
	e, ok := c.snap.Load().Get(&entry[T]{name: name})
	if !ok {
		return nil, false
	}
	return e.obj, true
}

// Len is the number of objects in the index.
func (c *Collection[T]) Len() int { return c.snap.Load().Len() }

// List returns objects sorted by name, at most opts.Limit of them, and a
// continue token when more objects match. The objects are shared: do not
// modify them.
func (c *Collection[T]) List(opts ListOptions[T]) ([]*T, string, error) {
	if opts.Limit < 0 {
		return nil, "", fmt.Errorf("list %s: negative limit %d", c.kind, opts.Limit)
	}
	tree := c.snap.Load()
	var after string
	if opts.Continue != "" {
		b, err := base64.RawURLEncoding.DecodeString(opts.Continue)
		if err != nil || len(b) == 0 {
			return nil, "", fmt.Errorf("list %s: %w", c.kind, ErrInvalidContinue)
		}
		after = string(b)
	}
	size := tree.Len()
	if opts.Limit > 0 && opts.Limit < size {
		size = opts.Limit
	}
	out := make([]*T, 0, size)
	var next, lastName string
	visit := func(e *entry[T]) bool {
		if opts.Filter != nil && !opts.Filter(e.obj) {
			return true
		}
		if opts.Limit > 0 && len(out) == opts.Limit {
			// One more object matches: the page is full and has a next.
			next = base64.RawURLEncoding.EncodeToString([]byte(lastName))
			return false
		}
		out = append(out, e.obj)
		lastName = e.name
		return true
	}
	if opts.Continue != "" {
		// The first name after `after` is after+"\x00".
		tree.AscendGreaterOrEqual(&entry[T]{name: after + "\x00"}, visit)
	} else {
		tree.Ascend(visit)
	}
	return out, next, nil
}

// Select returns every object that passes filter (every object for a nil
// filter), sorted by name. The objects are shared: do not modify them.
func (c *Collection[T]) Select(filter func(*T) bool) []*T {
	items, _, _ := c.List(ListOptions[T]{Filter: filter})
	return items
}

// Walk visits the objects in name order as on a ring: from the first
// name at or after from to the last, then from the first to just before
// from, each once, until visit returns false. Callers that look at a few
// objects of many start each walk where the last one stopped, so that
// every object gets its turn. The objects are shared: do not modify them.
func (c *Collection[T]) Walk(from string, visit func(*T) bool) {
	tree := c.snap.Load()
	more := true
	tree.AscendGreaterOrEqual(&entry[T]{name: from}, func(e *entry[T]) bool {
		more = visit(e.obj)
		return more
	})
	if !more || from == "" {
		return
	}
	tree.AscendLessThan(&entry[T]{name: from}, func(e *entry[T]) bool { return visit(e.obj) })
}

// Clone returns a deep copy of v (through JSON), for a caller to modify.
func Clone[T any](v *T) *T {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: clone %T: %v", v, err))
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("store: clone %T: %v", v, err))
	}
	return out
}

// Create stores obj as name, failing with ErrExists if name exists. It
// returns the new revision, which it also sets as obj's version.
func (c *Collection[T]) Create(ctx context.Context, name string, obj *T) (int64, error) {
	return c.s.Txn(ctx, c.OpCreate(name, obj))
}

// Update replaces name with obj if the stored object's version is still
// expectVersion (0: whatever it is). It fails with ErrConflict on a stale
// version and ErrNotFound if name is gone. It returns the new revision,
// which it also sets as obj's version.
func (c *Collection[T]) Update(ctx context.Context, name string, obj *T, expectVersion int64) (int64, error) {
	return c.s.Txn(ctx, c.OpUpdate(name, obj, expectVersion))
}

// Delete removes name if its version is still expectVersion (0: whatever
// it is). It fails with ErrConflict on a stale version and ErrNotFound if
// name does not exist.
func (c *Collection[T]) Delete(ctx context.Context, name string, expectVersion int64) error {
	_, err := c.s.Txn(ctx, c.OpDelete(name, expectVersion))
	return err
}

// decode parses a stored value and stamps its version.
func (c *Collection[T]) decode(name string, value []byte, rev int64) (*T, bool) {
	obj := new(T)
	if err := json.Unmarshal(value, obj); err != nil {
		c.log.Error("skip undecodable object", "name", name, "revision", rev, "err", err)
		return nil, false
	}
	if c.setVersion != nil {
		c.setVersion(obj, rev)
	}
	return obj, true
}

// Read returns the object name as the store holds it now: a linearizable
// read through the etcd quorum, not the index (which a server cut off
// from the quorum keeps serving). ErrNotFound when it does not exist.
func (c *Collection[T]) Read(ctx context.Context, name string) (*T, error) {
	if c.s.ctx.Err() != nil {
		return nil, ErrClosed
	}
	resp, err := c.s.client.Get(ctx, c.keyPrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading %s %q from the store: %w", c.kind, name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("reading %s %q from the store: %w", c.kind, name, ErrNotFound)
	}
	obj, ok := c.decode(name, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if !ok {
		return nil, fmt.Errorf("reading %s %q from the store: undecodable", c.kind, name)
	}
	return obj, nil
}
