package throttle

import (
	"container/list"
	"time"
)

// DefaultMaxKeys is how many keys a Limiter or Login tracks at most,
// unless WithMaxKeys says otherwise.
const DefaultMaxKeys = 100_000

// evictScan is how many of the least recently used entries an eviction
// looks at for one it may prefer to drop.
const evictScan = 32

// table maps keys to values, in the order they were last touched, and
// drops those untouched for ttl. Callers hold a lock around it.
type table[V any] struct {
	ttl   time.Duration
	max   int
	items map[string]*list.Element // of *entry[V]
	order list.List                // front: most recently touched
}

type entry[V any] struct {
	key     string
	touched time.Time
	val     V
}

func newTable[V any](ttl time.Duration, maxKeys int) *table[V] {
	return &table[V]{ttl: ttl, max: maxKeys, items: make(map[string]*list.Element)}
}

func (t *table[V]) get(key string) (*entry[V], bool) {
	el, ok := t.items[key]
	if !ok {
		return nil, false
	}
	return el.Value.(*entry[V]), true
}

// touch marks e as used at now.
func (t *table[V]) touch(e *entry[V], now time.Time) {
	e.touched = now
	t.order.MoveToFront(t.items[e.key])
}

// add adds key, touched at now, first making room if the table is full:
// it drops the least recently touched entry, though of the evictScan
// least recent it prefers the first that keep does not hold on to.
func (t *table[V]) add(key string, val V, now time.Time, keep func(V) bool) *entry[V] {
	for len(t.items) >= t.max && t.order.Len() > 0 {
		victim := t.order.Back()
		if keep != nil {
			for el, i := victim, 0; el != nil && i < evictScan; el, i = el.Prev(), i+1 {
				if !keep(el.Value.(*entry[V]).val) {
					victim = el
					break
				}
			}
		}
		t.removeElement(victim)
	}
	e := &entry[V]{key: key, touched: now, val: val}
	t.items[key] = t.order.PushFront(e)
	return e
}

func (t *table[V]) remove(key string) {
	if el, ok := t.items[key]; ok {
		t.removeElement(el)
	}
}

func (t *table[V]) removeElement(el *list.Element) {
	delete(t.items, el.Value.(*entry[V]).key)
	t.order.Remove(el)
}

// sweep drops the entries untouched for ttl at now. As entries are kept in
// the order they were touched, it looks at no more than it drops, plus one.
func (t *table[V]) sweep(now time.Time) {
	for el := t.order.Back(); el != nil; el = t.order.Back() {
		if now.Sub(el.Value.(*entry[V]).touched) < t.ttl {
			return
		}
		t.removeElement(el)
	}
}

func (t *table[V]) len() int { return len(t.items) }
