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
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	clientv3 "go.etcd.io/etcd/client/v3"
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

// startEmbedded starts the embedded etcd in dataDir/etcd and returns it
// with the client endpoint. Clients are served on a unix socket in dataDir
// (or, when that path is too long for a socket, on a 127.0.0.1 port the
// kernel picks). Without member, it is a lone member that listens on no
// peer port at all; with member, it is one member of the servers' cluster
// (members.go), talking to its peers over TLS.
func startEmbedded(ctx context.Context, dataDir string, quota int64, member *MemberConfig, log *slog.Logger) (*embedded, error) {
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

	// A damaged database makes etcd panic, in its own goroutines as well
	// as this one; read it through first and say what to do instead.
	if err := checkDatabase(cfg.Dir); err != nil {
		return nil, err
	}

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
	if member != nil {
		if err := member.apply(cfg); err != nil {
			return nil, err
		}
	}

	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = embeddedRetention
	cfg.QuotaBackendBytes = embeddedQuota
	if quota > 0 {
		cfg.QuotaBackendBytes = quota
	}

	// NewConfig leaves this at 0, which logs every request as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration

	// etcd logs through the store's logger, warnings and errors only. When
	// it gives up (it cannot write its disk), one line says why and what to
	// do, and the process ends, as etcd would have ended it.
	core := &slogCore{log: log, level: zapcore.WarnLevel, quiet: new(atomic.Bool), starting: new(atomic.Bool)}
	core.starting.Store(true)
	fatal := &fatalHook{log: log, dir: cfg.Dir}
	core.fatal = fatal
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core, zap.WithFatalHook(fatal)))

	e, err := startRecovering(cfg)
	core.starting.Store(false)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		if member != nil {
			return nil, fmt.Errorf("embedded etcd failed while starting: %w (its log above says why; a server removed from the cluster with 'polyvisor cluster remove' cannot come back with its data dir: empty it and join again)", err)
		}
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %v", startTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("wait for embedded etcd: %w", ctx.Err())
	}

	if member != nil {
		// A member that joined as a learner serves no client until a
		// voting member promotes it, once it caught up.
		if err := waitPromoted(ctx, e, startTimeout, log); err != nil {
			e.Close()
			return nil, err
		}
	}

	endpoint := "unix://" + clientURL.Path
	if clientURL.Scheme != "unix" {
		endpoint = "http://" + e.Clients[0].Addr().String()
	}
	log.Debug("embedded etcd ready", "dir", cfg.Dir, "endpoint", endpoint)
	ok = true
	return &embedded{etcd: e, endpoint: endpoint, quiet: core.quiet, lock: lock, quota: cfg.QuotaBackendBytes, member: member}, nil
}

// startRecovering starts etcd, turning a panic while it starts (a
// database it cannot open) into an error naming the file.
func startRecovering(cfg *embed.Config) (e *embed.Etcd, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptError(cfg.Dir, fmt.Errorf("etcd failed while opening it: %v", p))
		}
	}()
	return embed.StartEtcd(cfg)
}

// embedded is a running embedded etcd.
type embedded struct {
	etcd     *embed.Etcd
	endpoint string
	quiet    *atomic.Bool
	lock     *fileutil.LockedFile // held on dataDir/etcd.lock while running
	quota    int64                // of the database, in bytes
	member   *MemberConfig        // nil for a lone member
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
	// starting is set while etcd starts: its panics are recovered then.
	// Later a panic ends the process through fatal, with one clear line.
	starting *atomic.Bool
	fatal    *fatalHook
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, level: c.level, quiet: c.quiet, starting: c.starting, fatal: c.fatal,
		attrs: append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)}
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
	if e.Level >= zapcore.DPanicLevel && e.Level < zapcore.FatalLevel && c.fatal != nil && !c.starting.Load() && !c.quiet.Load() {
		c.fatal.exit(e.Message, fields)
	}
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

// fatalHook ends the process when etcd gives up, after one line that says
// why in words an operator can act on.
type fatalHook struct {
	log    *slog.Logger
	dir    string
	osExit func(code int) // os.Exit; tests replace it
}

func (h *fatalHook) OnWrite(ce *zapcore.CheckedEntry, fields []zapcore.Field) {
	h.exit(ce.Message, fields)
}

// exit logs the cause and ends the process.
func (h *fatalHook) exit(msg string, fields []zapcore.Field) {
	h.log.Error(fatalMessage(h.dir, msg, fields))
	if h.osExit != nil {
		h.osExit(1)
		return
	}
	os.Exit(1)
}

// fatalMessage says why etcd gave up: for a full disk, which disk.
func fatalMessage(dir, msg string, fields []zapcore.Field) string {
	var cause error
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok {
			cause = err
		}
	}
	if cause == nil {
		cause = errors.New(msg)
	}
	if errors.Is(cause, syscall.ENOSPC) || strings.Contains(cause.Error(), "no space left on device") {
		return fmt.Sprintf("FATAL: the embedded etcd in %s stopped: the disk holding it is full (%s: %v); "+
			"free space on that disk and start the server again: it resumes from its last committed write", dir, msg, cause)
	}
	return fmt.Sprintf("FATAL: the embedded etcd in %s stopped: %s: %v", dir, msg, cause)
}

// SpaceAlarm reports whether etcd's NOSPACE alarm is raised: its database
// reached its quota, and it refuses every write but deletes until the alarm
// is disarmed.
func (s *Store) SpaceAlarm(ctx context.Context) (bool, error) {
	resp, err := s.client.AlarmList(ctx)
	if err != nil {
		return false, fmt.Errorf("listing etcd alarms: %w", err)
	}
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			return true, nil
		}
	}
	return false, nil
}

// ReclaimSpace frees the embedded etcd's database when it reached its
// quota: it compacts the history up to now, defragments the database, and
// disarms the NOSPACE alarm once the database takes less than nine tenths
// of the quota. It reports whether etcd takes writes again, and the
// database's size. An external etcd is its operators' to reclaim.
func (s *Store) ReclaimSpace(ctx context.Context) (ok bool, size int64, err error) {
	if s.etcd == nil {
		return false, 0, errors.New("reclaiming etcd space: the etcd cluster is external; its operators compact, defragment and disarm it")
	}
	ep := s.etcd.endpoint
	st, err := s.client.Status(ctx, ep)
	if err != nil {
		return false, 0, fmt.Errorf("reading etcd status: %w", err)
	}
	if _, err := s.client.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical()); err != nil &&
		!errors.Is(err, rpctypes.ErrCompacted) {
		return false, st.DbSize, fmt.Errorf("compacting etcd: %w", err)
	}
	if _, err := s.client.Defragment(ctx, ep); err != nil {
		return false, st.DbSize, fmt.Errorf("defragmenting etcd: %w", err)
	}
	if st, err = s.client.Status(ctx, ep); err != nil {
		return false, 0, fmt.Errorf("reading etcd status: %w", err)
	}
	if st.DbSize >= s.etcd.quota/10*9 {
		return false, st.DbSize, nil
	}
	if _, err := s.client.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: st.Header.MemberId, Alarm: etcdserverpb.AlarmType_NOSPACE}); err != nil {
		return false, st.DbSize, fmt.Errorf("disarming the etcd space alarm: %w", err)
	}
	s.log.Warn("etcd space reclaimed: writes are taken again", "dbSize", st.DbSize, "quota", s.etcd.quota)
	return true, st.DbSize, nil
}

// Quota is the embedded etcd's database quota (0 for an external etcd).
func (s *Store) Quota() int64 {
	if s.etcd == nil {
		return 0
	}
	return s.etcd.quota
}
