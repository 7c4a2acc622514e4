// Package leader elects, among the servers sharing one etcd, the one whose
// controllers act: an etcd election (clientv3/concurrency) on a session
// lease. The leader's term is a store.Fence: its election key and the
// revision that key was created at. Every write the leader's controllers
// make carries the fence, so once the term ends (the session's lease
// expired or was revoked, the leader resigned) its late writes are
// refused instead of landing beside the next leader's.
package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/polyvisor/polyvisor/internal/store"
)

// DefaultTTL is the session lease of a campaign: a leader that stops
// renewing it (it died, or lost etcd) loses its lead that long after.
const DefaultTTL = 5 * time.Second

// Candidate is what a server campaigns with: the value of its election
// key, read by whoever asks who leads.
type Candidate struct {
	// ID identifies the server across its restarts (kept in its data
	// dir): a key of an earlier run of this very server is that of a dead
	// process, which a restarted one removes instead of waiting for its
	// lease to expire.
	ID string `json:"id,omitempty"`
	// Name is the server's name, unique among the servers.
	Name string `json:"name"`
	// URL is where the server's API is reached, if it listens on TCP.
	URL string `json:"url,omitempty"`
}

// Term is one leader's time in office.
type Term struct {
	Candidate
	// Fence is what the leader's writes carry.
	Fence store.Fence
	// Since is when the term began; zero for a moment after it began,
	// until the leader has said so.
	Since time.Time
	// Won is a store revision at which the leader knew it leads: every
	// write after it was made during the term. Known to the leader only.
	Won int64
}

// record is the value of a candidate's election key.
type record struct {
	Candidate
	Since time.Time `json:"since,omitzero"`
}

// Config is what an elector campaigns in.
type Config struct {
	// Client is the etcd client the session and the election use.
	Client *clientv3.Client
	// Prefix is the election's key prefix (the store's prefix and
	// "election/controllers").
	Prefix string
	Self   Candidate
	// TTL is the session's lease (DefaultTTL when zero; whole seconds).
	TTL    time.Duration
	Logger *slog.Logger
}

// Elector campaigns for one server and runs its leader's work while it
// leads.
type Elector struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	term *Term // while this server leads
	sess *concurrency.Session
	// key is the election key this server won with, from the moment
	// it won until its term ends: set before the term is taken up, so
	// that one who reads the store in between hears the same answer
	// from this server as from etcd.
	key string
}

// New makes an elector; Run campaigns.
func New(cfg Config) *Elector {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Elector{cfg: cfg, log: cfg.Logger}
}

// Run campaigns until ctx ends. Each time this server wins, lead runs
// with a context that ends with the term (the session lost, or ctx
// ended) and the term; when lead returns, the server resigns and
// campaigns again.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, term Term)) {
	if err := e.clearOwn(ctx); err != nil && ctx.Err() == nil {
		e.log.Warn("removing the election key of this server's earlier run", "err", err)
	}
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := e.campaign(ctx, lead); err != nil && ctx.Err() == nil {
			e.log.Warn("campaigning for the lead", "err", err, "retry_in", pause)
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			pause = min(2*pause, 5*time.Second)
			continue
		}
		pause = 100 * time.Millisecond
	}
}

// campaign waits for the lead once and leads until the term ends.
func (e *Elector) campaign(ctx context.Context, lead func(context.Context, Term)) error {
	ttl := int((e.cfg.TTL + time.Second - 1) / time.Second)
	sess, err := concurrency.NewSession(e.cfg.Client, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("opening a session: %w", err)
	}
	defer sess.Close() // revokes the lease: the key goes with it
	e.mu.Lock()
	self := e.cfg.Self
	e.mu.Unlock()
	val, err := json.Marshal(record{Candidate: self})
	if err != nil {
		return fmt.Errorf("encoding the candidate: %w", err)
	}
	el := concurrency.NewElection(sess, e.cfg.Prefix)
	// Campaign ends when this server wins; a session lost meanwhile ends
	// it too, with an error, instead of waiting for nothing.
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(sessionContext(sess), cancel)
	err = el.Campaign(cctx, string(val))
	stop()
	cancel()
	if err != nil {
		return fmt.Errorf("campaigning: %w", err)
	}
	term := Term{Candidate: self, Fence: store.Fence{Key: el.Key(), Rev: el.Rev()}, Since: time.Now().UTC()}
	e.mu.Lock()
	e.key = el.Key()
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.key = ""
		e.mu.Unlock()
	}()
	if val, err = json.Marshal(record{Candidate: self, Since: term.Since}); err != nil {
		return fmt.Errorf("encoding the candidate: %w", err)
	}
	// Proclaiming is a write under the term's own condition: its revision
	// is one the term holds at.
	if err := el.Proclaim(ctx, string(val)); err != nil {
		return fmt.Errorf("taking the lead: %w", err)
	}
	term.Won = el.Header().Revision
	// The lease is renewed before the term begins: a session whose
	// keepalives failed meanwhile may hold a lease about to expire, or gone.
	renewed := time.Now()
	if _, err := e.cfg.Client.KeepAliveOnce(ctx, sess.Lease()); err != nil {
		return fmt.Errorf("renewing the lead's lease: %w", err)
	}
	lctx, end := context.WithCancel(ctx)
	defer end()
	stopTerm := context.AfterFunc(sessionContext(sess), end)
	defer stopTerm()
	go e.holdLease(lctx, sess.Lease(), time.Duration(ttl)*time.Second, renewed, end)
	e.mu.Lock()
	e.term, e.sess = &term, sess
	e.mu.Unlock()
	e.log.Info("leading the controllers", "server", term.Name, "term", term.Fence.Rev)
	lead(lctx, term)
	e.mu.Lock()
	e.term, e.sess = nil, nil
	e.mu.Unlock()
	if ctx.Err() == nil {
		e.log.Warn("no longer leading the controllers", "server", term.Name, "term", term.Fence.Rev)
	} else {
		e.log.Info("resigning the lead", "server", term.Name, "term", term.Fence.Rev)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if err := el.Resign(rctx); err != nil && !errors.Is(err, context.Canceled) {
		e.log.Debug("resigning", "err", err)
	}
	return nil
}

// clearOwn removes the election keys an earlier run of this server left
// (it was killed, its lease not yet expired): that run is dead, as this
// one holds its data dir.
func (e *Elector) clearOwn(ctx context.Context) error {
	self := e.Self()
	if self.ID == "" {
		return nil
	}
	resp, err := e.cfg.Client.Get(ctx, e.cfg.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading the election: %w", err)
	}
	for _, kv := range resp.Kvs {
		var rec record
		if json.Unmarshal(kv.Value, &rec) != nil || rec.ID != self.ID {
			continue
		}
		_, err := e.cfg.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
		if err != nil {
			return fmt.Errorf("removing %s: %w", kv.Key, err)
		}
		e.log.Info("removed the election key of this server's earlier run", "key", string(kv.Key))
	}
	return nil
}

// sessionContext is a context that ends when the session does.
// holdLease ends the term (end) before the session's lease can have
// expired in etcd: the session's own keepalives tell a lost lease only
// once their answer is overdue, measured from when it arrived, and etcd
// expires the lease a TTL after it renewed it, which may be earlier; a
// server cut off from the others could then still act while another
// server's term begins. Here each renewal is timed from when it was sent
// (no later than etcd renewed), and the term ends once three quarters of
// the TTL passed without one.
func (e *Elector) holdLease(ctx context.Context, lease clientv3.LeaseID, ttl time.Duration, last time.Time, end func()) {
	every := max(ttl/4, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, every)
		_, err := e.cfg.Client.KeepAliveOnce(rctx, lease)
		cancel()
		if err == nil {
			last = sent
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(last) >= ttl*3/4 {
			e.log.Warn("the lead's lease was not renewed in time; ending the term", "since", time.Since(last).Round(time.Millisecond), "err", err)
			end()
			return
		}
	}
}

func sessionContext(sess *concurrency.Session) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sess.Done()
		cancel()
	}()
	return ctx
}

// SetURL sets the URL this server campaigns with, from its next
// campaign on.
func (e *Elector) SetURL(url string) {
	e.mu.Lock()
	e.cfg.Self.URL = url
	e.mu.Unlock()
}

// Self is this server as a candidate.
func (e *Elector) Self() Candidate {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.Self
}

// Term returns this server's term while it leads.
func (e *Elector) Term() (Term, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil {
		return Term{}, false
	}
	return *e.term, true
}

// Holds says whether a term read from the store (Leader) is this
// server's own: it won that election key, though it may be a moment
// away from acting on it.
func (e *Elector) Holds(t Term) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.key != "" && e.key == t.Fence.Key
}

// Leader reads who leads now from etcd: the candidate whose key is the
// oldest under the prefix. ok is false while nobody leads.
func (e *Elector) Leader(ctx context.Context) (t Term, ok bool, err error) {
	return Leader(ctx, e.cfg.Client, e.cfg.Prefix)
}

// Leader reads who leads the election under prefix.
func Leader(ctx context.Context, cli *clientv3.Client, prefix string) (t Term, ok bool, err error) {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return Term{}, false, fmt.Errorf("reading the leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Term{}, false, nil
	}
	kv := resp.Kvs[0]
	var rec record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return Term{}, false, fmt.Errorf("reading the leader %s: %w", kv.Key, err)
	}
	return Term{Candidate: rec.Candidate, Since: rec.Since, Fence: store.Fence{Key: string(kv.Key), Rev: kv.CreateRevision}}, true, nil
}
