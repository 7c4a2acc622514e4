package agent

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// DefaultUsageInterval is how often the agent samples its VMs' usage.
const DefaultUsageInterval = time.Minute

// usageDir is where the host keeps its and its VMs' history.
func usageDir(stateDir string) string { return filepath.Join(stateDir, "usage") }

// sampleUsage samples the running VMs' usage every interval and records
// it, with the host's sum, in the host's history, until ctx ends.
func (a *Agent) sampleUsage(ctx context.Context) {
	st, ok := a.driver.(hypervisor.Statser)
	if !ok || a.usage == nil {
		return
	}
	t := time.NewTicker(a.cfg.UsageInterval)
	defer t.Stop()
	synced := time.Now()
	for {
		a.usageRound(ctx, st)
		if time.Since(synced) >= 5*time.Minute {
			if err := a.usage.Store().Sync(); err != nil {
				a.log.Warn("syncing the usage history", "err", err)
			}
			synced = time.Now()
		}
		select {
		case <-ctx.Done():
			_ = a.usage.Store().Sync()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) usageRound(ctx context.Context, st hypervisor.Statser) {
	a.mu.Lock()
	type vmHandle struct {
		uid string
		h   *hypervisor.Handle
	}
	var hs []vmHandle
	for _, w := range a.workers {
		if h := w.currentHandle(); h != nil {
			hs = append(hs, vmHandle{w.uid, h})
		}
	}
	a.mu.Unlock()
	samples := make([]usage.VMSample, 0, len(hs))
	for _, vh := range hs {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := st.Stats(sctx, vh.h)
		cancel()
		if err != nil {
			continue // not running: no point
		}
		samples = append(samples, usage.VMSample{UID: vh.uid, CPUSeconds: s.CPUSeconds, MemoryBytes: s.MemoryBytes})
	}
	if err := a.usage.Round(ctx, time.Now(), samples); err != nil && ctx.Err() == nil {
		a.log.Warn("recording usage", "err", err)
	}
}

// serveUsage answers a usage query from the host's history.
func (a *Agent) serveUsage(conn net.Conn, req api.StreamRequest) error {
	var ans api.UsageAnswer
	if a.usage == nil {
		ans.Error = "this host keeps no usage history"
	} else {
		ans = usage.Answer(a.usage.Store(), a.cfg.Host, req.Usage)
	}
	return json.NewEncoder(conn).Encode(ans)
}
