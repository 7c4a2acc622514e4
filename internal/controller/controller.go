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
	"github.com/polyvisor/polyvisor/internal/controller/imports"
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
	Providers   *store.Collection[api.Provider]
	Credentials *store.Collection[estate.Credential]
}

// Config wires the controllers to the store and to the server around them.
type Config struct {
	Store *store.Store
	Collections
	// Secrets opens the providers' sealed credentials.
	Secrets *secrets.Box
	// Scheduler holds the overcommit ratios.
	Scheduler scheduler.Config
	// HeartbeatTimeout marks a host not ready when it has not reported
	// for that long.
	HeartbeatTimeout time.Duration
	// LeaseInterval is how often VM leases are checked.
	LeaseInterval time.Duration
	// ImageDir is the image store.
	ImageDir string
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
}

// Set is the controllers of one server.
type Set struct {
	Ops      *ops.Controller
	Placer   *placement.Placer
	Quota    *quota.Gate
	Images   *quota.Images
	Liveness *liveness.Monitor
	Leases   *leases.Expirer
	Imports  *imports.Importer
	Estate   *estate.Manager

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
	s := &Set{}
	s.Estate = estate.New(estate.Config{
		Store: cfg.Store, Providers: cfg.Providers, Credentials: cfg.Credentials, Hosts: cfg.Hosts, VMs: cfg.VMs,
		Secrets: cfg.Secrets, Factory: factory, ResyncInterval: cfg.ProviderResync,
		Busy:   func(vm string) bool { return s.Ops.Busy(vm) },
		Logger: log.With("component", "estate"),
	})
	s.Ops = ops.New(ops.Config{
		Writer: cfg.Store, VMs: cfg.VMs, Ops: cfg.Ops, Hosts: cfg.Hosts, Idempotency: cfg.Idempotency,
		Estate: s.Estate, Metrics: cfg.Metrics, ErrorOf: cfg.ErrorOf, Logger: log,
	})
	s.Placer = placement.New(placement.Config{VMs: cfg.VMs, Hosts: cfg.Hosts, Scheduler: cfg.Scheduler, Queue: s.Ops})
	s.Images = quota.NewImages(cfg.Projects, cfg.Images, cfg.ImageDir, log)
	s.Quota = quota.New(quota.Config{Projects: cfg.Projects, VMs: cfg.VMs, Images: cfg.Images, Queue: s.Ops, Imports: s.Images})
	s.Liveness = liveness.New(liveness.Config{Writer: cfg.Store, Hosts: cfg.Hosts, VMs: cfg.VMs,
		Timeout: cfg.HeartbeatTimeout, Logger: log})
	s.Leases = leases.New(leases.Config{Writer: cfg.Store, VMs: cfg.VMs, Ops: s.Ops, Audit: cfg.Audit,
		Interval: cfg.LeaseInterval, Logger: log})
	s.Imports = imports.New(imports.Config{Writer: cfg.Store, Images: cfg.Images, Ops: cfg.Ops, Dir: cfg.ImageDir,
		Gate: s.Images, Metrics: cfg.Metrics, ErrorOf: cfg.ErrorOf, Logger: log})
	s.Imports.Recover(ctx)
	return s
}

// Start runs the controllers' loops until ctx ends; imports started from
// now on end with ctx too.
func (s *Set) Start(ctx context.Context) {
	s.Imports.Bind(ctx)
	for _, run := range []func(context.Context){s.Ops.Run, s.Liveness.Run, s.Placer.Run, s.Estate.Run, s.Leases.Run} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			run(ctx)
		}()
	}
}

// Wait returns once the loops and the imports have ended, after the
// context given to Start ended.
func (s *Set) Wait() {
	s.wg.Wait()
	s.Imports.Wait()
}
