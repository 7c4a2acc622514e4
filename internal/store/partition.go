package store

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// Partition groups a collection's objects by keys of their own (a VM by
// the hosts it concerns, a volume by its host) and hands each key's
// objects and changes to whoever asks for that key alone. It is what a
// fleet needs where SubscribeWhere and Select would scan: with ten
// thousand hosts each watching its own VMs, a VM's change is offered to
// the one or two hosts it names instead of to ten thousand filters, and
// a host's VMs are read without visiting every VM.
//
// A Partition follows the collection from the store's watch, after its
// observers (Observe), so what List returns and what Subscribe delivers
// are exact as of the index, and known to every observer.
type Partition[T any] struct {
	c      *Collection[T]
	keysOf func(*T) []string

	mu     sync.Mutex
	byName map[string]member[T]
	byKey  map[string]map[string]*T
	subs   map[string]map[*subscriber[T]]struct{}
}

// member is what the partition holds of one object: the revision it was
// seen at, under which keys, and the object.
type member[T any] struct {
	rev  int64
	keys []string
	obj  *T
}

// NewPartition follows c, keying each object by keysOf (called on shared
// objects, from the store's watch: it must be quick, must not modify the
// object and should return each key once; empty keys are ignored). Make
// it before the objects are needed; it reads the index once.
func NewPartition[T any](c *Collection[T], keysOf func(*T) []string) *Partition[T] {
	p := &Partition[T]{
		c:      c,
		keysOf: keysOf,
		byName: make(map[string]member[T]),
		byKey:  make(map[string]map[string]*T),
		subs:   make(map[string]map[*subscriber[T]]struct{}),
	}
	// Changes published from here on reach observe, after the
	// collection's observers; what came before is read from the index
	// below, under the lock observe takes. A change published while the
	// index is read is seen in both: observe skips what is not newer than
	// what the partition holds.
	p.mu.Lock()
	defer p.mu.Unlock()
	c.subMu.Lock()
	c.partitions = append(c.partitions, p.observe)
	c.subMu.Unlock()
	c.snap.Load().Ascend(func(e *entry[T]) bool {
		p.add(e.name, e.rev, e.obj)
		return true
	})
	return p
}

// List returns the objects under key, sorted by name. They are shared:
// do not modify them.
func (p *Partition[T]) List(key string) []*T {
	p.mu.Lock()
	objs := p.byKey[key]
	names := make([]string, 0, len(objs))
	for name := range objs {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]*T, len(names))
	for i, name := range names {
		out[i] = objs[name]
	}
	p.mu.Unlock()
	return out
}

// Count is the number of objects under key.
func (p *Partition[T]) Count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byKey[key])
}

// Subscribe returns, in revision order, every change made after the call
// to an object that is or was under key: its Put while under key, its
// Put that took it from under key (Obj no longer has the key, Prev had
// it), and its Delete. Read List after subscribing: a change made in
// between is in both. The channel is closed when ctx ends or the store
// closes.
func (p *Partition[T]) Subscribe(ctx context.Context, key string) <-chan Change[T] {
	sub := &subscriber[T]{signal: make(chan struct{}, 1)}
	p.mu.Lock()
	set := p.subs[key]
	if set == nil {
		set = make(map[*subscriber[T]]struct{})
		p.subs[key] = set
	}
	set[sub] = struct{}{}
	p.mu.Unlock()
	return p.c.serve(ctx, sub, func() {
		p.mu.Lock()
		delete(set, sub)
		if len(p.subs[key]) == 0 {
			delete(p.subs, key)
		}
		p.mu.Unlock()
	})
}

// observe applies one change from the store's watch and offers it to the
// subscribers of the keys the object had and has.
func (p *Partition[T]) observe(ch Change[T]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.byName[ch.Name]
	if had && (ch.Rev < old.rev || (ch.Type == Put && ch.Rev == old.rev)) {
		return // already held: seen while the index was read
	}
	if !had && ch.Type == Delete {
		return // never held: nobody was told of it
	}
	if !had {
		// A new object, unless the index no longer has it at this
		// revision (a Put published before the partition read the index,
		// whose Delete follows): then it was never there to be told of.
		e, ok := p.c.snap.Load().Get(&entry[T]{name: ch.Name})
		if !ok || e.rev < ch.Rev {
			return
		}
	}
	var keys []string
	if had {
		keys = old.keys
		p.remove(ch.Name, old)
	}
	if ch.Type == Put {
		m := p.add(ch.Name, ch.Rev, ch.Obj)
		for _, k := range m.keys {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	for _, k := range keys {
		for sub := range p.subs[k] {
			sub.push([]Change[T]{ch})
		}
	}
}

// add puts name under its object's keys.
func (p *Partition[T]) add(name string, rev int64, obj *T) member[T] {
	var keys []string
	for _, k := range p.keysOf(obj) {
		if k != "" && !slices.Contains(keys, k) {
			keys = append(keys, strings.Clone(k))
		}
	}
	m := member[T]{rev: rev, keys: keys, obj: obj}
	p.byName[name] = m
	for _, k := range keys {
		objs := p.byKey[k]
		if objs == nil {
			objs = make(map[string]*T)
			p.byKey[k] = objs
		}
		objs[name] = obj
	}
	return m
}

// remove takes name out from under the keys it was held by.
func (p *Partition[T]) remove(name string, m member[T]) {
	delete(p.byName, name)
	for _, k := range m.keys {
		objs := p.byKey[k]
		delete(objs, name)
		if len(objs) == 0 {
			delete(p.byKey, k)
		}
	}
}
