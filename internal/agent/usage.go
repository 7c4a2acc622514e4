package agent

import (
	"context"
	"encoding/json"
	"fmt"
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
		ans = AnswerUsage(a.usage.Store(), a.cfg.Host, req.Usage)
	}
	return json.NewEncoder(conn).Encode(ans)
}

// MaxUsagePoints bounds the points of one answer, over all its series.
const MaxUsagePoints = 1 << 20

// AnswerUsage reads what a usage query asks from a host's store.
func AnswerUsage(st *usage.Store, host string, q *api.UsageQuery) api.UsageAnswer {
	ans := api.UsageAnswer{Series: map[string][]api.UsagePoint{}}
	if q == nil {
		ans.Error = "no usage query"
		return ans
	}
	kind, ids := usage.KindVM, q.UIDs
	if q.Kind == usage.KindHost {
		kind, ids = usage.KindHost, []string{host}
	} else if q.Kind != usage.KindVM {
		ans.Error = fmt.Sprintf("usage query kind %q: host or vm", q.Kind)
		return ans
	}
	total := 0
	for _, id := range ids {
		pts, step, err := st.Query(kind, id, q.Since, q.Until, time.Duration(q.StepSeconds)*time.Second)
		if err != nil {
			ans.Error = err.Error()
			return ans
		}
		if total += len(pts); total > MaxUsagePoints {
			ans.Error = fmt.Sprintf("more than %d points asked for: ask for a longer step", MaxUsagePoints)
			ans.Series = nil
			return ans
		}
		ans.StepSeconds = int64(step / time.Second)
		out := make([]api.UsagePoint, len(pts))
		for i, p := range pts {
			out[i] = api.UsagePoint{Time: p.Time, CPU: p.CPU, CPUMax: p.CPUMax, MemoryBytes: int64(p.MemoryBytes), MemoryMaxBytes: int64(p.MemoryMax), Samples: p.Samples}
		}
		ans.Series[id] = out
	}
	return ans
}
