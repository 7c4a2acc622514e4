package store

import (
	"context"
	"slices"
	"sync"

	"github.com/google/btree"
)

// The methods in this file implement indexer; only the watch loop calls
// them, so they touch tree and pending without locking.

func (c *Collection[T]) applyPut(name string, value []byte, rev int64) {
	obj, ok := c.decode(name, value, rev)
	if !ok {
		// The key no longer holds an object; an older value must not
		// stand in for it (a reload would drop it too).
		c.applyDelete(name, rev)
		return
	}
	prev, had := c.tree.ReplaceOrInsert(&entry[T]{name: name, rev: rev, obj: obj})
	ch := Change[T]{Type: Put, Name: name, Obj: obj, Rev: rev}
	if had {
		ch.Prev = prev.obj
	}
	c.pending = append(c.pending, ch)
	c.dirty = true
}

func (c *Collection[T]) applyDelete(name string, rev int64) {
	old, had := c.tree.Delete(&entry[T]{name: name})
	if !had {
		return
	}
	c.pending = append(c.pending, Change[T]{Type: Delete, Name: name, Obj: old.obj, Rev: rev})
	c.dirty = true
}

// replace swaps in a freshly loaded tree. Objects whose revision did not
// change are kept without decoding them again. Subscribers get the
// difference as changes: puts at each object's revision, deletes at the
// load's revision.
func (c *Collection[T]) replace(kvs []rawKV, rev int64) {
	old := c.tree
	fresh := btree.NewG(btreeDegree, lessEntry[T])
	var changes []Change[T]
	for _, kv := range kvs {
		oe, had := old.Get(&entry[T]{name: kv.name})
		if had && oe.rev == kv.rev {
			fresh.ReplaceOrInsert(oe)
			continue
		}
		obj, ok := c.decode(kv.name, kv.value, kv.rev)
		if !ok {
			continue
		}
		fresh.ReplaceOrInsert(&entry[T]{name: kv.name, rev: kv.rev, obj: obj})
		ch := Change[T]{Type: Put, Name: kv.name, Obj: obj, Rev: kv.rev}
		if had {
			ch.Prev = oe.obj
		}
		changes = append(changes, ch)
	}
	old.Ascend(func(oe *entry[T]) bool {
		if !fresh.Has(oe) {
			changes = append(changes, Change[T]{Type: Delete, Name: oe.name, Obj: oe.obj, Rev: rev})
		}
		return true
	})
	slices.SortStableFunc(changes, func(a, b Change[T]) int {
		switch {
		case a.Rev < b.Rev:
			return -1
		case a.Rev > b.Rev:
			return 1
		}
		return 0
	})
	c.tree = fresh
	c.pending = append(c.pending, changes...)
	c.dirty = true
}

// publish makes the applied changes visible: first to readers, then to
// observers and subscribers, so one that reads the index on a change sees
// it. Observers see the changes before the store's revision moves past
// them.
func (c *Collection[T]) publish() {
	if !c.dirty {
		return
	}
	c.snap.Store(c.tree.Clone())
	c.dirty = false
	if len(c.pending) == 0 {
		return
	}
	c.subMu.Lock()
	for _, fn := range c.observers {
		for _, ch := range c.pending {
			fn(ch)
		}
	}
	for _, fn := range c.partitions {
		for _, ch := range c.pending {
			fn(ch)
		}
	}
	for sub := range c.subs {
		sub.push(c.pending)
	}
	c.subMu.Unlock()
	clear(c.pending)
	c.pending = c.pending[:0]
}

// subscriber is one Subscribe call: an unbounded queue drained by its own
// goroutine, so a slow reader never holds up the index or other readers.
type subscriber[T any] struct {
	mu     sync.Mutex
	queue  []Change[T]
	signal chan struct{}        // capacity 1: "the queue is not empty"
	keep   func(Change[T]) bool // nil: every change
}

func (sub *subscriber[T]) push(changes []Change[T]) {
	sub.mu.Lock()
	had := len(sub.queue)
	if sub.keep == nil {
		sub.queue = append(sub.queue, changes...)
	} else {
		for _, ch := range changes {
			if sub.keep(ch) {
				sub.queue = append(sub.queue, ch)
			}
		}
	}
	added := len(sub.queue) > had
	sub.mu.Unlock()
	if !added {
		return
	}
	select {
	case sub.signal <- struct{}{}:
	default:
	}
}

// Observe calls fn with every change to the collection from then on, in
// revision order, from the store's watch itself: a change's revision is
// not reached (WaitRev, and the return of the write that made it) until
// fn has seen it, so what fn keeps is exact as of the index. fn must be
// quick and must neither write to the store nor wait for it, nor take a
// lock held by anyone who does. What was there before Observe, the caller
// reads from the index afterwards, under the same lock as fn's: the index
// it reads is at least as new as any change fn has seen, and a change may
// be seen twice.
func (c *Collection[T]) Observe(fn func(Change[T])) {
	c.subMu.Lock()
	c.observers = append(c.observers, fn)
	c.subMu.Unlock()
}

// Subscribe returns every change to the collection made after the call, in
// revision order. The channel is closed when ctx ends or the store closes.
// After the watch had to reload (its history was compacted), the changes
// are the difference between the old and the new contents rather than
// every intermediate write.
func (c *Collection[T]) Subscribe(ctx context.Context) <-chan Change[T] {
	return c.SubscribeWhere(ctx, nil)
}

// SubscribeWhere is Subscribe for the changes keep returns true for (all
// when keep is nil). keep is called from the store's watch for every
// change, once per subscriber, before any goroutine is woken: a thousand
// subscribers that each want a few changes (the hosts' watches, each for
// its own VMs) cost a thousand calls per change, not a thousand wake-ups
// and copies. It must be quick and must not block or take locks.
func (c *Collection[T]) SubscribeWhere(ctx context.Context, keep func(Change[T]) bool) <-chan Change[T] {
	sub := &subscriber[T]{signal: make(chan struct{}, 1), keep: keep}
	c.subMu.Lock()
	c.subs[sub] = struct{}{}
	c.subMu.Unlock()
	return c.serve(ctx, sub, func() {
		c.subMu.Lock()
		delete(c.subs, sub)
		c.subMu.Unlock()
	})
}

// serve delivers sub's queue on the channel it returns, from its own
// goroutine, until ctx ends or the store closes; then it calls leave and
// closes the channel.
func (c *Collection[T]) serve(ctx context.Context, sub *subscriber[T], leave func()) <-chan Change[T] {
	out := make(chan Change[T])
	go func() {
		defer close(out)
		defer leave()
		done := c.s.ctx.Done()
		for {
			sub.mu.Lock()
			batch := sub.queue
			sub.queue = nil
			sub.mu.Unlock()
			if len(batch) == 0 {
				select {
				case <-sub.signal:
					continue
				case <-ctx.Done():
					return
				case <-done:
					return
				}
			}
			for _, ch := range batch {
				select {
				case out <- ch:
				case <-ctx.Done():
					return
				case <-done:
					return
				}
			}
		}
	}()
	return out
}
