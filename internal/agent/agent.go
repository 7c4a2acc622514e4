// Package agent is Polyvisor's host agent. It registers its host with the
// server, heartbeats, watches the VMs placed on its host, converges each to
// its desired state through a hypervisor driver, and reports what it
// observes. It talks only to the server's API (through package client),
// never to the store. VM processes outlive the agent: a restarted agent
// re-attaches to them through their persisted handles.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/keeper"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// Config configures an agent.
type Config struct {
	Client *client.Client
	// Host is this host's name, as registered.
	Host string
	// StateDir holds the agent's handles and image cache.
	StateDir string
	Driver   hypervisor.Driver
	// Address is reported to the server as the host's address.
	Address           string
	HeartbeatInterval time.Duration
	Logger            *slog.Logger
	// OnServers is told the control plane's server URLs each time the
	// agent learns them (at every watch it opens), to keep them with the
	// host's credentials; the client fails over among them.
	OnServers func(urls []string)
	// RestartDelay is the pause before a crashed VM whose policy is
	// restart is started again; it doubles with each crash in a row, up
	// to MaxRestartDelay. Defaults: 2s and 5 minutes.
	RestartDelay    time.Duration
	MaxRestartDelay time.Duration
	// Network makes the host's network dataplane from the states the
	// server sends; nil for a host that makes none (its VMs have only
	// user-mode NICs). Ports reports the ports it made (nil: not
	// reported).
	Network Dataplane
	Ports   PortReporter
	// UsageInterval is how often the VMs' usage is sampled into the
	// host's history (StateDir/usage); 0 means DefaultUsageInterval,
	// negative keeps no history.
	UsageInterval time.Duration
	// KeeperCommand, when set, is the `polyvisor keeper` command line the
	// agent starts its keeper with, when none runs for its state
	// directory (keeper.go); nil runs none.
	KeeperCommand []string
}

// Agent runs the VMs the server places on one host.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	c      *client.Client
	driver hypervisor.Driver
	info   hypervisor.Info
	cache  *imageCache
	net    *netLoop // nil without a dataplane
	vols   *volumes
	usage  *usage.Recorder // nil when no history is kept

	// life is Run's context: what lives as long as the agent (workers,
	// console streams) lives under it, never under one watch connection.
	life context.Context
	// revoked ends Run with ErrRevoked; set by Run.
	revoked func(error)
	// rewatch ends the current watch, so that it reconnects (to the
	// server the client failed over to).
	rewatch atomicCancel
	// fence is the host's self-fencing (fence.go).
	fence fencer
	// keeper is the link to the host's keeper (keeper.go).
	keeper keeperLink

	mu      sync.Mutex
	workers map[string]*worker            // by VM name
	handles map[string]*hypervisor.Handle // recovered handles not yet claimed, by VM UID
	bad     map[string]badHandle          // handle files that could not be used, by VM UID
}

// New makes an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.RestartDelay <= 0 {
		cfg.RestartDelay = 2 * time.Second
	}
	if cfg.MaxRestartDelay <= 0 {
		cfg.MaxRestartDelay = 5 * time.Minute
	}
	for _, d := range []string{cfg.StateDir, handleDir(cfg.StateDir), filepath.Join(cfg.StateDir, "images")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating agent state dir: %w", err)
		}
	}
	a := &Agent{
		cfg:     cfg,
		log:     cfg.Logger,
		c:       cfg.Client,
		driver:  cfg.Driver,
		workers: map[string]*worker{},
		handles: map[string]*hypervisor.Handle{},
		bad:     map[string]badHandle{},
		life:    context.Background(),
	}
	a.keeper.kick = make(chan struct{}, 1)
	a.cache = newImageCache(a.c, filepath.Join(cfg.StateDir, "images"))
	if cfg.Network != nil {
		a.net = newNetLoop(a, cfg.Network, cfg.Ports)
	}
	a.vols = newVolumes(a)
	a.cache.shared = a.vols.imageDir
	if cfg.UsageInterval == 0 {
		a.cfg.UsageInterval = DefaultUsageInterval
	}
	if a.cfg.UsageInterval > 0 {
		st, err := usage.Open(usageDir(cfg.StateDir), usage.Options{})
		if err != nil {
			return nil, fmt.Errorf("opening the usage history: %w", err)
		}
		a.usage = usage.NewRecorder(st, cfg.Host)
	}
	return a, nil
}

// Run re-attaches to the VMs that kept running, then heartbeats and
// follows the server until ctx ends. VMs keep running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	a.life = ctx
	info, err := a.driver.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading hypervisor info: %w", err)
	}
	a.info = info
	if err := a.recover(ctx); err != nil {
		return err
	}
	// A host whose credentials the server no longer takes (revoked, or the
	// host deleted) stops: retrying cannot succeed, and the operator must
	// join it again. Its VMs keep running.
	ctx, revoke := context.WithCancelCause(ctx)
	defer revoke(nil)
	a.revoked = func(err error) { revoke(fmt.Errorf("%w: %w", ErrRevoked, err)) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.heartbeat(ctx)
	}()
	a.fence.mu.Lock()
	a.fence.contact = time.Now() // T_fence counts from the start at most
	a.fence.mu.Unlock()
	wg.Go(func() { a.fenceLoop(ctx) })
	if a.cfg.KeeperCommand != nil {
		wg.Go(func() { a.keeperLoop(ctx) })
	}
	wg.Go(func() { a.sampleUsage(ctx) })
	if a.net != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.net.run(ctx)
		}()
	}
	go func() {
		defer wg.Done()
		a.vols.run(ctx)
	}()
	a.follow(ctx)
	wg.Wait()
	a.mu.Lock()
	for _, w := range a.workers {
		w.stop()
	}
	a.mu.Unlock()
	if err := context.Cause(ctx); errors.Is(err, ErrRevoked) {
		return err
	}
	return nil
}

// ErrRevoked is returned by Run when the server refuses the host's
// credentials: the host was revoked or deleted and must join again.
var ErrRevoked = errors.New("the server refuses this host's credentials (revoked, or the host was deleted)")

// checkRevoked stops the agent when err is the server refusing its token.
func (a *Agent) checkRevoked(err error) {
	if client.ErrorCode(err) == api.CodeUnauthorized && a.revoked != nil {
		a.revoked(err)
	}
}

// recover loads persisted handles and re-attaches to their VMs. A VM whose
// process still runs is adopted as it is; nothing is started here. A
// handle file that cannot be used is skipped, logged and reported in the
// host's status.
func (a *Agent) recover(ctx context.Context) error {
	hs, bad, err := loadHandles(a.cfg.StateDir)
	if err != nil {
		return err
	}
	for _, b := range bad {
		a.log.Error("skipping an unusable vm handle: its vm is neither adopted nor made again", "uid", b.UID, "path", b.Path, "err", b.Err)
		a.mu.Lock()
		a.bad[b.UID] = b
		a.mu.Unlock()
	}
	for _, h := range hs {
		st, err := a.driver.Recover(ctx, h)
		if err != nil {
			a.log.Warn("re-attaching to vm", "vm", h.Name, "err", err)
		} else {
			a.log.Info("re-attached to vm", "vm", h.Name, "state", st.State, "pid", st.PID)
		}
		a.mu.Lock()
		a.handles[h.UID] = h
		a.mu.Unlock()
	}
	return nil
}

// badHandleOf returns the unusable handle file of a VM, if it had one.
func (a *Agent) badHandleOf(uid string) (badHandle, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.bad[uid]
	return b, ok
}

// warnings are what the host's status reports for a person to look at.
func (a *Agent) warnings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, b := range a.bad {
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}

// heartbeat reports the host's status until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		for try := 0; try < 2; try++ {
			hctx, cancel := context.WithTimeout(ctx, a.heartbeatTimeout())
			sent, sentBoot := time.Now(), keeper.Now()
			h, err := a.c.PutHostStatus(hctx, a.cfg.Host, a.hostStatus())
			cancel()
			if err == nil {
				a.keeperContact(sentBoot, h)
			}
			if err == nil && a.fence.answered(sent, h) {
				// Fenced, and the server says the host is not: a watch
				// opened from now on ends the fencing at its sync.
				a.rewatch.cancel()
			}
			if err == nil || ctx.Err() != nil {
				break
			}
			a.log.Warn("heartbeat failed", "err", err)
			a.checkRevoked(err)
			if !serverLost(err) {
				break
			}
			// Report to the next server at once.
			a.moveOn(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// follow watches the host's VMs, reconnecting with backoff.
func (a *Agent) follow(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := a.watchOnce(ctx)
		a.checkRevoked(err)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 200 * time.Millisecond
		}
		a.log.Warn("watch ended; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (a *Agent) watchOnce(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	a.rewatch.set(cancel)
	opened := time.Now()
	msgs, errs := a.c.WatchHost(ctx, a.cfg.Host)
	seen := map[string]bool{} // UIDs of the VMs the server places here
	synced := false
	idle := time.NewTimer(watchIdleTimeout)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			if parent.Err() == nil {
				return errors.New("moving to another server")
			}
			return ctx.Err()
		case <-idle.C:
			err := fmt.Errorf("nothing came on the watch for %s", watchIdleTimeout)
			a.moveOn(err)
			return err
		case err := <-errs:
			if err == nil {
				err = errors.New("watch stream closed")
			}
			return err
		case m, ok := <-msgs:
			if !ok {
				return errors.New("watch stream closed")
			}
			idle.Reset(watchIdleTimeout)
			switch m.Type {
			case api.AgentMsgVM:
				if m.VM == nil {
					continue
				}
				if !synced {
					seen[m.VM.UID] = true
				}
				a.workerFor(m.VM).update(m.VM)
			case api.AgentMsgVMRemoved:
				a.forget(m.Name)
			case api.AgentMsgNetwork:
				if m.Network != nil && a.net != nil {
					a.net.update(m.Network)
				}
			case api.AgentMsgSynced:
				synced = true
				a.keeperSynced()
				if a.fence.synced(opened) {
					a.unfence(seen)
				}
				a.reapOrphans(ctx, seen)
				go a.learnServers(ctx)
			case api.AgentMsgVolume:
				if m.Volume != nil {
					a.vols.update(m.Volume)
				}
			case api.AgentMsgVolumeRemoved:
				a.vols.removed(m.Name)
			case api.AgentMsgPool:
				if m.Pool != nil {
					a.vols.pool(m.Pool)
				}
			case api.AgentMsgGuestDeny:
				a.denyGuests(ctx, m.GuestDeny)
			case api.AgentMsgPoolRemoved:
				a.vols.poolRemoved(ctx, m.Name)
			case api.AgentMsgStream:
				if m.Stream != nil {
					// A console lives as long as the agent, not as
					// long as this watch connection.
					go a.serveStream(a.life, *m.Stream)
				}
			}
		}
	}
}

// workerFor returns the VM's worker, starting one (with its recovered
// handle, if any) the first time.
func (a *Agent) workerFor(vm *api.VM) *worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := vm.Key()
	if w, ok := a.workers[key]; ok && w.uid == vm.UID {
		return w
	} else if ok {
		w.stop() // the name now belongs to another VM
	}
	// The same VM under a new key (moved into a project by a server
	// upgrade) keeps its worker and, with it, its running process.
	for k, w := range a.workers {
		if w.uid == vm.UID {
			delete(a.workers, k)
			a.workers[key] = w
			return w
		}
	}
	h := a.handles[vm.UID]
	delete(a.handles, vm.UID)
	w := newWorker(a, key, vm, h)
	a.workers[key] = w
	// A worker ends when stopped, not with the agent's context: it never
	// abandons a convergence half done.
	go w.run(context.WithoutCancel(a.life))
	return w
}

func (a *Agent) worker(name string) (*worker, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.workers[name]
	return w, ok
}

// forget drops the worker of a VM the server no longer has under this
// key. Its handle, if the VM still exists here, goes back to the recovered
// handles: the same VM may come back under another key, and one the
// server no longer knows at all is removed as an orphan.
func (a *Agent) forget(name string) {
	a.mu.Lock()
	w, ok := a.workers[name]
	if ok {
		delete(a.workers, name)
		if h := w.currentHandle(); h != nil {
			a.handles[w.uid] = h
		}
	}
	a.mu.Unlock()
	if ok {
		w.stop()
	}
}

// forgetWorker drops a worker, under whatever key it is kept.
func (a *Agent) forgetWorker(w *worker) {
	a.mu.Lock()
	for k, x := range a.workers {
		if x == w {
			delete(a.workers, k)
		}
	}
	a.mu.Unlock()
	w.stop()
}

// reapOrphans destroys VMs this host still has but the server does not
// (a create rolled back, or a VM deleted, while the agent was away).
func (a *Agent) reapOrphans(ctx context.Context, seen map[string]bool) {
	a.mu.Lock()
	var orphans []*hypervisor.Handle
	for uid, h := range a.handles {
		if host := h.Extra[extraHost]; host != "" && host != a.cfg.Host {
			a.log.Warn("leaving alone a vm made for another host name", "vm", h.Name, "uid", uid, "host", host)
			continue
		}
		if !seen[uid] {
			orphans = append(orphans, h)
			delete(a.handles, uid)
		}
	}
	a.mu.Unlock()
	for _, h := range orphans {
		a.log.Warn("removing vm the server does not know", "vm", h.Name, "uid", h.UID)
		if err := a.driver.Destroy(ctx, h, false); err != nil {
			a.log.Error("removing orphaned vm", "vm", h.Name, "err", err)
			continue
		}
		removeHandle(a.cfg.StateDir, h.UID)
	}
}
