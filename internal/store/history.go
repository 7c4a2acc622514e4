package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrCompacted says a revision asked for is older than the history etcd
// still keeps: whoever follows from it must read the current state again.
var ErrCompacted = errors.New("revision compacted")

// ErrFutureRevision says a revision asked for is newer than any write.
var ErrFutureRevision = errors.New("revision not reached yet")

// Record is one change under the store's prefix as etcd's history holds
// it, before it is decoded: Follow's unit. Every server of a cluster
// reads the same records at the same revisions.
type Record struct {
	Kind string
	Name string
	Type ChangeType
	// Value is the new value; on Delete, the last value, when etcd still
	// had it.
	Value []byte
	// Prev is the value before a Put, when there was one and etcd still
	// had it.
	Prev []byte
	// ValueRev and PrevRev are the revisions Value and Prev were written
	// at (an object's version).
	ValueRev, PrevRev int64
	// Created says the Put created the key.
	Created bool
	Rev     int64
}

// Follow reads every change to the collections of kinds (none: all) made
// after revision after, in revision order, straight from etcd's history,
// and goes on with each new change until ctx ends or the watch fails.
// after 0 means from now. It returns the revision it follows after, so
// that a caller cut off later can resume from the last record it got, at
// this server or another one. When after is older than the history
// etcd keeps, it fails with ErrCompacted; when it is newer than the last
// write, with ErrFutureRevision.
//
// The records channel is closed when following ends; the error channel
// then yields why (nothing when ctx ended) and is closed.
func (s *Store) Follow(ctx context.Context, after int64, kinds ...string) (<-chan Record, <-chan error, int64, error) {
	if after < 0 {
		return nil, nil, 0, fmt.Errorf("follow from revision %d: %w", after, ErrFutureRevision)
	}
	// One read at the revision asked for says whether the history still
	// holds it, and what the latest revision is.
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if after > 0 {
		opts = append(opts, clientv3.WithRev(after))
	}
	resp, err := s.client.Get(ctx, s.prefix, opts...)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil, nil, 0, fmt.Errorf("follow from revision %d: %w", after, ErrCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return nil, nil, 0, fmt.Errorf("follow from revision %d: %w", after, ErrFutureRevision)
	case err != nil:
		return nil, nil, 0, fmt.Errorf("follow from revision %d: %w", after, err)
	}
	if after == 0 {
		after = resp.Header.Revision
	}
	want := make(map[string]bool, len(kinds))
	for _, k := range kinds {
		want[k] = true
	}
	out := make(chan Record, 64)
	errc := make(chan error, 1)
	// A member cut off from its cluster's leader ends the watch rather
	// than going quiet: the caller then resumes at another server.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(after+1), clientv3.WithPrevKV())
	go func() {
		defer cancel()
		defer close(errc)
		defer close(out)
		rev := after
		for resp := range wch {
			if resp.CompactRevision != 0 {
				errc <- fmt.Errorf("follow from revision %d: %w at %d", rev+1, ErrCompacted, resp.CompactRevision)
				return
			}
			if err := resp.Err(); err != nil {
				errc <- fmt.Errorf("follow from revision %d: %w", rev+1, err)
				return
			}
			for _, ev := range resp.Events {
				rec, ok := s.record(ev)
				rev = ev.Kv.ModRevision
				if !ok || (len(want) > 0 && !want[rec.Kind]) {
					continue
				}
				select {
				case out <- rec:
				case <-ctx.Done():
					return
				}
			}
		}
		if ctx.Err() == nil {
			errc <- fmt.Errorf("follow from revision %d: the watch ended", rev+1)
		}
	}()
	return out, errc, after, nil
}

// record turns a watch event into a Record; ok is false for keys that are
// not an object of a collection.
func (s *Store) record(ev *clientv3.Event) (Record, bool) {
	kind, name, ok := s.splitKey(ev.Kv.Key)
	if !ok {
		return Record{}, false
	}
	r := Record{Kind: kind, Name: name, Rev: ev.Kv.ModRevision}
	if ev.PrevKv != nil {
		r.Prev, r.PrevRev = ev.PrevKv.Value, ev.PrevKv.ModRevision
	}
	if ev.Type == mvccpb.DELETE {
		r.Type, r.Value, r.ValueRev, r.Prev, r.PrevRev = Delete, r.Prev, r.PrevRev, nil, 0
		return r, true
	}
	r.Type, r.Value, r.ValueRev, r.Created = Put, ev.Kv.Value, ev.Kv.ModRevision, ev.IsCreate()
	return r, true
}

// ChangeOf decodes a Record of this collection's kind into the Change
// Subscribe would have delivered for it. ok is false for a record of
// another kind, or one whose value does not decode (or, for a delete,
// that etcd no longer had).
func (c *Collection[T]) ChangeOf(r Record) (Change[T], bool) {
	if r.Kind != c.kind || r.Value == nil {
		return Change[T]{}, false
	}
	obj, ok := c.decode(r.Name, r.Value, r.ValueRev)
	if !ok {
		return Change[T]{}, false
	}
	ch := Change[T]{Type: r.Type, Name: r.Name, Obj: obj, Rev: r.Rev}
	if r.Type == Put && !r.Created {
		// An update whose earlier value etcd no longer holds still is
		// an update: Prev stands for it with the new value.
		ch.Prev = obj
		if r.Prev != nil {
			if prev, ok := c.decode(r.Name, r.Prev, r.PrevRev); ok {
				ch.Prev = prev
			}
		}
	}
	return ch, true
}
