// Package admission makes a check of a shared limit (a project's quota, a
// host's room) and the write it admits one step in etcd, whichever server
// makes them. Each limit has a record; an admission reads the record's
// version, waits until the index holds at least that revision, decides
// from the index, and writes the record again in the transaction of what
// it admits, on the condition that the record is still at the version it
// read. Two admissions that decided from the same state cannot both
// commit: the second fails with a conflict and decides again from the
// newer state (Retry). Releasing room (a delete) writes no record: an
// admission that has not seen it yet only refuses a little early.
package admission

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Kind is the store kind of the admission records.
const Kind = "admission"

// Record is the admission record of one limit.
type Record struct {
	Name    string `json:"name"`
	Version int64  `json:"-"`
	// Admitted is when the record last admitted something.
	Admitted time.Time `json:"admitted"`
}

// ProjectRecord names the record of a project's quota.
func ProjectRecord(project string) string { return "projects/" + project }

// HostRecord names the record of a host's room.
func HostRecord(host string) string { return "hosts/" + host }

// Records reads and writes admission records.
type Records struct {
	st *store.Store
	c  *store.Collection[Record]
}

// NewCollection registers the admission records' collection in st.
func NewCollection(st *store.Store) *store.Collection[Record] {
	return store.NewCollection(st, Kind, func(r *Record, rev int64) { r.Version = rev })
}

// New returns the records of st kept in c.
func New(st *store.Store, c *store.Collection[Record]) *Records { return &Records{st: st, c: c} }

// Ticket is what an admission read of one record: the version it decides
// at.
type Ticket struct {
	name    string
	version int64 // 0: no record yet
	c       *store.Collection[Record]
}

// Read reads the record name and returns once the index holds at least
// its revision, so that what the caller decides from the index next
// includes everything that record admitted.
func (r *Records) Read(ctx context.Context, name string) (Ticket, error) {
	t := Ticket{name: name, c: r.c}
	if rec, ok := r.c.Get(name); ok {
		t.version = rec.Version
		if err := r.st.WaitRev(ctx, rec.Version); err != nil {
			return Ticket{}, fmt.Errorf("reading the admission record %s: %w", name, err)
		}
	}
	return t, nil
}

// Op writes the record again on the condition that it is still at the
// version read: the part of an admitted write's transaction that makes
// the admission hold.
func (t Ticket) Op() store.Op {
	rec := &Record{Name: t.name, Admitted: time.Now().UTC()}
	if t.version == 0 {
		return t.c.OpCreate(t.name, rec)
	}
	return t.c.OpUpdate(t.name, rec, t.version)
}

// Retry tells whether err is a transaction's failure on one of the
// conditions of an admission (its records, or the version of the project
// or host it decided from): the caller decides again from the newer state.
func Retry(err error) bool {
	var ke *store.KeyError
	if !errors.As(err, &ke) {
		return false
	}
	switch ke.Kind {
	case Kind, "projects", "hosts":
		return true
	}
	return false
}

// MaxAttempts bounds how often one admission decides again after losing a
// race with another.
const MaxAttempts = 64

// Lost is the answer to a request whose admission lost its race
// MaxAttempts times (hundreds of creates at once on a few hosts): the
// control plane is busy, nothing was made, and the same request may be
// sent again. Other errors are returned as they are.
func Lost(err error) error {
	if !Retry(err) {
		return err
	}
	return fmt.Errorf("%w (%w)", &api.Error{Code: api.CodeUnavailable,
		Message: "too many requests at once for the same project or host: nothing was changed; try again"}, err)
}

// Backoff pauses before attempt n (from 1) of an admission that lost a
// race: a little, and a little more each time (up to 100 ms), so that
// many admissions racing for one record spread out over seconds.
func Backoff(ctx context.Context, n int) error {
	d := time.Duration(min(2*n, 100)) * time.Millisecond
	d = d/2 + rand.N(d)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
