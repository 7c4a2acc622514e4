package store

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Sentinel errors. Every error the store returns for a failed precondition
// wraps one of these in a *KeyError, so callers test with errors.Is and find
// the object with errors.As.
var (
	// ErrExists is returned when creating a key that already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict is returned when an object changed since the version the
	// caller read (optimistic concurrency).
	ErrConflict = errors.New("version conflict")
	// ErrNotFound is returned when the object or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidContinue is returned by List for a continue token it did not
	// issue.
	ErrInvalidContinue = errors.New("invalid continue token")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("store closed")
	// ErrNotStarted is returned by writes made before Start: they could not
	// wait for the index to see them.
	ErrNotStarted = errors.New("store not started")
	// ErrFenced is wrapped by the error of a write made under a fence
	// (Store.Fenced) that no longer holds: a leader that lost its lead.
	ErrFenced = errors.New("fenced: the writer no longer leads")
	// ErrReadOnly is wrapped by the error of a write refused while the
	// store is read-only (SetReadOnly).
	ErrReadOnly = errors.New("store is read-only")
)

// KeyError names the object a failed precondition concerns.
type KeyError struct {
	Op   string // what was being done: create, update, delete
	Kind string // collection kind; empty for a raw key
	Name string // object name, or the raw key
	Err  error  // one of the sentinel errors
}

func (e *KeyError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("%s key %q: %v", e.Op, e.Name, e.Err)
	}
	return fmt.Sprintf("%s %s %q: %v", e.Op, e.Kind, e.Name, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

// IsNoSpace reports whether err is etcd refusing a write because its
// database reached its quota (its NOSPACE alarm; see ReclaimSpace).
func IsNoSpace(err error) bool {
	return errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace)
}

// IsUnavailable reports whether err is the store unable to answer for
// now: its members are electing a raft leader, or a write timed out
// waiting for one. Such a write may still have been committed: a request
// is to be repeated with its idempotency key, not taken as refused.
func IsUnavailable(err error) bool {
	for _, e := range []error{
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrNotCapable, rpctypes.ErrTooManyRequests,
		rpctypes.ErrGRPCTimeout, rpctypes.ErrGRPCTimeoutDueToLeaderFail, rpctypes.ErrGRPCTimeoutDueToConnectionLost,
		rpctypes.ErrGRPCLeaderChanged, rpctypes.ErrGRPCNoLeader, rpctypes.ErrGRPCNotCapable,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
