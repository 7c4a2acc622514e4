// Package controller holds the control plane's controllers, apart from its
// HTTP layer, and wires them together: the operation controller (ops), the
// placer (placement), the quota gates (quota), host liveness (liveness),
// lease expiry (leases), image imports (imports) and the connected estates
// (internal/estate). Each works on the store's collections and writes
// through a store.Writer; none knows the API server.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/blobstore"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/controller/imports"
	"github.com/polyvisor/polyvisor/internal/controller/leader"
	"github.com/polyvisor/polyvisor/internal/controller/leases"
	"github.com/polyvisor/polyvisor/internal/controller/liveness"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/controller/quota"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Collections are the store's collections the controllers work on.
type Collections struct {
	VMs         *store.Collection[api.VM]
	Hosts       *store.Collection[api.Host]
	Images      *store.Collection[api.Image]
	Ops         *store.Collection[api.Operation]
	Projects    *store.Collection[api.Project]
	Idempotency *store.Collection[ops.IdempotencyRecord]
	// Migrations holds the targets' sides of migrations.
	Migrations  *store.Collection[api.AgentMigration]
	Providers   *store.Collection[api.Provider]
	Credentials *store.Collection[estate.Credential]
	// Admission holds the admission records of projects and hosts.
	Admission *store.Collection[admission.Record]
	// Beats holds the heartbeats each server shares with the leader.
	Beats *store.Collection[liveness.Beats]
	// Volumes count against the projects' volume quota.
	Volumes *store.Collection[api.Volume]
	// VMsOn, when set, holds the VMs by the hosts they concern, so that
	// what concerns a few hosts does not read every VM.
	VMsOn *store.Partition[api.VM]
}

// Config wires the controllers to the store and to the server around them.
type Config struct {
	Store *store.Store
	Collections
	// Name names this server among those sharing the store (the leader's
	// name, in `polyvisor cluster status`).
	Name string
	// ID identifies this server across its restarts (see leader.Candidate).
	ID string
	// LeaderTTL is how long a leader that stopped renewing its session
	// keeps the lead (leader.DefaultTTL when zero).
	LeaderTTL time.Duration
	// Secrets opens the providers' sealed credentials.
	Secrets *secrets.Box
	// Scheduler holds the overcommit ratios.
	Scheduler scheduler.Config
	// HeartbeatTimeout marks a host not ready when it has not reported
	// for that long.
	HeartbeatTimeout time.Duration
	// LeaseInterval is how often VM leases are checked.
	LeaseInterval time.Duration
	// ImageDir is the image store; ImageBlobs keeps its ready images by
	// content.
	ImageDir   string
	ImageBlobs *blobstore.Store
	// MinFreeBytes is the room kept free on the image store's disk (the
	// server's reserve): imports never take it.
	MinFreeBytes int64
	// ProviderFactory makes provider connections; nil refuses every
	// provider.
	ProviderFactory estate.Factory
	// ProviderResync is how often a provider's inventory is fully resynced.
	ProviderResync time.Duration
	// Metrics counts operations.
	Metrics ops.Metrics
	// ErrorOf turns the cause of a failed operation into the error it
	// records.
	ErrorOf func(error) *api.Error
	// Audit records what the controllers do as the system (lease expiry).
	Audit  leases.Audit
	Logger *slog.Logger
	// Counted, when set, counts a project's network objects for its
	// quota.
	Counted func(project string) api.Usage
	// Leaders are more controllers the leader runs, each for one term
	// and writing through the term's fenced writer.
	Leaders []func(ctx context.Context, w store.Writer)
}

// Set is the controllers of one server. The operation queues and the
// placer's allocations (which follow the index exactly), the quota gates
// and the imports serve this server's API whoever leads; the controllers
// that must act once (the operation controller's work, liveness, leases,
// the estates) run only while this server leads, every write they make
// fenced by its term.
type Set struct {
	store   *store.Store
	elector *leader.Elector

	Ops      *ops.Controller
	Placer   *placement.Placer
	Quota    *quota.Gate
	Images   *quota.Images
	Liveness *liveness.Monitor
	Leases   *leases.Expirer
	Imports  *imports.Importer
	Estate   *estate.Manager

	leaders []func(context.Context, store.Writer)

	wg sync.WaitGroup
}

// New wires the controllers and fails the image imports a previous
// server left unfinished. Start runs them.
func New(ctx context.Context, cfg Config) *Set {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	factory := cfg.ProviderFactory
	if factory == nil {
		factory = func(typ string, _ provider.Config, _ *slog.Logger) (provider.Provider, error) {
			return nil, fmt.Errorf("provider type %q: %w", typ, provider.ErrUnsupported)
		}
	}
	s := &Set{store: cfg.Store, leaders: cfg.Leaders}
	s.elector = leader.New(leader.Config{Client: cfg.Store.Client(), Prefix: ElectionPrefix(cfg.Store), TTL: cfg.LeaderTTL,
		Self: leader.Candidate{ID: cfg.ID, Name: cfg.Name}, Logger: log.With("component", "leader")})
	s.Estate = estate.New(estate.Config{
		Store: cfg.Store, Providers: cfg.Providers, Credentials: cfg.Credentials, Hosts: cfg.Hosts, VMs: cfg.VMs,
		Secrets: cfg.Secrets, Factory: factory, ResyncInterval: cfg.ProviderResync,
		Busy:   func(vm string) bool { return s.Ops.Busy(vm) },
		Logger: log.With("component", "estate"),
	})
	s.Ops = ops.New(ops.Config{
		Writer: cfg.Store, VMs: cfg.VMs, Ops: cfg.Ops, Hosts: cfg.Hosts, Idempotency: cfg.Idempotency,
		Migrations: cfg.Migrations, Estate: s.Estate, Metrics: cfg.Metrics, ErrorOf: cfg.ErrorOf, Logger: log,
	})
	records := admission.New(cfg.Store, cfg.Admission)
	s.Placer = placement.New(placement.Config{VMs: cfg.VMs, Hosts: cfg.Hosts, Scheduler: cfg.Scheduler, Queue: s.Ops, Records: records})
	s.Images = quota.NewImages(cfg.Projects, cfg.Images, cfg.ImageDir, cfg.MinFreeBytes, log)
	s.Quota = quota.New(quota.Config{Projects: cfg.Projects, VMs: cfg.VMs, Images: cfg.Images, Queue: s.Ops, Imports: s.Images,
		Records: records, Counted: cfg.Counted, Volumes: cfg.Volumes})
	s.Liveness = liveness.New(liveness.Config{Writer: cfg.Store, Hosts: cfg.Hosts, VMs: cfg.VMs, VMsOn: cfg.VMsOn, Beats: cfg.Beats, ID: cfg.ID,
		Timeout: cfg.HeartbeatTimeout, Logger: log})
	s.Leases = leases.New(leases.Config{VMs: cfg.VMs, Ops: s.Ops, Audit: cfg.Audit,
		Interval: cfg.LeaseInterval, Logger: log})
	s.Imports = imports.New(imports.Config{Writer: cfg.Store, Images: cfg.Images, Ops: cfg.Ops, Dir: cfg.ImageDir, Blobs: cfg.ImageBlobs, Server: cfg.Name,
		Gate: s.Images, Metrics: cfg.Metrics, ErrorOf: cfg.ErrorOf, Logger: log})
	s.Imports.Recover(ctx)
	return s
}

// ElectionPrefix is the key prefix of the controllers' election in st.
func ElectionPrefix(st *store.Store) string { return st.Prefix() + "election/controllers" }

// Start runs the controllers until ctx ends: those of every server at
// once, and those of the leader whenever this server wins the election.
// url is where this server's API is reached, told to whoever asks who
// leads. Imports started from now on end with ctx too.
func (s *Set) Start(ctx context.Context, url string) {
	s.Imports.Bind(ctx)
	s.elector.SetURL(url)
	s.wg.Go(func() { s.Liveness.Share(ctx) })
	s.wg.Go(func() { s.elector.Run(ctx, s.lead) })
}

// lead runs the leader's controllers for one term, each writing under
// the term's fence, until the term ends.
func (s *Set) lead(ctx context.Context, term leader.Term) {
	w := s.store.Fenced(term.Fence)
	var wg sync.WaitGroup
	for _, run := range append([]func(context.Context, store.Writer){
		func(ctx context.Context, w store.Writer) { s.Ops.Lead(ctx, w, term.Won) },
		s.Liveness.Lead, s.Leases.Lead, s.Estate.Lead,
	}, s.leaders...) {
		wg.Go(func() { run(ctx, w) })
	}
	wg.Wait()
}

// Self is this server as a candidate.
func (s *Set) Self() leader.Candidate { return s.elector.Self() }

// Term is this server's term while it leads.
func (s *Set) Term() (leader.Term, bool) { return s.elector.Term() }

// Holds says whether a term read from the store is this server's own.
func (s *Set) Holds(t leader.Term) bool { return s.elector.Holds(t) }

// Leader reads who leads now; ok is false while nobody does.
func (s *Set) Leader(ctx context.Context) (t leader.Term, ok bool, err error) {
	return s.elector.Leader(ctx)
}

// Wait returns once the loops and the imports have ended, after the
// context given to Start ended.
func (s *Set) Wait() {
	s.wg.Wait()
	s.Imports.Wait()
}
