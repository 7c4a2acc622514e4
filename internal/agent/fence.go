package agent

import (
	"context"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Self-fencing (docs/HA.md). The server tells the agent T_fence with
// every answered heartbeat (api.Host.FenceTimeoutMS). When no heartbeat
// sent in the last T_fence has been answered, the agent kills its HA VMs
// (those whose spec says ha: restart) and starts none until the control
// plane answers again and says the host is not fenced, and a watch
// opened after that answer has synced: by then the VMs the leader
// restarted elsewhere are no longer sent to this host, and their killed
// copies here are removed as orphans. The time of contact is when the
// answered heartbeat was sent, never when its answer came: the leader
// received it later than that, and counts its T_fence from then.

// fencer is the agent's self-fencing state.
type fencer struct {
	mu      sync.Mutex
	contact time.Time     // when the last answered heartbeat was sent
	timeout time.Duration // T_fence, as the server last said; 0: off
	fenced  bool          // HA VMs were killed; none starts here
	// unfencedAt, when not zero, is when the server said the host is not
	// fenced: a watch opened after it ends the fencing at its sync.
	unfencedAt time.Time
}

// answered records an answered heartbeat, sent at sent, and what the
// server says of the host. It tells whether the agent was fenced and the
// server now says it is not: the watch is then to be opened again.
func (f *fencer) answered(sent time.Time, h *api.Host) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sent.After(f.contact) {
		f.contact = sent
	}
	if h == nil {
		return false
	}
	f.timeout = time.Duration(h.FenceTimeoutMS) * time.Millisecond
	if f.fenced && f.unfencedAt.IsZero() && (h.Fence == nil || h.Fence.State == api.FenceReturned) {
		f.unfencedAt = time.Now()
		return true
	}
	return false
}

// due tells whether the agent must fence itself now.
func (f *fencer) due(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.timeout > 0 && !f.fenced && now.Sub(f.contact) >= f.timeout
}

// isFenced tells whether HA VMs may not start here: the host fenced
// itself, or is due to (the keeper, which counts as the agent does, may
// have killed them already: a crashed HA VM is not started again in the
// moment before the fencing).
func (f *fencer) isFenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced || (f.timeout > 0 && time.Since(f.contact) >= f.timeout)
}

// synced ends the fencing at the sync of a watch opened at opened, if the
// server said the host is not fenced before that watch was opened.
func (f *fencer) synced(opened time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.fenced || f.unfencedAt.IsZero() || opened.Before(f.unfencedAt) {
		return false
	}
	f.fenced, f.unfencedAt = false, time.Time{}
	return true
}

// fenceLoop fences the host when the control plane has been out of
// reach for T_fence, until ctx ends.
func (a *Agent) fenceLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if a.fence.due(now) {
				a.selfFence(ctx)
			}
		}
	}
}

// selfFence kills the HA VMs of this host: their workers go first, so
// that nothing starts them again, and their handles go back to the
// recovered ones, to be adopted again or removed as orphans once the
// control plane answers.
func (a *Agent) selfFence(ctx context.Context) {
	a.fence.mu.Lock()
	a.fence.fenced, a.fence.unfencedAt = true, time.Time{}
	since, timeout := a.fence.contact, a.fence.timeout
	a.fence.mu.Unlock()
	a.log.Error("the control plane has not answered for T_fence: fencing this host, killing its HA vms", "since", since, "fenceTimeout", timeout)
	var killed []*worker
	a.mu.Lock()
	for k, w := range a.workers {
		w.mu.Lock()
		vm := w.latest
		w.mu.Unlock()
		if vm == nil || vm.Spec.HA != api.HARestart {
			continue
		}
		delete(a.workers, k)
		killed = append(killed, w)
	}
	a.mu.Unlock()
	for _, w := range killed {
		w.stop()
		h := w.currentHandle()
		if h == nil {
			continue
		}
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.driver.Stop(kctx, h, hypervisor.StopOptions{Force: true})
		cancel()
		if err != nil {
			a.log.Error("fencing: killing ha vm failed", "vm", w.name, "uid", w.uid, "err", err)
		} else {
			a.log.Warn("fencing: killed ha vm", "vm", w.name, "uid", w.uid)
		}
		a.mu.Lock()
		a.handles[w.uid] = h
		a.mu.Unlock()
	}
	a.log.Warn("host fenced", "killed", len(killed))
}

// unfence ends the fencing at the sync of a watch opened after the
// server said the host is not fenced: workers of VMs that watch did not
// send (moved elsewhere meanwhile) go, their copies here left to
// reapOrphans, and the others converge again at once.
func (a *Agent) unfence(seen map[string]bool) {
	a.mu.Lock()
	var gone, kept []*worker
	for k, w := range a.workers {
		if !seen[w.uid] {
			delete(a.workers, k)
			if h := w.currentHandle(); h != nil {
				a.handles[w.uid] = h
			}
			gone = append(gone, w)
		} else {
			kept = append(kept, w)
		}
	}
	a.mu.Unlock()
	for _, w := range gone {
		w.stop()
	}
	for _, w := range kept {
		w.netDue.Store(true)
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	a.log.Warn("the control plane answers and the host is not fenced: its vms run again as the server places them")
}
