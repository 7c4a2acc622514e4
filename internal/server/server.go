// Package server is Polyvisor's API server: the /v1 REST API (routes,
// handlers, authentication and authorization, the audit of every request),
// the console stream broker, events and metrics. It wires the controllers
// of package controller over the same store, and hands them what the
// requests ask for. All state lives in the store; the server keeps only
// caches and the in-flight bookkeeping it can rebuild from the store at
// start.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/atomicfile"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/blobstore"
	"github.com/polyvisor/polyvisor/internal/cluster"
	"github.com/polyvisor/polyvisor/internal/controller"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/controller/balance"
	"github.com/polyvisor/polyvisor/internal/controller/drain"
	"github.com/polyvisor/polyvisor/internal/controller/ha"
	"github.com/polyvisor/polyvisor/internal/controller/liveness"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/v2vrun"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/throttle"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// Config configures a server.
type Config struct {
	// DataDir holds the embedded store, TLS material, the admin token and
	// the image store.
	DataDir string
	// Listen is the TLS TCP address ("" disables TCP).
	Listen string
	// Socket is the unix socket path for local root use ("" disables it).
	Socket string
	// EtcdEndpoints points at an external etcd cluster; empty embeds one.
	EtcdEndpoints []string
	// AdvertiseAddresses are extra DNS names or IPs for the server
	// certificate (the addresses agents dial).
	AdvertiseAddresses []string
	// Scheduler holds the overcommit ratios.
	Scheduler scheduler.Config
	// HeartbeatTimeout marks a host not ready when it has not reported for
	// that long (default 15s).
	HeartbeatTimeout time.Duration
	// LoginClock, when set, is the clock of the failed-login lockouts
	// (time.Now otherwise): tests move it rather than wait.
	LoginClock func() time.Time
	// HA configures the fencing of lost hosts and the restart of their
	// HA VMs elsewhere (docs/HA.md).
	HA     HAConfig
	Logger *slog.Logger
	// ProviderFactory makes provider connections (vSphere, libvirt); nil
	// refuses every provider.
	ProviderFactory estate.Factory
	// ProviderResync is how often a provider's inventory is fully resynced
	// besides its events (default 1m).
	ProviderResync time.Duration
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// MaxTokenLifetime, when not zero, bounds every API token made
	// through the API: one asked to never expire lives that long.
	MaxTokenLifetime time.Duration
	// LeaseInterval is how often VM leases are checked (default 10s).
	LeaseInterval time.Duration
	// RateLimit is the requests per second each user (or, anonymous, each
	// client address) may make, with bursts of RateBurst; 0 disables the
	// limit. Agents are not limited.
	RateLimit float64
	RateBurst int
	// Audit sets the audit log's retention.
	Audit audit.Options
	// Edge bounds connections, streams and request bodies, and places
	// metrics and the server certificate.
	Edge EdgeConfig
	// AuditDir holds the audit log (default <DataDir>/audit); a disk of its
	// own keeps it apart from the data.
	AuditDir string
	// AuditFailClosed refuses audited requests (mutations, consoles) with
	// 503 while the audit log cannot write records; by default they go on,
	// with an alarm.
	AuditFailClosed bool
	// AuditFold folds repeated refusals into counted audit records.
	AuditFold audit.AggregateOptions
	// AuditQueryMaxBytes bounds the audit log one query reads, newest
	// first (default 64 MiB; negative: no bound). A superadmin's export
	// reads it all.
	AuditQueryMaxBytes int64
	// AddressRateLimit is the requests per second each client address may
	// make, checked before authentication, with bursts of
	// AddressRateBurst; 0 disables it. The unix socket is not limited.
	AddressRateLimit float64
	AddressRateBurst int
	// MinFreeBytes is the free space kept on the disk of the data dir (and
	// of the audit log): below it the server is read-only, with an alarm,
	// until space is freed. 0 turns the guard off.
	MinFreeBytes uint64
	// MigrationCheckpointBytes is how often a migration's streamed copy
	// is checkpointed (default 64 MiB).
	MigrationCheckpointBytes int64
	// StoreQuotaBytes bounds the embedded etcd's database (default 4 GiB).
	StoreQuotaBytes int64
	// PeerListen, with the embedded etcd, is where its member listens for
	// the other servers' members (host:port, TLS); empty keeps a lone
	// member that listens for none. A server that joins, or is joined,
	// needs one.
	PeerListen string
	// EtcdElectionTimeout is the embedded etcd members' raft election
	// timeout (default 1s): how long they go without their raft leader
	// before electing another.
	EtcdElectionTimeout time.Duration
	// Name names this server among the servers sharing its store (default:
	// the host name). The servers elect one whose controllers act.
	Name string
	// LeaderTTL is how long a leader that stopped renewing its session
	// keeps the lead (default 5s).
	LeaderTTL time.Duration
	// BalanceTick is how often the balancing controller looks at its
	// settings (100 ms when zero); its cycles run at the interval they set.
	BalanceTick time.Duration
	// UsageInterval is how often the leading server samples the connected
	// providers' VMs and hosts into <DataDir>/usage-providers (default
	// 1m; negative keeps none).
	UsageInterval time.Duration
}

// Server is a running control plane.
type Server struct {
	cfg Config
	log *slog.Logger
	// provUsage keeps the connected providers' usage history; nil when
	// none is kept.
	provUsage *providerSampler

	st     *store.Store
	vms    *store.Collection[api.VM]
	hosts  *store.Collection[api.Host]
	images *store.Collection[api.Image]
	ops    *store.Collection[api.Operation]
	idem   *store.Collection[ops.IdempotencyRecord]

	// vmsOn holds the VMs by the hosts they concern (placed on or
	// migrating to), volumesOn the volumes by their host: a host's watch
	// and the HA check read and follow one host's objects, not all.
	vmsOn     *store.Partition[api.VM]
	volumesOn *store.Partition[api.Volume]

	// migrations holds the targets' sides of migrations, for the agents
	// alone.
	migrations *store.Collection[api.AgentMigration]

	projects  *store.Collection[api.Project]
	users     *store.Collection[api.User]
	passwords *store.Collection[passwordRecord]
	tokens    *store.Collection[tokenRecord]
	settings  *store.Collection[settingsRecord]
	audit     *audit.Log
	auditFold *audit.Aggregator
	guards    guards
	limiter   atomic.Pointer[throttle.Limiter]
	logins    *throttle.Login

	// Logins: s.logins throttles failures per address and user, these
	// per address, and hashing bounds the password hashes run at once.
	loginAddrs *throttle.Login
	hashing    *throttle.Gate
	// workbooks bounds the RVTools workbooks read at once.
	workbooks *throttle.Gate

	providers *store.Collection[api.Provider]
	pools     *store.Collection[api.Pool]
	volumes   *store.Collection[api.Volume]
	creds     *store.Collection[estate.Credential]
	secrets   *secrets.Box

	// vmMigrations are the records of VMs moved from other hypervisors.
	vmMigrations *store.Collection[api.VMMigration]
	// v2v plans and runs the migrations while this server leads.
	v2v *v2vrun.Controller

	// net holds the networks: their collections, manager and hub.
	net *netState

	// ctl is the controllers: operations, placement, quotas, liveness,
	// leases, imports, estates.
	ctl     *controller.Set
	ha      *ha.Controller
	balance *balance.Controller
	drain   *drain.Controller
	streams *streamBroker
	metrics *metrics

	imageDir   string
	adminToken string
	caPEM      []byte
	tlsConfig  *tls.Config
	cert       *pki.ServerCert
	guard      *streamGuard

	// balanceRecs holds the balance settings and the last cycle.
	balanceRecs *store.Collection[balance.Record]

	metricsToken string
	metricsAddr  net.Addr
	serverID     string // this server's, across restarts (<data dir>/server.id)

	// The server among the servers of the control plane (clusterself.go).
	servers      *store.Collection[serverRecord]
	clusterState *cluster.State
	certHosts    []string // the names in its server certificate
	peerToken    string   // its own token, presented to the others
	peerCs       peerClients
	copies       imageCopies
	fatal        chan error

	mu        sync.Mutex
	listeners []net.Listener
	httpSrvs  []*http.Server
	bg        sync.WaitGroup
	cancel    context.CancelFunc
	life      context.Context // ends when the server closes
}

// New opens the store, prepares TLS material and the admin token, and loads
// the in-flight bookkeeping. It does not listen yet.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 15 * time.Second
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if err := cfg.HA.defaults(cfg.HeartbeatTimeout); err != nil {
		return nil, err
	}
	if cfg.LeaseInterval == 0 {
		cfg.LeaseInterval = 10 * time.Second
	}
	if cfg.UsageInterval == 0 {
		cfg.UsageInterval = time.Minute
	}
	if cfg.AuditQueryMaxBytes == 0 {
		cfg.AuditQueryMaxBytes = defaultAuditQueryBytes
	}
	if cfg.Name == "" {
		if hn, err := os.Hostname(); err == nil && hn != "" {
			cfg.Name = hn
		} else {
			cfg.Name = "polyvisor"
		}
	}
	cfg.Edge = cfg.Edge.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		imageDir: filepath.Join(cfg.DataDir, "images"),
		fatal:    make(chan error, 1),
	}
	if err := os.MkdirAll(s.imageDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating image dir: %w", err)
	}
	blobs, err := blobstore.Open(s.imageDir)
	if err != nil {
		return nil, err
	}
	if err := s.setupTLS(); err != nil {
		return nil, err
	}
	member, err := s.memberConfig()
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{
		DataDir:   cfg.DataDir,
		Endpoints: cfg.EtcdEndpoints,
		Logger:    cfg.Logger.With("component", "store"),
		// At its quota the server goes read-only and reclaims space.
		QuotaBytes: cfg.StoreQuotaBytes,
		Member:     member,
	})
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", s.diskCause(err))
	}
	s.st = st
	s.vms = store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev })
	s.hosts = store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev })
	s.images = store.NewCollection(st, "images", func(i *api.Image, rev int64) { i.Version = rev })
	s.ops = store.NewCollection(st, "operations", func(o *api.Operation, rev int64) { o.Version = rev })
	s.idem = store.NewCollection(st, "idempotency", func(r *ops.IdempotencyRecord, rev int64) { r.Version = rev })
	s.providers = store.NewCollection(st, "providers", func(p *api.Provider, rev int64) { p.Version = rev })
	s.creds = store.NewCollection(st, "credentials", func(c *estate.Credential, rev int64) { c.Version = rev })
	s.projects = store.NewCollection(st, "projects", func(p *api.Project, rev int64) { p.Version = rev })
	s.users = store.NewCollection(st, "users", func(u *api.User, rev int64) { u.Version = rev })
	s.passwords = store.NewCollection(st, "passwords", func(p *passwordRecord, rev int64) { p.Version = rev })
	s.tokens = store.NewCollection(st, "tokens", func(t *tokenRecord, rev int64) { t.Version = rev })
	s.settings = store.NewCollection(st, "settings", func(r *settingsRecord, rev int64) { r.Version = rev })
	s.pools = store.NewCollection(st, "pools", func(p *api.Pool, rev int64) { p.Version = rev })
	s.volumes = store.NewCollection(st, "volumes", func(v *api.Volume, rev int64) { v.Version = rev })
	s.vmsOn = store.NewPartition(s.vms, vmHosts)
	s.volumesOn = store.NewPartition(s.volumes, func(v *api.Volume) []string { return []string{v.Spec.Host} })
	s.vmMigrations = store.NewCollection(st, "vmmigrations", func(m *api.VMMigration, rev int64) { m.Version = rev })
	s.servers = store.NewCollection(st, "servers", func(r *serverRecord, rev int64) { r.Version = rev })
	s.balanceRecs = store.NewCollection(st, "balance", func(r *balance.Record, rev int64) { r.Version = rev })
	admitted := admission.NewCollection(st)
	beats := store.NewCollection(st, "heartbeats", func(b *liveness.Beats, rev int64) { b.Version = rev })
	s.migrations = store.NewCollection(st, "migrations", func(m *api.AgentMigration, rev int64) { m.Version = rev })
	s.net = s.newNetState(st)
	if err := st.Start(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("loading the store: %w", err)
	}
	if err := s.checkCA(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if s.secrets, err = secrets.Load(filepath.Join(cfg.DataDir, "secret.key")); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.bootstrap(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.migrateToProjects(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.ensureMetricsToken(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.ensurePeerToken(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if s.serverID, err = ensureServerID(filepath.Join(cfg.DataDir, "server.id")); err != nil {
		st.Close()
		return nil, err
	}
	if s.audit, err = audit.Open(ctx, s.auditDir(), cfg.Audit, cfg.Logger.With("component", "audit")); err != nil {
		st.Close()
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	if cfg.UsageInterval > 0 {
		pst, err := usage.Open(providerUsageDir(cfg.DataDir), usage.Options{MaxSeries: providerUsageSeries})
		if err != nil {
			_ = s.audit.Close()
			st.Close()
			return nil, fmt.Errorf("opening the providers' usage history: %w", err)
		}
		s.provUsage = &providerSampler{s: s, store: pst, last: map[string]cumulativeCPU{}, busy: map[string]bool{}, maxSeries: providerUsageSeries}
	}
	s.limiter.Store(throttle.NewLimiter(cfg.RateLimit, cfg.RateBurst, 10*time.Minute))
	var loginOpts []throttle.Option
	if cfg.LoginClock != nil {
		loginOpts = append(loginOpts, throttle.WithClock(cfg.LoginClock))
	}
	s.logins = throttle.NewLogin(loginPairConfig, loginOpts...)
	s.loginAddrs = throttle.NewLogin(loginAddrConfig, loginOpts...)
	s.hashing = throttle.NewGate(hashSlots(), hashWait)
	s.workbooks = throttle.NewGate(workbookSlots, 0)
	s.metrics = newMetrics(s)
	s.setupGuards()
	s.streams = newStreamBroker()
	s.guard = newStreamGuard(s)
	s.ctl = controller.New(ctx, controller.Config{
		Store: st, Name: cfg.Name, ID: s.serverID, LeaderTTL: cfg.LeaderTTL,
		Collections: controller.Collections{
			VMs: s.vms, Hosts: s.hosts, Images: s.images, Ops: s.ops, Projects: s.projects,
			Idempotency: s.idem, Providers: s.providers, Credentials: s.creds, Admission: admitted,
			Beats: beats, Migrations: s.migrations, Volumes: s.volumes, VMsOn: s.vmsOn,
		},
		Secrets: s.secrets, Scheduler: cfg.Scheduler, HeartbeatTimeout: cfg.HeartbeatTimeout,
		LeaseInterval: cfg.LeaseInterval, ImageDir: s.imageDir, ImageBlobs: blobs, MinFreeBytes: int64(cfg.MinFreeBytes),
		ProviderFactory: cfg.ProviderFactory, ProviderResync: cfg.ProviderResync,
		Metrics: s.metrics, ErrorOf: toAPIError, Audit: s.auditSystem, Logger: cfg.Logger,
		Counted: s.net.m.Counted, Leaders: []func(context.Context, store.Writer){s.net.m.RunJanitor,
			func(ctx context.Context, w store.Writer) { s.ha.Lead(ctx, w) },
			func(ctx context.Context, w store.Writer) { s.balance.Lead(ctx, w) }, s.leadMigrations, s.leadProviderUsage,
			func(ctx context.Context, w store.Writer) { s.drain.Lead(ctx, w) }},
	})
	s.ha = s.newHA()
	s.balance = s.newBalance()
	s.drain = s.newDrain()
	s.v2v = s.newMigrationController()
	return s, nil
}

func (s *Server) setupTLS() error {
	dir := filepath.Join(s.cfg.DataDir, "pki")
	if _, err := pki.EnsureCA(dir); err != nil {
		return fmt.Errorf("creating the CA: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	// A listen address that names one host is an address clients use.
	if lh, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && lh != "" && !net.ParseIP(lh).IsUnspecified() && !slices.Contains(hosts, lh) {
		hosts = append(hosts, lh)
	}
	hosts = append(hosts, s.cfg.AdvertiseAddresses...)
	s.certHosts = hosts
	cert, err := pki.NewServerCert(dir, hosts, s.cfg.Edge.Cert)
	if err != nil {
		return fmt.Errorf("preparing the server certificate: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("reading the CA certificate: %w", err)
	}
	s.cert, s.tlsConfig, s.caPEM = cert, cert.TLSConfig(), ca
	return nil
}

// ensureServerID reads the server's ID from path, making one at first
// start.
func ensureServerID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	id := api.NewUID()
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the server's id: %w", err)
	}
	return id, nil
}

// CAFile is the path of the server's CA certificate.
func (s *Server) CAFile() string { return filepath.Join(s.cfg.DataDir, "pki", "ca.crt") }

// AdminTokenFile is the path of the first-start admin token (0600).
func (s *Server) AdminTokenFile() string { return filepath.Join(s.cfg.DataDir, "admin.token") }

// AdminToken returns the admin token.
func (s *Server) AdminToken() string { return s.adminToken }

// Start listens on the configured addresses and runs the background loops
// until ctx ends or Close is called.
func (s *Server) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.life = ctx
	// Imports a request starts end with the server.
	s.ctl.Imports.Bind(ctx)
	handler := s.Handler()
	if s.cfg.Socket != "" {
		_ = os.Remove(s.cfg.Socket)
		if err := os.MkdirAll(filepath.Dir(s.cfg.Socket), 0o755); err != nil {
			return fmt.Errorf("creating socket dir: %w", err)
		}
		l, err := net.Listen("unix", s.cfg.Socket)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", s.cfg.Socket, err)
		}
		if err := os.Chmod(s.cfg.Socket, 0o660); err != nil {
			l.Close()
			return fmt.Errorf("securing %s: %w", s.cfg.Socket, err)
		}
		s.serve(l, handler, true)
	}
	if s.cfg.Listen != "" {
		l, err := net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			s.Close()
			return fmt.Errorf("listening on %s: %w", s.cfg.Listen, err)
		}
		s.serve(tls.NewListener(limitPerAddress(l, s.cfg.Edge.MaxConnsPerAddress, s.log), s.tlsConfig), handler, false)
	}
	if err := s.serveMetrics(); err != nil {
		s.Close()
		return err
	}
	s.guard.start(ctx)
	s.ctl.Start(ctx, s.advertisedURL())
	s.runCluster(ctx, s.advertisedURL())
	s.goBG(func() { s.cert.Run(ctx) })
	s.goBG(func() { s.runTokenSweep(ctx) })
	s.goBG(func() { s.pruneAudit(ctx) })
	s.goBG(func() { s.runGuards(ctx) })
	s.goBG(func() { s.net.run(ctx, s) })
	return nil
}

func (s *Server) goBG(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

func (s *Server) serve(l net.Listener, h http.Handler, local bool) {
	srv := s.httpServer(h, local)
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.httpSrvs = append(s.httpSrvs, srv)
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serving", "addr", l.Addr(), "err", err)
		}
	}()
}

// Addr returns the TCP address the server listens on, once started.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.Addr().Network() == "tcp" && l.Addr() != s.metricsAddr {
			return l.Addr()
		}
	}
	return nil
}

// Close stops serving and closes the store. VMs keep running: they belong
// to their hosts.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Lock()
	srvs := s.httpSrvs
	s.httpSrvs = nil
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range srvs {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	s.streams.closeAll()
	s.bg.Wait()
	s.ctl.Wait()
	if s.provUsage != nil {
		if err := s.provUsage.store.Close(); err != nil {
			s.log.Error("closing the providers' usage history", "err", err)
		}
	}
	s.auditFold.Close()
	if err := s.audit.Close(); err != nil {
		s.log.Error("closing the audit log", "err", err)
	}
	return s.st.Close()
}

// pruneAudit applies the audit log's retention hourly.
func (s *Server) pruneAudit(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.audit.Prune(ctx); err != nil {
				s.log.Warn("pruning the audit log", "err", err)
			}
		}
	}
}
