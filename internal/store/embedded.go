package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	// embeddedName is the single member's name.
	embeddedName = "polyvisor"
	// embeddedQuota bounds the backend database (etcd's default is 2 GiB).
	embeddedQuota = 4 << 30
	// embeddedRetention is the periodic compaction window. The store only
	// needs history to resume its watch across short disconnects, and a
	// compaction past that costs one reload, so the window is short: status
	// heartbeats of thousands of VMs would otherwise fill the quota with
	// history.
	embeddedRetention = "10m"
	// embeddedTickMs is the raft tick of the single member.
	embeddedTickMs = 20
	// maxUnixPath keeps the socket path under the kernel's sun_path limit.
	maxUnixPath = 100
	// startTimeout bounds how long the embedded etcd may take to be ready.
	startTimeout = 60 * time.Second
)

// startEmbedded starts a single-member etcd in dataDir/etcd and returns it
// with the client endpoint. Clients are served on a unix socket in dataDir
// (or, when that path is too long for a socket, on a 127.0.0.1 port the
// kernel picks); the member listens on no peer port at all, since it has no
// peers.
func startEmbedded(ctx context.Context, dataDir string, log *slog.Logger) (*embedded, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("resolve data dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// Starting etcd would replace the socket of a store already running on
	// this data dir before failing on its database lock; refuse first.
	lock, err := fileutil.TryLockFile(filepath.Join(dataDir, "etcd.lock"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, fileutil.ErrLocked) {
			return nil, fmt.Errorf("data dir %s is in use by another store", dataDir)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()

	cfg := embed.NewConfig()
	cfg.Name = embeddedName
	cfg.Dir = filepath.Join(dataDir, "etcd")

	// Clients reach the embedded etcd only through a unix socket that only
	// this user can open: etcd has no authentication here. A data dir too
	// deep for a socket path gets one in a private run dir instead.
	sock := filepath.Join(dataDir, "etcd.sock")
	if len(sock) > maxUnixPath {
		sum := sha256.Sum256([]byte(dataDir))
		run := filepath.Join(os.TempDir(), fmt.Sprintf("polyvisor-%d", os.Getuid()))
		if err := os.MkdirAll(run, 0o700); err != nil {
			return nil, fmt.Errorf("making the etcd socket dir: %w", err)
		}
		if err := os.Chmod(run, 0o700); err != nil {
			return nil, fmt.Errorf("securing the etcd socket dir: %w", err)
		}
		sock = filepath.Join(run, "etcd-"+hex.EncodeToString(sum[:8])+".sock")
	}
	clientURL := url.URL{Scheme: "unix", Path: sock}
	cfg.ListenClientUrls = []url.URL{clientURL}
	// Advertised URLs are only published in the member list, which nothing
	// reads; etcd insists they be host:port.
	placeholder := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.AdvertiseClientUrls = []url.URL{placeholder}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{placeholder}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	cfg.EnableGRPCGateway = false

	// A lone member has no one to hear heartbeats; short ticks only make
	// its first election, on every start, quick (20-200ms, not up to 1s).
	cfg.TickMs = embeddedTickMs
	cfg.ElectionMs = 10 * embeddedTickMs

	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = embeddedRetention
	cfg.QuotaBackendBytes = embeddedQuota

	// NewConfig leaves this at 0, which logs every request as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration

	// etcd logs through the store's logger, warnings and errors only.
	core := &slogCore{log: log, level: zapcore.WarnLevel, quiet: new(atomic.Bool)}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %v", startTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("wait for embedded etcd: %w", ctx.Err())
	}

	endpoint := "unix://" + clientURL.Path
	if clientURL.Scheme != "unix" {
		endpoint = "http://" + e.Clients[0].Addr().String()
	}
	log.Debug("embedded etcd ready", "dir", cfg.Dir, "endpoint", endpoint)
	ok = true
	return &embedded{etcd: e, endpoint: endpoint, quiet: core.quiet, lock: lock}, nil
}

// embedded is a running embedded etcd.
type embedded struct {
	etcd     *embed.Etcd
	endpoint string
	quiet    *atomic.Bool
	lock     *fileutil.LockedFile // held on dataDir/etcd.lock while running
}

// close stops etcd. The errors etcd logs about its listeners closing are
// expected then, and logged at debug level only.
func (e *embedded) close() {
	e.quiet.Store(true)
	e.etcd.Close()
	<-e.etcd.Server.StopNotify()
	e.lock.Close()
}

// benign are etcd warnings that every start of a single embedded member
// logs; they are logged at debug level.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

// isBenign reports whether an etcd log entry is expected noise.
func isBenign(msg string, fields []zapcore.Field) bool {
	if benign[msg] {
		return true
	}
	// A fresh member checks its storage version before its first term is
	// in the backend, logs this, and succeeds on its next check.
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && strings.Contains(err.Error(), "missing term information") {
			return true
		}
	}
	return false
}

// slogCore is a zapcore.Core that hands etcd's log entries to slog.
type slogCore struct {
	log   *slog.Logger
	level zapcore.Level
	quiet *atomic.Bool // set while shutting down: everything goes to debug
	attrs []any
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, level: c.level, quiet: c.quiet, attrs: append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		level = slog.LevelDebug
	}
	if c.quiet.Load() || isBenign(e.Message, fields) {
		level = slog.LevelDebug
	}
	args := append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)
	c.log.Log(context.Background(), level, e.Message, args...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// fieldAttrs turns zap fields into slog key/value pairs.
func fieldAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		out = append(out, k, enc.Fields[k])
	}
	return out
}
