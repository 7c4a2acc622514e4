package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type opType int

const (
	opCreate opType = iota + 1
	opUpdate
	opDelete
	opGuard     // a condition only: a fence (see Fence)
	opCheck     // a condition only: an object's version
	opNoneUnder // a condition only: no object's name has a prefix
)

func (t opType) String() string {
	switch t {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opGuard:
		return "fence"
	case opCheck:
		return "check"
	case opNoneUnder:
		return "check none under"
	default:
		return "delete"
	}
}

// Writer commits transactions. The Store is one; a view of it may add a
// condition of its own to every transaction it commits. Code that writes
// through a Writer rather than the Store itself can be handed either.
type Writer interface {
	Txn(ctx context.Context, ops ...Op) (int64, error)
}

var _ Writer = (*Store)(nil)

// Op is one write of a Txn, built by a collection's OpCreate, OpUpdate or
// OpDelete.
type Op struct {
	s          *Store
	typ        opType
	kind, name string
	key        string
	value      []byte
	expect     int64       // expected ModRevision; 0 for any
	setVersion func(int64) // stamps the new revision into the caller's object
	err        error       // a problem found while building the op
}

// OpCreate is a Txn write that creates name (ErrExists if it exists).
func (c *Collection[T]) OpCreate(name string, obj *T) Op {
	return c.putOp(opCreate, name, obj, 0)
}

// OpUpdate is a Txn write that replaces name if its version is still
// expectVersion (0: whatever it is).
func (c *Collection[T]) OpUpdate(name string, obj *T, expectVersion int64) Op {
	return c.putOp(opUpdate, name, obj, expectVersion)
}

// OpCheck is a Txn condition, not a write: name still exists at
// version (ErrConflict when it changed, ErrNotFound when it is gone).
// What a transaction decided from an object it read, it holds to that
// object's version this way.
func (c *Collection[T]) OpCheck(name string, version int64) Op {
	op := Op{s: c.s, typ: opCheck, kind: c.kind, name: name, key: c.Key(name), expect: version}
	op.err = checkName(name)
	if op.err == nil && version == 0 {
		op.err = errors.New("check of no version")
	}
	return op
}

// OpDelete is a Txn write that deletes name if its version is still
// expectVersion (0: whatever it is).
func (c *Collection[T]) OpDelete(name string, expectVersion int64) Op {
	op := Op{s: c.s, typ: opDelete, kind: c.kind, name: name, key: c.Key(name), expect: expectVersion}
	op.err = checkName(name)
	return op
}

// OpNoneUnder is a Txn condition, not a write: no object of the
// collection has a name that starts with prefix (as they are when the
// transaction applies, before its writes). It fails with ErrExists naming
// an object found there.
func (c *Collection[T]) OpNoneUnder(prefix string) Op {
	op := Op{s: c.s, typ: opNoneUnder, kind: c.kind, name: prefix, key: c.Key(prefix)}
	op.err = checkName(prefix)
	return op
}

func (c *Collection[T]) putOp(typ opType, name string, obj *T, expect int64) Op {
	op := Op{s: c.s, typ: typ, kind: c.kind, name: name, key: c.Key(name), expect: expect}
	if op.err = checkName(name); op.err != nil {
		return op
	}
	if obj == nil {
		op.err = errors.New("nil object")
		return op
	}
	op.value, op.err = json.Marshal(obj)
	if c.setVersion != nil {
		op.setVersion = func(rev int64) { c.setVersion(obj, rev) }
	}
	return op
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	return nil
}

// Txn applies ops atomically: all of them or, when one precondition fails,
// none. The error then wraps ErrExists, ErrConflict or ErrNotFound in a
// *KeyError naming the first op that failed. On success Txn returns the
// new revision once the index reflects it, and sets it as the version of
// every object written. If ctx ends after the commit but before the index
// caught up, Txn returns the revision together with ctx's error: the write
// happened.
func (s *Store) Txn(ctx context.Context, ops ...Op) (int64, error) {
	if len(ops) == 0 {
		return 0, errors.New("commit transaction: no operations")
	}
	// A write before Start could not wait for the index; refuse it before
	// it lands rather than report an error for a write that happened.
	if err := s.usable(); err != nil && !(errors.Is(err, ErrReadOnly) && usesReserve(ctx)) {
		return 0, fmt.Errorf("commit transaction: %w", err)
	}
	cmps := make([]clientv3.Cmp, 0, len(ops))
	thens := make([]clientv3.Op, 0, len(ops))
	elses := make([]clientv3.Op, 0, len(ops))
	seen := make(map[string]bool, len(ops))
	for _, op := range ops {
		if op.s != s {
			return 0, fmt.Errorf("%s %s %q: operation built for another store", op.typ, op.kind, op.name)
		}
		if op.err != nil {
			return 0, fmt.Errorf("%s %s %q: %w", op.typ, op.kind, op.name, op.err)
		}
		if op.typ == opNoneUnder {
			end := clientv3.GetPrefixRangeEnd(op.key)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.key), "=", 0).WithRange(end))
			elses = append(elses, clientv3.OpGet(op.key, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1)))
			continue
		}
		if seen[op.key] {
			return 0, fmt.Errorf("%s %s %q: key written twice in one transaction", op.typ, op.kind, op.name)
		}
		seen[op.key] = true
		switch {
		case op.typ == opGuard:
			cmps = append(cmps, guardCmp(op))
		case op.typ == opCreate:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.key), "=", 0))
		case op.expect == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.key), ">", 0))
		default:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.key), "=", op.expect))
		}
		switch op.typ {
		case opGuard, opCheck:
		case opDelete:
			thens = append(thens, clientv3.OpDelete(op.key))
		default:
			thens = append(thens, clientv3.OpPut(op.key, string(op.value)))
		}
		// Read only when a precondition fails, to say which one.
		elses = append(elses, clientv3.OpGet(op.key, clientv3.WithKeysOnly()))
	}
	resp, err := s.client.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		if len(ops) == 1 {
			return 0, fmt.Errorf("%s %s %q: %w", ops[0].typ, ops[0].kind, ops[0].name, err)
		}
		return 0, fmt.Errorf("commit transaction of %d operations: %w", len(ops), err)
	}
	if !resp.Succeeded {
		return 0, failedOp(ops, resp)
	}
	rev := resp.Header.Revision
	if len(thens) == 0 {
		// Only checks: nothing was written, so there is nothing for the
		// index to catch up with (rev may be a write outside the prefix).
		return rev, nil
	}
	for _, op := range ops {
		if op.setVersion != nil {
			op.setVersion(rev)
		}
	}
	if err := s.WaitRev(ctx, rev); err != nil {
		return rev, err
	}
	return rev, nil
}

// failedOp finds the op whose precondition failed from the keys the else
// branch read.
func failedOp(ops []Op, resp *clientv3.TxnResponse) error {
	// A broken fence first: the writer must stop, not retry.
	for i, op := range ops {
		if op.typ != opGuard || i >= len(resp.Responses) {
			continue
		}
		if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) == 0 || kvs[0].CreateRevision != op.expect {
			return fmt.Errorf("%w: %s created at %d no longer holds", ErrFenced, op.name, op.expect)
		}
	}
	for i, op := range ops {
		if i >= len(resp.Responses) {
			break
		}
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		var err error
		switch {
		case op.typ == opGuard:
			continue
		case op.typ == opNoneUnder && len(kvs) > 0:
			return &KeyError{Op: op.typ.String(), Kind: op.kind, Name: string(kvs[0].Key[len(op.key)-len(op.name):]), Err: ErrExists}
		case op.typ == opNoneUnder:
		case op.typ == opCreate && len(kvs) > 0:
			err = ErrExists
		case op.typ != opCreate && len(kvs) == 0:
			err = ErrNotFound
		case op.typ != opCreate && op.expect != 0 && kvs[0].ModRevision != op.expect:
			err = ErrConflict
		}
		if err != nil {
			return &KeyError{Op: op.typ.String(), Kind: op.kind, Name: op.name, Err: err}
		}
	}
	return errors.New("commit transaction: a precondition failed but no key explains it")
}
