package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/controller/leader"
	"github.com/polyvisor/polyvisor/internal/controller/liveness"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/store"
)

// testServer is one server's store and controllers, without the API.
type testServer struct {
	name string
	// heartbeat is the hosts' heartbeat timeout (200ms when zero).
	heartbeat time.Duration
	st        *store.Store
	col       Collections
	set       *Set
	stop      context.CancelFunc
	done      chan struct{}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// openTestServer opens a store (an embedded etcd in dataDir, or the etcd
// at endpoints) with the controllers' collections, and wires the
// controllers; start runs them.
func openTestServer(t *testing.T, name, dataDir string, endpoints []string) *testServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := store.Config{Logger: testLogger(t).With("server", name)}
	if endpoints == nil {
		cfg.DataDir = dataDir
	} else {
		cfg.Endpoints = endpoints
	}
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("opening the store of %s: %v", name, err)
	}
	t.Cleanup(func() { st.Close() })
	col := Collections{
		VMs:         store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev }),
		Hosts:       store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev }),
		Images:      store.NewCollection(st, "images", func(i *api.Image, rev int64) { i.Version = rev }),
		Ops:         store.NewCollection(st, "operations", func(o *api.Operation, rev int64) { o.Version = rev }),
		Projects:    store.NewCollection(st, "projects", func(p *api.Project, rev int64) { p.Version = rev }),
		Idempotency: store.NewCollection(st, "idempotency", func(r *ops.IdempotencyRecord, rev int64) { r.Version = rev }),
		Providers:   store.NewCollection(st, "providers", func(p *api.Provider, rev int64) { p.Version = rev }),
		Credentials: store.NewCollection(st, "credentials", func(c *estate.Credential, rev int64) { c.Version = rev }),
		Admission:   admission.NewCollection(st),
		Beats:       store.NewCollection(st, "heartbeats", func(b *liveness.Beats, rev int64) { b.Version = rev }),
	}
	if err := st.Start(ctx); err != nil {
		t.Fatalf("starting the store of %s: %v", name, err)
	}
	ts := &testServer{name: name, st: st, col: col}
	ts.wire(t)
	return ts
}

// wire makes the server's controllers anew (as after a restart).
func (ts *testServer) wire(t *testing.T) {
	timeout := ts.heartbeat
	if timeout == 0 {
		timeout = 200 * time.Millisecond
	}
	ts.set = New(context.Background(), Config{Store: ts.st, Collections: ts.col, Name: ts.name, ID: "id-" + ts.name, ImageDir: t.TempDir(),
		HeartbeatTimeout: timeout, LeaseInterval: time.Second, Logger: testLogger(t).With("server", ts.name)})
}

// start runs the server's controllers until stopped (or the test ends).
func (ts *testServer) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ts.stop, ts.done = cancel, make(chan struct{})
	ts.set.Start(ctx, "https://"+ts.name+".test:7443")
	go func() {
		defer close(ts.done)
		<-ctx.Done()
		ts.set.Wait()
	}()
	t.Cleanup(ts.halt)
}

// halt stops the server's controllers and waits for them.
func (ts *testServer) halt() {
	if ts.stop != nil {
		ts.stop()
		<-ts.done
	}
}

// eventually calls cond until it returns nil, failing the test with its
// last error after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaderOf returns the one server that leads, failing when two do.
func leaderOf(servers ...*testServer) (*testServer, leader.Term, error) {
	var found *testServer
	var term leader.Term
	for _, s := range servers {
		if t, ok := s.set.Term(); ok {
			if found != nil {
				return nil, leader.Term{}, fmt.Errorf("%s and %s both lead (terms %d and %d)", found.name, s.name, term.Fence.Rev, t.Fence.Rev)
			}
			found, term = s, t
		}
	}
	if found == nil {
		return nil, leader.Term{}, errors.New("nobody leads")
	}
	return found, term, nil
}

// TestLeaderElection: two servers' controllers over one etcd elect one
// leader, which both read from etcd; when the leader's session is lost
// (its lease revoked, as when it dies), the other takes over within the
// session's TTL, with a later term.
func TestLeaderElection(t *testing.T) {
	a := openTestServer(t, "alpha", t.TempDir(), nil)
	b := openTestServer(t, "beta", "", a.st.Endpoints())
	a.start(t)
	b.start(t)
	ctx := context.Background()

	var first *testServer
	var term1 leader.Term
	eventually(t, 20*time.Second, "one of two servers leads", func() (err error) {
		first, term1, err = leaderOf(a, b)
		return err
	})
	// Both read the same leader from etcd, and only one leads all along.
	for _, s := range []*testServer{a, b} {
		got, ok, err := s.set.Leader(ctx)
		if err != nil || !ok || got.Name != first.name || got.Fence != term1.Fence || got.URL != "https://"+first.name+".test:7443" {
			t.Fatalf("%s reads the leader as %+v %v %v, want %s in term %d", s.name, got, ok, err, first.name, term1.Fence.Rev)
		}
	}
	for range 20 {
		if _, _, err := leaderOf(a, b); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The leader's session is lost: its lease, and with it its key, go.
	revokeTerm(t, first, term1)
	other := a
	if first == a {
		other = b
	}
	var term2 leader.Term
	eventually(t, 15*time.Second, "the other server takes over", func() error {
		l, t2, err := leaderOf(a, b)
		if err != nil {
			return err
		}
		if l != other {
			return fmt.Errorf("%s leads, want %s", l.name, other.name)
		}
		term2 = t2
		return nil
	})
	if term2.Fence.Rev <= term1.Fence.Rev {
		t.Errorf("the new term began at revision %d, not after the old one's %d", term2.Fence.Rev, term1.Fence.Rev)
	}
	if got, ok, err := first.set.Leader(ctx); err != nil || !ok || got.Name != other.name {
		t.Errorf("the deposed server reads the leader as %+v %v %v, want %s", got, ok, err, other.name)
	}
}

// revokeTerm revokes the lease of a leader's session, as etcd does when
// the leader stops renewing it.
func revokeTerm(t *testing.T, s *testServer, term leader.Term) {
	t.Helper()
	ctx := context.Background()
	resp, err := s.st.Client().Get(ctx, term.Fence.Key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("reading the leader's key %s: %v %v", term.Fence.Key, resp, err)
	}
	if _, err := s.st.Client().Revoke(ctx, clientLease(resp.Kvs[0].Lease)); err != nil {
		t.Fatalf("revoking the leader's session: %v", err)
	}
}

// recorder is a writer that remembers what became of every transaction.
type recorder struct {
	w    store.Writer
	mu   sync.Mutex
	errs []error
}

func (r *recorder) Txn(ctx context.Context, ops ...store.Op) (int64, error) {
	rev, err := r.w.Txn(ctx, ops...)
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	return rev, err
}

func (r *recorder) results() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// TestDeposedLeaderIsFenced: a leader that lost its term and has not
// noticed goes on working with its old term. Every write its controllers
// try is refused (store.ErrFenced) and nothing it meant lands: the
// pending operation it tries to start stays pending, the silent host it
// tries to mark stays ready. A leader of a new term then does both.
func TestDeposedLeaderIsFenced(t *testing.T) {
	a := openTestServer(t, "alpha", t.TempDir(), nil)
	b := openTestServer(t, "beta", "", a.st.Endpoints())
	a.start(t)
	b.start(t)
	var first *testServer
	var stale leader.Term
	eventually(t, 20*time.Second, "one of two servers leads", func() (err error) {
		first, stale, err = leaderOf(a, b)
		return err
	})
	revokeTerm(t, first, stale)
	eventually(t, 15*time.Second, "another term begins", func() error {
		_, now, err := leaderOf(a, b)
		if err == nil && now.Fence == stale.Fence {
			err = errors.New("the old term still holds")
		}
		return err
	})
	// Nobody leads any more; the deposed server has only its old term.
	a.halt()
	b.halt()

	ctx := context.Background()
	col := first.col
	now := time.Now().UTC()
	host := &api.Host{Meta: api.Meta{Name: "silent", UID: "u-h", Generation: 1, CreatedAt: now},
		Status: api.HostStatus{State: api.HostReady, CPUs: 4, MemoryMiB: 4096, LastHeartbeat: now}}
	vm := &api.VM{Meta: api.Meta{Name: "v", Project: "p", UID: "u-v", Generation: 1, CreatedAt: now},
		Spec:   api.VMSpec{Host: "silent", VCPUs: 1, MemoryMiB: 64, PowerState: api.PowerStopped},
		Status: api.VMStatus{PowerState: api.PowerStopped, ObservedGeneration: 1}}
	op := ops.NewOperation(api.OpVMStart, api.Ref{Kind: "vm", Name: "v", UID: "u-v", Project: "p"}, nil)
	if _, err := first.st.Txn(ctx, col.Hosts.OpCreate("silent", host), col.VMs.OpCreate("p/v", vm), col.Ops.OpCreate(op.ID, op)); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{w: first.st.Fenced(stale.Fence)}
	if _, err := rec.Txn(ctx, col.Hosts.OpUpdate("silent", host, 0)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a write under the old term: %v, want ErrFenced", err)
	}
	// The deposed server's controllers lead on with the old term.
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { first.set.Ops.Lead(lctx, rec, stale.Won) })
	wg.Go(func() { first.set.Liveness.Lead(lctx, rec) })
	eventually(t, 10*time.Second, "the deposed leader tries to write", func() error {
		if n := len(rec.results()); n < 3 {
			return fmt.Errorf("%d writes tried", n)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // more rounds of both loops
	stop()
	wg.Wait()
	for i, err := range rec.results() {
		if !errors.Is(err, store.ErrFenced) {
			t.Errorf("write %d of the deposed leader: %v, want ErrFenced", i, err)
		}
	}
	if got, _ := col.Ops.Get(op.ID); got.Status != api.OpPending {
		t.Errorf("the deposed leader started the operation: %s", got.Status)
	}
	if got, _ := col.VMs.Get("p/v"); got.Generation != 1 || got.Spec.PowerState != api.PowerStopped {
		t.Errorf("the deposed leader changed the vm: generation %d, %s", got.Generation, got.Spec.PowerState)
	}
	if got, _ := col.Hosts.Get("silent"); got.Status.State != api.HostReady {
		t.Errorf("the deposed leader marked the host %s", got.Status.State)
	}

	// A leader of a new term does what the deposed one could not.
	first.wire(t)
	first.start(t)
	eventually(t, 20*time.Second, "a new leader starts the operation and marks the silent host", func() error {
		// Started (and then failed, once its host is seen lost).
		if got, _ := col.Ops.Get(op.ID); got.StartedAt.IsZero() {
			return fmt.Errorf("operation %s, not started", got.Status)
		}
		if got, _ := col.Hosts.Get("silent"); got.Status.State != api.HostNotReady {
			return fmt.Errorf("host %s", got.Status.State)
		}
		return nil
	})
}

func clientLease(id int64) clientv3.LeaseID { return clientv3.LeaseID(id) }

// TestRestartedServerLeadsAtOnce: a server killed while it led leaves its
// election key until its lease expires; the same server started again
// (same ID) removes it and leads at once, while the key of another server
// is left to its lease.
func TestRestartedServerLeadsAtOnce(t *testing.T) {
	a := openTestServer(t, "alpha", t.TempDir(), nil)
	ctx := context.Background()
	cli := a.st.Client()
	// A key as a killed run of another server left it, with a lease far
	// longer than the test.
	plant := func(id, name string) clientv3.LeaseID {
		lease, err := cli.Grant(ctx, 600)
		if err != nil {
			t.Fatal(err)
		}
		val := fmt.Sprintf(`{"id":%q,"name":%q}`, id, name)
		if _, err := cli.Put(ctx, fmt.Sprintf("%s/%x", ElectionPrefix(a.st), lease.ID), val, clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
		return lease.ID
	}
	other := plant("id-gamma", "gamma")
	a.start(t)
	time.Sleep(2 * time.Second)
	if _, ok := a.set.Term(); ok {
		t.Fatal("alpha leads while another server's key holds")
	}
	if _, err := cli.Revoke(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "alpha leads once the other key is gone", func() error {
		if _, ok := a.set.Term(); !ok {
			return errors.New("alpha does not lead")
		}
		return nil
	})

	// Killed while leading: its key outlives it. Started again, it leads
	// without waiting for that key's lease.
	a.halt()
	plant("id-alpha", "alpha")
	a.wire(t)
	a.start(t)
	eventually(t, 15*time.Second, "alpha, restarted, leads at once", func() error {
		if _, ok := a.set.Term(); !ok {
			return errors.New("alpha does not lead")
		}
		return nil
	})
}

// TestHeartbeatsAtAnotherServer: a host whose agent reports to a server
// that does not lead stays ready while it heartbeats there (the servers
// share what they hear through the store), and the leader marks it not
// ready once it falls silent.
func TestHeartbeatsAtAnotherServer(t *testing.T) {
	a := openTestServer(t, "alpha", t.TempDir(), nil)
	b := openTestServer(t, "beta", "", a.st.Endpoints())
	for _, s := range []*testServer{a, b} {
		s.heartbeat = time.Second
		s.wire(t)
		s.start(t)
	}
	var lead *testServer
	eventually(t, 20*time.Second, "one of two servers leads", func() (err error) {
		lead, _, err = leaderOf(a, b)
		return err
	})
	follower := a
	if lead == a {
		follower = b
	}
	ctx := context.Background()
	now := time.Now().UTC()
	host := &api.Host{Meta: api.Meta{Name: "far", UID: "u-far", Generation: 1, CreatedAt: now},
		Status: api.HostStatus{State: api.HostReady, CPUs: 4, MemoryMiB: 4096, LastHeartbeat: now}}
	if _, err := a.st.Txn(ctx, a.col.Hosts.OpCreate("far", host)); err != nil {
		t.Fatal(err)
	}
	// Both servers' indexes hold the host before it is judged.
	eventually(t, 5*time.Second, "both indexes hold the host", func() error {
		for _, srv := range []*testServer{a, b} {
			if _, ok := srv.col.Hosts.Get("far"); !ok {
				return errors.New("not yet")
			}
		}
		return nil
	})
	beat := func(until time.Time) {
		for time.Now().Before(until) {
			follower.set.Liveness.Beat("far", time.Now())
			if h, ok := lead.col.Hosts.Get("far"); !ok || h.Status.State != api.HostReady {
				t.Fatalf("the leader lost or marked a host (%+v) while it heartbeats to another server", h)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	beat(time.Now().Add(4 * time.Second)) // four timeouts
	eventually(t, 15*time.Second, "the leader marks the silent host not ready", func() error {
		if h, _ := lead.col.Hosts.Get("far"); h.Status.State != api.HostNotReady {
			return fmt.Errorf("host %s", h.Status.State)
		}
		return nil
	})
}

// TestHostRegisteredMidTerm: a host that registers while a term runs,
// through a server that does not lead, gets a full timeout from its
// registration before the leader judges it, though the leader has not
// heard a heartbeat of it yet and the term began longer ago than that.
func TestHostRegisteredMidTerm(t *testing.T) {
	a := openTestServer(t, "alpha", t.TempDir(), nil)
	a.heartbeat = 2 * time.Second // longer than the monitor's tick
	a.wire(t)
	a.start(t)
	eventually(t, 20*time.Second, "alpha leads", func() error {
		_, _, err := leaderOf(a)
		return err
	})
	time.Sleep(a.heartbeat + time.Second) // the term's grace is over
	ctx := context.Background()
	registered := time.Now().UTC()
	host := &api.Host{Meta: api.Meta{Name: "late", UID: "u-late", Generation: 1, CreatedAt: registered},
		Status: api.HostStatus{State: api.HostReady, CPUs: 4, MemoryMiB: 4096, LastHeartbeat: registered}}
	if _, err := a.st.Txn(ctx, a.col.Hosts.OpCreate("late", host)); err != nil {
		t.Fatal(err)
	}
	var marked *api.Host
	eventually(t, 15*time.Second, "the leader marks the silent host not ready", func() error {
		h, ok := a.col.Hosts.Get("late")
		if !ok || h.Status.State != api.HostNotReady {
			return errors.New("not yet")
		}
		marked = h
		return nil
	})
	if silent := marked.UpdatedAt.Sub(registered); silent < a.heartbeat {
		t.Fatalf("the host was marked not ready %s after it registered, within the heartbeat timeout %s", silent, a.heartbeat)
	}
}
