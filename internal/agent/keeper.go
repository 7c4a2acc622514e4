package agent

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/keeper"
)

// The agent's side of its keeper (package keeper, docs/HA.md): it starts
// or adopts the keeper at its start, feeds it the sending time of every
// answered heartbeat and, whenever it changes, the processes of its HA
// VMs, and reports in its heartbeat whether the keeper is armed. A keeper
// that dies is not started again until the agent starts again (or its
// own service manager starts it): meanwhile the host reports it unarmed,
// and the leader does not restart its HA VMs on its silence alone.

// keeperLink is the agent's connection to its keeper.
type keeperLink struct {
	mu      sync.Mutex
	c       *keeper.Client // nil while not connected
	st      keeper.State   // the last answer
	err     string         // why not connected
	contact int64          // answered heartbeat to feed (CLOCK_BOOTTIME ns); 0: none
	timeout int64          // T_fence, ms, with it
	sent    []keeper.Proc  // the set last taken
	known   bool           // sent is the whole set
	synced  bool           // a watch synced since the agent started
	kick    chan struct{}
}

// keeperContact feeds an answered heartbeat, sent at sentBoot, to the
// keeper at once.
func (a *Agent) keeperContact(sentBoot time.Duration, h *api.Host) {
	if a.cfg.KeeperCommand == nil || h == nil {
		return
	}
	k := &a.keeper
	k.mu.Lock()
	if int64(sentBoot) > k.contact {
		k.contact, k.timeout = int64(sentBoot), h.FenceTimeoutMS
	}
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// keeperSynced records that the host's VMs, and so which are HA, are known.
func (a *Agent) keeperSynced() {
	a.keeper.mu.Lock()
	a.keeper.synced = true
	a.keeper.mu.Unlock()
}

// keeperStatus is what the heartbeat says of the keeper; nil when the
// agent runs none.
func (a *Agent) keeperStatus() *api.HostKeeper {
	if a.cfg.KeeperCommand == nil {
		return nil
	}
	k := &a.keeper
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c == nil {
		if k.err == "" {
			return &api.HostKeeper{Message: "not connected yet"}
		}
		return &api.HostKeeper{Message: "not running: " + k.err + "; this host's HA vms are not restarted elsewhere on its silence alone (restart the agent to start it)"}
	}
	out := &api.HostKeeper{Armed: k.st.Armed, Message: k.st.Message}
	if f := k.st.Fired; f != nil {
		out.LastFired = f.At
	}
	return out
}

// haProcs are the processes of this host's HA VMs that run, by UID.
func (a *Agent) haProcs() []keeper.Proc {
	a.mu.Lock()
	ws := make([]*worker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	var out []keeper.Proc
	for _, w := range ws {
		w.mu.Lock()
		vm := w.latest
		w.mu.Unlock()
		if vm == nil || vm.Spec.HA != api.HARestart {
			continue
		}
		if h := w.currentHandle(); h != nil && h.PID > 0 {
			out = append(out, keeper.Proc{UID: w.uid, Name: w.name, PID: h.PID, Start: h.PIDStart})
		}
	}
	slices.SortFunc(out, func(x, y keeper.Proc) int { return strings.Compare(x.UID, y.UID) })
	return out
}

// keeperLoop starts or adopts the keeper, then feeds it until ctx ends:
// a new contact at once, the HA VMs' processes within 100ms of a change,
// and a feed at least every 250ms, so that a dead keeper shows in the
// next heartbeat.
func (a *Agent) keeperLoop(ctx context.Context) {
	k := &a.keeper
	c, started, err := keeper.Start(ctx, a.cfg.StateDir, a.cfg.KeeperCommand)
	k.mu.Lock()
	if err != nil {
		k.err = err.Error()
		a.log.Error("no keeper: this host's HA vms will not be restarted elsewhere on its silence alone", "err", err)
	} else {
		k.c = c
		a.log.Info("keeper connected", "started", started, "socket", keeper.SocketPath(a.cfg.StateDir))
	}
	k.mu.Unlock()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			k.mu.Lock()
			if k.c != nil {
				k.c.Close() // the keeper runs on, and fires unless fed again
			}
			k.mu.Unlock()
			return
		case <-k.kick:
		case <-t.C:
		}
		k.mu.Lock()
		if k.c == nil {
			// Reconnect only: a keeper started again belongs to the
			// agent's start or to the host's service manager.
			if nc, err := keeper.Dial(a.cfg.StateDir); err == nil {
				k.c, k.known = nc, false
				a.log.Info("keeper connected again")
			}
		}
		k.mu.Unlock()
		procs := a.haProcs()
		k.mu.Lock()
		var f keeper.Feed
		due := k.contact != 0 || time.Since(last) >= 250*time.Millisecond
		if k.synced && (!k.known || !slices.Equal(procs, k.sent)) {
			f.Known, f.VMs, due = true, procs, true
		}
		f.Contact, f.TimeoutMS = k.contact, k.timeout
		c := k.c
		k.mu.Unlock()
		if !due || c == nil {
			continue
		}
		st, err := c.Feed(f)
		last = time.Now()
		k.mu.Lock()
		if err != nil {
			if k.c == c {
				c.Close()
				k.c, k.err = nil, err.Error()
				a.log.Error("lost the keeper: this host's HA vms will not be restarted elsewhere on its silence alone", "err", err)
			}
		} else {
			if f.Contact == k.contact {
				k.contact = 0
			}
			if f.Known {
				k.sent, k.known = f.VMs, true
			}
			if fired := st.Fired; fired != nil && (k.st.Fired == nil || !fired.At.Equal(k.st.Fired.At)) {
				a.log.Error("the keeper fired: it killed this host's HA vms", "at", fired.At, "killed", fired.Killed, "failed", fired.Failed)
			}
			if len(st.Refused) > 0 && !slices.Equal(st.Refused, k.st.Refused) {
				a.log.Warn("the keeper does not hold some HA vm processes", "refused", st.Refused)
			}
			k.st = st
		}
		k.mu.Unlock()
	}
}
