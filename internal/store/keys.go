package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Raw keys hold small values that are not objects of a collection
// (idempotency keys, join tokens). A raw key is relative to the prefix, like
// "idempotency/<key>"; its first segment must not be a collection's kind.
// Raw keys are read from etcd directly, not from the index.

// PutKey stores val at key. A ttl above zero attaches a lease, so the key
// disappears after ttl (rounded up to whole seconds).
func (s *Store) PutKey(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	full, err := s.rawKey(key)
	if err != nil {
		return fmt.Errorf("put key %q: %w", key, err)
	}
	lease, err := s.grantLease(ctx, ttl)
	if err != nil {
		return fmt.Errorf("put key %q: %w", key, err)
	}
	if _, err := s.client.Put(ctx, full, string(val), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put key %q: %w", key, err)
	}
	return nil
}

// CreateKey stores val at key unless key exists (ErrExists). A ttl above
// zero attaches a lease as in PutKey.
func (s *Store) CreateKey(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	full, err := s.rawKey(key)
	if err != nil {
		return fmt.Errorf("create key %q: %w", key, err)
	}
	lease, err := s.grantLease(ctx, ttl)
	if err != nil {
		return fmt.Errorf("create key %q: %w", key, err)
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(full), "=", 0)).
		Then(clientv3.OpPut(full, string(val), clientv3.WithLease(lease))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = &KeyError{Op: "create", Name: key, Err: ErrExists}
	}
	if err != nil {
		s.revokeUnused(lease)
		var kerr *KeyError
		if errors.As(err, &kerr) {
			return err
		}
		return fmt.Errorf("create key %q: %w", key, err)
	}
	return nil
}

// GetKey returns the value at key, or ErrNotFound.
func (s *Store) GetKey(ctx context.Context, key string) ([]byte, error) {
	full, err := s.rawKey(key)
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", key, err)
	}
	resp, err := s.client.Get(ctx, full)
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, &KeyError{Op: "get", Name: key, Err: ErrNotFound}
	}
	return resp.Kvs[0].Value, nil
}

// DeleteKey removes key, or returns ErrNotFound if it does not exist.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	full, err := s.rawKey(key)
	if err != nil {
		return fmt.Errorf("delete key %q: %w", key, err)
	}
	resp, err := s.client.Delete(ctx, full)
	if err != nil {
		return fmt.Errorf("delete key %q: %w", key, err)
	}
	if resp.Deleted == 0 {
		return &KeyError{Op: "delete", Name: key, Err: ErrNotFound}
	}
	return nil
}

// rawKey checks a raw key and returns its full etcd key.
func (s *Store) rawKey(key string) (string, error) {
	if s.ctx.Err() != nil {
		return "", ErrClosed
	}
	if key == "" {
		return "", errors.New("empty key")
	}
	kind, _, _ := strings.Cut(key, "/")
	if s.isCollection(kind) {
		return "", fmt.Errorf("key is inside collection %q", kind)
	}
	return s.prefix + key, nil
}

// grantLease grants a lease of ttl; for ttl <= 0 it returns NoLease.
func (s *Store) grantLease(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	if ttl <= 0 {
		return clientv3.NoLease, nil
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	resp, err := s.client.Grant(ctx, secs)
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("grant lease of %v: %w", ttl, err)
	}
	return resp.ID, nil
}

// revokeUnused revokes a lease that a failed write did not use; it would
// expire anyway, so a failure is only logged.
func (s *Store) revokeUnused(lease clientv3.LeaseID) {
	if lease == clientv3.NoLease {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	if _, err := s.client.Revoke(ctx, lease); err != nil {
		s.log.Debug("revoke unused lease", "err", err)
	}
}
