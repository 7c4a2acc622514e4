package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// loadPage is how many keys one range request of a (re)load returns.
	loadPage = 1000
	// retryMin and retryMax bound the pause between failed loads.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// indexer is the untyped face of a Collection that the watch loop feeds.
// Only the watch loop calls these, from one goroutine.
type indexer interface {
	// replace makes the index hold exactly kvs, as read at revision rev.
	replace(kvs []rawKV, rev int64)
	// applyPut and applyDelete apply one watch event.
	applyPut(name string, value []byte, rev int64)
	applyDelete(name string, rev int64)
	// publish makes the changes applied so far visible to readers.
	publish()
}

// rawKV is one stored object as read from etcd.
type rawKV struct {
	name  string
	value []byte
	rev   int64 // ModRevision
}

// Start loads every collection from etcd and keeps them current with one
// watch over the prefix until Close. It returns once the first load is
// done (or ctx ends; the loading then goes on in the background). Calling
// it again only waits for that first load.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return fmt.Errorf("start store: %w", ErrClosed)
	}
	if !s.started {
		s.started = true
		s.wg.Add(1)
		go s.run()
	}
	s.mu.Unlock()

	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		last := s.loadErr
		s.mu.Unlock()
		if last != nil {
			return fmt.Errorf("load state from etcd: %w (last error: %v)", ctx.Err(), last)
		}
		return fmt.Errorf("load state from etcd: %w", ctx.Err())
	case <-s.ctx.Done():
		return fmt.Errorf("start store: %w", ErrClosed)
	}
}

// WaitRev returns once the index reflects revision rev: every write up to
// rev under the prefix is visible through Get and List. rev must be the
// revision of a write under the prefix (or an earlier one).
func (s *Store) WaitRev(ctx context.Context, rev int64) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return fmt.Errorf("wait for revision %d: %w", rev, ErrNotStarted)
	}
	return s.rev.wait(ctx, rev)
}

// Rev is the etcd revision the index reflects.
func (s *Store) Rev() int64 { return s.rev.current() }

// run loads and then watches, reloading whenever the watch cannot go on
// (the revision it needs was compacted, the member lost its leader, etcd
// went away).
func (s *Store) run() {
	defer s.wg.Done()
	loadedOnce := false
	pause := retryMin
	for {
		rev, err := s.load(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.setLoadErr(err)
			s.log.Warn("load state from etcd failed; retrying", "err", err, "retry_in", pause)
		} else {
			if !loadedOnce {
				loadedOnce = true
				close(s.loaded)
			}
			if s.beforeWatch != nil {
				s.beforeWatch()
			}
			started := time.Now()
			err = s.watch(s.ctx, rev)
			if s.ctx.Err() != nil {
				return
			}
			s.setLoadErr(err)
			if errors.Is(err, errCompacted) {
				// The history the watch needs is gone; reload at once.
				s.log.Info("watch history compacted; reloading", "err", err)
				continue
			}
			if time.Since(started) > retryMax {
				// A watch that ran for a while is a fresh failure, not
				// one more of a series.
				pause = retryMin
			}
			s.log.Warn("etcd watch ended; reloading", "err", err, "retry_in", pause)
		}
		select {
		case <-time.After(pause):
		case <-s.ctx.Done():
			return
		}
		pause = min(2*pause, retryMax)
	}
}

func (s *Store) setLoadErr(err error) {
	s.mu.Lock()
	s.loadErr = err
	s.mu.Unlock()
}

var errCompacted = errors.New("revision compacted")

// restartWatch ends the running watch, so that the store reloads.
func (s *Store) restartWatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchCancel != nil {
		s.watchCancel()
	}
}

// load reads the whole prefix at one revision, replaces every collection's
// contents with it and returns that revision.
func (s *Store) load(ctx context.Context) (int64, error) {
	byKind := make(map[string][]rawKV, len(s.collections))
	end := clientv3.GetPrefixRangeEnd(s.prefix)
	key := s.prefix
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(loadPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.client.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("read %s from %q: %w", s.prefix, key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if kind, name, ok := s.splitKey(kv.Key); ok {
				if _, known := s.collections[kind]; known {
					byKind[kind] = append(byKind[kind], rawKV{name: name, value: kv.Value, rev: kv.ModRevision})
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	for kind, ix := range s.collections {
		ix.replace(byKind[kind], rev)
		ix.publish()
	}
	s.rev.advance(rev)
	s.log.Debug("loaded state", "revision", rev)
	return rev, nil
}

// watch applies every change after rev until the watch ends; it always
// returns an error saying why.
func (s *Store) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	s.mu.Lock()
	s.watchCancel = cancel
	s.mu.Unlock()
	wch := s.client.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("watch from revision %d: %w at %d", rev+1, errCompacted, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch from revision %d: %w", rev+1, err)
		}
		if len(resp.Events) == 0 {
			continue
		}
		s.apply(resp.Events)
		rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch from revision %d: channel closed", rev+1)
}

// apply feeds a batch of watch events to the collections, publishes them
// and then advances the applied revision, so that a writer woken for its
// revision finds its write in the index.
func (s *Store) apply(events []*clientv3.Event) {
	var touched [4]indexer
	dirty := touched[:0]
	for _, ev := range events {
		kind, name, ok := s.splitKey(ev.Kv.Key)
		if !ok {
			continue
		}
		ix, ok := s.collections[kind]
		if !ok {
			continue
		}
		switch ev.Type {
		case mvccpb.PUT:
			ix.applyPut(name, ev.Kv.Value, ev.Kv.ModRevision)
		case mvccpb.DELETE:
			ix.applyDelete(name, ev.Kv.ModRevision)
		}
		if !containsIndexer(dirty, ix) {
			dirty = append(dirty, ix)
		}
	}
	for _, ix := range dirty {
		ix.publish()
	}
	s.rev.advance(events[len(events)-1].Kv.ModRevision)
}

func containsIndexer(list []indexer, ix indexer) bool {
	for _, x := range list {
		if x == ix {
			return true
		}
	}
	return false
}

// splitKey splits "<prefix><kind>/<name>" into kind and name.
func (s *Store) splitKey(key []byte) (kind, name string, ok bool) {
	rest, ok := strings.CutPrefix(string(key), s.prefix)
	if !ok {
		return "", "", false
	}
	kind, name, ok = strings.Cut(rest, "/")
	if !ok || kind == "" || name == "" {
		return "", "", false
	}
	return kind, name, true
}
