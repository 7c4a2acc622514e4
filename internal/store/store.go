package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultPrefix is the key prefix of the current key layout.
const DefaultPrefix = "/polyvisor/v1/"

const dialTimeout = 5 * time.Second

// Config says which etcd the store uses.
type Config struct {
	// DataDir holds the embedded etcd (in DataDir/etcd). It is used only
	// when Endpoints is empty.
	DataDir string
	// Endpoints of an external etcd cluster. When set, no etcd is embedded.
	Endpoints []string
	// Prefix is prepended to every key (default DefaultPrefix). It must end
	// with "/".
	Prefix string
	// Logger receives the store's and the embedded etcd's logs (default
	// slog.Default()).
	Logger *slog.Logger
	// QuotaBytes bounds the embedded etcd's database (default 4 GiB); at
	// it etcd raises its NOSPACE alarm and refuses writes (ReclaimSpace).
	QuotaBytes int64
	// Member, when set, makes the embedded etcd one member of a cluster of
	// servers, reached by its peers over TLS (members.go); nil embeds a
	// lone member that listens for no peers.
	Member *MemberConfig

	// TLS for external endpoints: CAFile verifies the servers; CertFile and
	// KeyFile are the client certificate.
	CAFile   string
	CertFile string
	KeyFile  string
}

// Store is Polyvisor's state store: typed collections over one etcd prefix,
// served from an in-memory index kept current by one watch.
type Store struct {
	cfg       Config
	prefix    string
	log       *slog.Logger
	client    *clientv3.Client
	endpoints []string
	etcd      *embedded // nil with external endpoints

	mu          sync.Mutex
	collections map[string]indexer // by kind; frozen by Start
	started     bool
	loaded      chan struct{} // closed after the first successful load
	loadErr     error         // last load error, for Start to report

	rev revTracker
	bar barrier // Barrier's shared quorum reads

	readOnly atomic.Pointer[error] // why writes are refused, if they are

	// watchCancel stops the running watch (guarded by mu); restartWatch
	// uses it. beforeWatch, when set before Start, runs after every load
	// and before the watch that follows it. Both serve tests.
	watchCancel context.CancelFunc
	beforeWatch func()

	ctx       context.Context // the store's lifetime; cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open connects to etcd: it starts an embedded single-member etcd under
// cfg.DataDir, or dials cfg.Endpoints. Register collections with
// NewCollection, then call Start.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("open store: prefix %q must end with /", cfg.Prefix)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{
		cfg:         cfg,
		prefix:      cfg.Prefix,
		log:         cfg.Logger.With("component", "store"),
		collections: make(map[string]indexer),
		loaded:      make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.rev.init(s.ctx.Done())

	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		if cfg.DataDir == "" {
			s.cancel()
			return nil, errors.New("open store: neither a data dir nor endpoints given")
		}
		e, err := startEmbedded(ctx, cfg.DataDir, cfg.QuotaBytes, cfg.Member, cfg.Logger.With("component", "etcd"))
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("start embedded etcd: %w", err)
		}
		s.etcd = e
		endpoints = []string{e.endpoint}
	}
	s.endpoints = endpoints

	if err := s.dial(ctx); err != nil {
		s.cancel()
		if s.etcd != nil {
			s.etcd.close()
		}
		return nil, err
	}
	return s, nil
}

// dial creates the client and checks that etcd answers.
func (s *Store) dial(ctx context.Context) error {
	ccfg := clientv3.Config{
		Endpoints:   s.endpoints,
		DialTimeout: dialTimeout,
		Context:     s.ctx,
		// The client's own zap logger stays quiet; failures surface as errors.
		Logger: zap.NewNop(),
		// Writes of one object are small, but the initial load pages through
		// the whole prefix.
		MaxCallRecvMsgSize: 64 << 20,
	}
	if s.cfg.CAFile != "" || s.cfg.CertFile != "" || s.cfg.KeyFile != "" {
		info := transport.TLSInfo{
			TrustedCAFile: s.cfg.CAFile,
			CertFile:      s.cfg.CertFile,
			KeyFile:       s.cfg.KeyFile,
		}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return fmt.Errorf("load etcd client tls: %w", err)
		}
		ccfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return fmt.Errorf("create etcd client for %v: %w", s.endpoints, err)
	}
	// clientv3.New does not wait for a connection; one read proves etcd is
	// there (and that we may read our prefix).
	pctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return fmt.Errorf("reach etcd at %v: %w", s.endpoints, err)
	}
	s.client = cli
	return nil
}

// Client is the underlying etcd client, for what the store does not wrap
// (leases, elections). Keys written through it under the prefix show up in
// the collections like any other write.
func (s *Store) Client() *clientv3.Client { return s.client }

// Endpoints are the etcd client endpoints in use (the embedded etcd's
// socket, or the configured cluster).
func (s *Store) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Prefix is the key prefix the store works under.
func (s *Store) Prefix() string { return s.prefix }

// Close stops the watch, closes every subscription and the client, and
// stops the embedded etcd. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Under mu, so that a concurrent Start either sees the store closed
		// or has added its goroutine to wg before Wait.
		s.mu.Lock()
		s.cancel()
		s.mu.Unlock()
		s.wg.Wait()
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("close etcd client: %w", err)
		}
		if s.etcd != nil {
			s.etcd.close()
		}
	})
	return s.closeErr
}

// usable says why the store cannot take writes now, if it cannot.
func (s *Store) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ctx.Err() != nil:
		return ErrClosed
	case !s.started:
		return ErrNotStarted
	}
	if ro := s.readOnly.Load(); ro != nil {
		return fmt.Errorf("%w: %w", ErrReadOnly, *ro)
	}
	return nil
}

// SetReadOnly makes every write fail with an error wrapping ErrReadOnly and
// reason (a full disk), until it is called with nil; writes made with a
// context from UseReserve still go through.
func (s *Store) SetReadOnly(reason error) {
	if reason == nil {
		s.readOnly.Store(nil)
		return
	}
	s.readOnly.Store(&reason)
}

type reserveKey struct{}

// UseReserve returns a context whose writes the store takes even while it
// is read-only: those that take access away or free space (revocations,
// deletions), which must go through on a full disk. They use the free
// space kept in reserve; etcd's own quota, when it is reached, still
// refuses all but deletions.
func UseReserve(ctx context.Context) context.Context {
	return context.WithValue(ctx, reserveKey{}, true)
}

func usesReserve(ctx context.Context) bool {
	v, _ := ctx.Value(reserveKey{}).(bool)
	return v
}

// register adds a collection; it panics after Start or for a kind taken,
// as both are programming errors.
func (s *Store) register(kind string, ix indexer) {
	if kind == "" || strings.Contains(kind, "/") {
		panic(fmt.Sprintf("store: invalid collection kind %q", kind))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic(fmt.Sprintf("store: collection %q registered after Start", kind))
	}
	if _, ok := s.collections[kind]; ok {
		panic(fmt.Sprintf("store: collection %q registered twice", kind))
	}
	s.collections[kind] = ix
}

// isCollection reports whether kind is a registered collection.
func (s *Store) isCollection(kind string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.collections[kind]
	return ok
}
