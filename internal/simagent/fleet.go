// Package simagent runs many simulated hosts in one process, so that the
// control plane can be measured at the size of a fleet on one machine
// (`polyvisor agent --simulate N`).
//
// Each simulated host is a host to the server in every way the server can
// see: it registers with a join token of its own and gets its own host
// token, heartbeats, holds its own watch stream, and converges the VMs the
// server places on it, reporting their status, through the same public API
// and the same client as the real agent, over connections of its own. Only
// the machine is simulated: its VMs live in an in-memory hypervisor
// (hypervisortest's fake driver, with the latencies and usage measured
// from QEMU under TCG), never in QEMU, and image contents are never
// fetched (their descriptions are, as the real agent looks them up).
//
// What the hosts share is what costs nothing in realism: one heartbeat
// timer and one pool of workers for the fleet, one TLS configuration, and
// no goroutine per VM while it is idle.
package simagent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/atomicfile"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// Config configures a fleet of simulated hosts.
type Config struct {
	// Servers are the control plane's URLs; host i talks to
	// Servers[i%len(Servers)] first and moves to the next when it loses it.
	Servers []string
	// Hosts is how many hosts to run. Host i (from 0) is named
	// Prefix + its number First+i, on five digits: sim-00001, ...
	Hosts  int
	Prefix string
	First  int
	// StateFile keeps the hosts' credentials, so that a fleet started
	// again is the same hosts; hosts without credentials there register
	// with JoinTokens, one each, in order.
	StateFile  string
	JoinTokens []string
	// JoinTLS is the TLS configuration to register with: pinned to the
	// CA fingerprint the join tokens carry. After registration the hosts
	// trust the CA certificate the server returned.
	JoinTLS *tls.Config
	// CACert trusts the server when registration is not needed (PEM).
	CACert []byte
	// RegisterConcurrency is how many hosts register at once (default 16).
	RegisterConcurrency int
	// What each host reports it has: CPUs (default 64) and memory
	// (default 256 GiB).
	HostCPUs      int
	HostMemoryMiB int64
	// Timings and Usage make the hosts' hypervisor behave as a real one
	// over time (hypervisortest.QEMUTimings and QEMUUsage).
	Timings hypervisortest.Timings
	Usage   hypervisortest.Usage
	// HeartbeatInterval is the hosts' heartbeat period (default 5s), and
	// HeartbeatWorkers how many heartbeats may be in flight (default 256).
	HeartbeatInterval time.Duration
	HeartbeatWorkers  int
	// MaxConverging bounds the VMs converging at once across the fleet
	// (default 4096); the others wait their turn.
	MaxConverging int
	// SourceAddresses makes each host dial from its own loopback address
	// (127.1.0.1, ...). It needs servers on loopback addresses; Auto turns
	// it on when they are.
	SourceAddresses SourceAddresses
	// SharedConns, when above 0, makes the hosts send their requests over
	// a pool of that many connections per server that they share, each
	// with its own token; each host keeps its own connection for its watch.
	// At 0 each host has connections of its own for everything, as a real
	// agent (see conn.go for what sharing leaves unmeasured).
	SharedConns int
	// StatsFile, when set, receives the fleet's Stats as JSON every
	// second.
	StatsFile string
	Logger    *slog.Logger
	// UsageDir, when set, keeps the hosts' usage history (internal/usage)
	// there, sampled every UsageInterval (default 1 minute) at a heartbeat.
	UsageDir      string
	UsageInterval time.Duration
}

// SourceAddresses says whether hosts dial from addresses of their own.
type SourceAddresses int

// The choices of SourceAddresses.
const (
	SourceAuto SourceAddresses = iota
	SourceOwn
	SourceShared
)

// Fleet is a running set of simulated hosts.
type Fleet struct {
	cfg   Config
	log   *slog.Logger
	warn  *warner
	c     *counters
	beats *beats
	work  chan struct{} // converging VMs' slots

	mu       sync.Mutex
	shared   []*client.Client // the pool's clients, one per server
	hosts    []*simHost
	creds    map[string]string // host name -> token
	caPEM    []byte
	tls      *tls.Config
	dirty    bool
	usage    *usage.Store // nil without Config.UsageDir
	regStart time.Time
	regTime  time.Duration
}

// New checks cfg and makes a fleet; Run runs it.
func New(cfg Config) (*Fleet, error) {
	if cfg.Hosts < 1 {
		return nil, fmt.Errorf("simulated hosts: the number of hosts must be at least 1, not %d", cfg.Hosts)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("simulated hosts: no server URL")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim-"
	}
	if cfg.First < 1 {
		cfg.First = 1
	}
	if cfg.RegisterConcurrency < 1 {
		cfg.RegisterConcurrency = 16
	}
	if cfg.HostCPUs < 1 {
		cfg.HostCPUs = 64
	}
	if cfg.HostMemoryMiB < 1 {
		cfg.HostMemoryMiB = 256 << 10
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.HeartbeatWorkers < 1 {
		cfg.HeartbeatWorkers = 256
	}
	if cfg.MaxConverging < 1 {
		cfg.MaxConverging = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UsageInterval <= 0 {
		cfg.UsageInterval = time.Minute
	}
	for _, i := range []int{0, cfg.Hosts - 1} {
		if name := hostName(cfg, i); !hostNameRE.MatchString(name) {
			return nil, fmt.Errorf("simulated hosts: %q is not a valid host name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (check the prefix)", name)
		}
	}
	f := &Fleet{cfg: cfg, log: cfg.Logger, warn: newWarner(cfg.Logger, 5*time.Second), c: newCounters(),
		work: make(chan struct{}, cfg.MaxConverging), creds: map[string]string{}}
	f.beats = newBeats(cfg.HeartbeatInterval, f.heartbeat)
	if err := f.loadState(); err != nil {
		return nil, err
	}
	if err := f.openUsage(); err != nil {
		return nil, err
	}
	missing := 0
	for i := range cfg.Hosts {
		if f.creds[hostName(cfg, i)] == "" {
			missing++
		}
	}
	if missing > len(cfg.JoinTokens) {
		return nil, fmt.Errorf("simulated hosts: %d hosts have not joined and %d join tokens were given: each host joins with a token of its own", missing, len(cfg.JoinTokens))
	}
	if missing > 0 && cfg.JoinTLS == nil {
		return nil, errors.New("simulated hosts: hosts must join but no TLS configuration to join with was given")
	}
	if missing < cfg.Hosts || len(f.cfg.CACert) > 0 {
		if err := f.trust(f.cfg.CACert); err != nil {
			return nil, err
		}
	}
	return f, nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func hostName(cfg Config, i int) string { return fmt.Sprintf("%s%05d", cfg.Prefix, cfg.First+i) }

// state is what StateFile holds.
type state struct {
	CACert string            `json:"caCert"`
	Hosts  map[string]string `json:"hosts"` // name -> host token
}

func (f *Fleet) loadState() error {
	if f.cfg.StateFile == "" {
		return nil
	}
	raw, err := os.ReadFile(f.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading simulated hosts' credentials: %w", err)
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("reading simulated hosts' credentials %s: %w", f.cfg.StateFile, err)
	}
	if len(f.cfg.CACert) == 0 {
		f.cfg.CACert = []byte(st.CACert)
	}
	for n, t := range st.Hosts {
		f.creds[n] = t
	}
	return nil
}

// saveState writes the credentials when they changed.
func (f *Fleet) saveState() error {
	f.mu.Lock()
	if f.cfg.StateFile == "" || !f.dirty {
		f.mu.Unlock()
		return nil
	}
	st := state{CACert: string(f.caPEM), Hosts: make(map[string]string, len(f.creds))}
	for n, t := range f.creds {
		st.Hosts[n] = t
	}
	f.dirty = false
	f.mu.Unlock()
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding simulated hosts' credentials: %w", err)
	}
	if err := atomicfile.Write(f.cfg.StateFile, raw, 0o600); err != nil {
		return fmt.Errorf("saving simulated hosts' credentials: %w", err)
	}
	return nil
}

// trust makes the hosts trust the CA certificate caPEM from now on.
func (f *Fleet) trust(caPEM []byte) error {
	tc, err := tlsConfig(caPEM)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.caPEM, f.tls = caPEM, tc
	f.mu.Unlock()
	return nil
}

// sharedClients returns the clients of the shared request pool, made on
// first use, or nil when the hosts share nothing.
func (f *Fleet) sharedClients(tc *tls.Config) ([]*client.Client, error) {
	if f.cfg.SharedConns < 1 {
		return nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shared == nil {
		for _, s := range f.cfg.Servers {
			c, err := sharedClient(s, tc, f.cfg.SharedConns, f.ownAddresses())
			if err != nil {
				return nil, err
			}
			f.shared = append(f.shared, c)
		}
	}
	return f.shared, nil
}

func (f *Fleet) ownAddresses() bool {
	switch f.cfg.SourceAddresses {
	case SourceOwn:
		return true
	case SourceShared:
		return false
	}
	return loopbackServers(f.cfg.Servers)
}

// Run registers the hosts that have not joined, runs every host until ctx
// ends, and saves the credentials. Hosts start as soon as they are
// registered. It returns an error only when the fleet cannot run at all.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.beats.run(ctx, f.cfg.HeartbeatWorkers)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.housekeep(ctx)
	}()

	own := f.ownAddresses()
	hosts := make([]*simHost, f.cfg.Hosts)
	for i := range hosts {
		var src net.IP
		if own {
			src = sourceAddr(f.cfg.First - 1 + i) // by its number: fleets in several processes never share one
		}
		hosts[i] = newSimHost(f, i, hostName(f.cfg, i), src)
	}
	f.mu.Lock()
	f.hosts = hosts
	f.mu.Unlock()
	var toJoin []int
	for i, h := range hosts {
		if tok := f.creds[h.name]; tok != "" {
			if err := h.start(ctx, tok, false, &wg); err != nil {
				return err
			}
			continue
		}
		toJoin = append(toJoin, i)
	}
	if len(toJoin) > 0 {
		f.log.Info("registering simulated hosts", "hosts", len(toJoin), "concurrency", f.cfg.RegisterConcurrency)
		if err := f.registerAll(ctx, toJoin, &wg); err != nil {
			return err
		}
	}
	f.log.Info("simulated hosts running", "hosts", f.cfg.Hosts, "first", hostName(f.cfg, 0), "last", hostName(f.cfg, f.cfg.Hosts-1), "ownAddresses", own)
	<-ctx.Done()
	cancel()
	wg.Wait()
	if f.cfg.StatsFile != "" {
		_ = writeStats(f.cfg.StatsFile, f.Stats())
	}
	if f.usage != nil {
		_ = f.usage.Close()
	}
	return f.saveState()
}

// registerAll registers the hosts toJoin (indexes), each with the next
// join token, RegisterConcurrency at a time, and starts each as it is
// registered. A host the server refuses is logged and left out; one it could not take
// (5xx) asks again, as an agent does.
func (f *Fleet) registerAll(ctx context.Context, toJoin []int, wg *sync.WaitGroup) error {
	f.mu.Lock()
	f.regStart = time.Now()
	f.mu.Unlock()
	var next atomic.Int64
	var rwg sync.WaitGroup
	var fatalErr error
	var once sync.Once
	for range min(f.cfg.RegisterConcurrency, len(toJoin)) {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(toJoin) {
					return
				}
				h := f.hosts[toJoin[k]]
				tok, err := h.register(ctx, f.cfg.JoinTokens[k])
				// As an agent does, it asks again when the server could
				// not take it (5xx: the token is given back).
				for pause := time.Second; err != nil && client.HTTPStatus(err) >= 500 && pause <= 16*time.Second && ctx.Err() == nil; pause *= 2 {
					select {
					case <-ctx.Done():
					case <-time.After(pause):
					}
					tok, err = h.register(ctx, f.cfg.JoinTokens[k])
				}
				if err != nil {
					f.c.registerErrors.Add(1)
					f.warn.warn("registering simulated host", h.name, err)
					continue
				}
				f.c.registrations.Add(1)
				f.mu.Lock()
				f.creds[h.name], f.dirty = tok, true
				f.mu.Unlock()
				if err := h.start(ctx, tok, true, wg); err != nil {
					once.Do(func() { fatalErr = err })
					return
				}
			}
		}()
	}
	rwg.Wait()
	f.mu.Lock()
	f.regTime = time.Since(f.regStart)
	f.mu.Unlock()
	if fatalErr != nil {
		return fatalErr
	}
	if err := f.saveState(); err != nil {
		return err
	}
	f.log.Info("registered simulated hosts", "registered", f.c.registrations.Load(), "failed", f.c.registerErrors.Load(), "seconds", f.regTime.Seconds())
	return ctx.Err()
}

// housekeep saves credentials and stats every second.
func (f *Fleet) housekeep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.saveState(); err != nil {
			f.warn.warn("saving credentials", "", err)
		}
		if f.cfg.StatsFile != "" {
			if err := writeStats(f.cfg.StatsFile, f.Stats()); err != nil {
				f.warn.warn("writing stats", "", err)
			}
		}
	}
}

// phase is a time within the next heartbeat interval, at random.
func (f *Fleet) phase() time.Time {
	return time.Now().Add(time.Duration(rand.Int64N(int64(f.cfg.HeartbeatInterval))))
}

// Stats returns what the fleet has done so far.
func (f *Fleet) Stats() Stats {
	s := Stats{
		Time: time.Now().UTC(), Hosts: f.cfg.Hosts,
		Registrations: f.c.registrations.Load(), RegisterErrors: f.c.registerErrors.Load(),
		Heartbeats: f.c.heartbeats.Load(), HeartbeatErrors: f.c.heartbeatErrors.Load(),
		Heartbeat: f.c.heartbeat.summary(), HeartbeatLate: f.c.late.summary(),
		Watching: int(f.c.watching.Load()), WatchConnects: f.c.watchConnects.Load(), WatchErrors: f.c.watchErrors.Load(),
		Converging: f.c.converging.Load(), Reports: f.c.reports.Load(), ReportErrors: f.c.reportErrors.Load(), Starts: f.c.starts.Load(),
		ConvergeErrs: f.c.convErr.Load(), Report: f.c.report.summary(), Streams: f.c.streams.Load(),
	}
	f.mu.Lock()
	hosts := f.hosts
	if f.regTime > 0 {
		s.RegisterSeconds = f.regTime.Seconds()
	}
	f.mu.Unlock()
	for _, h := range hosts {
		reg, beating, revoked, vms, running := h.summary()
		if reg {
			s.Registered++
		}
		if beating {
			s.Heartbeating++
		}
		if revoked {
			s.Revoked++
		}
		s.VMs += vms
		s.Running += running
	}
	return s
}
