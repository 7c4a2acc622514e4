package simagent

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// The fleet keeps its hosts' usage history in one store (Config.UsageDir),
// each host recording its own series as an agent does in its data dir.

// openUsage opens the fleet's usage store, when it keeps one.
func (f *Fleet) openUsage() error {
	if f.cfg.UsageDir == "" {
		return nil
	}
	st, err := usage.Open(f.cfg.UsageDir, usage.Options{MaxSeries: f.cfg.Hosts * 64, MaxOpen: 1024})
	if err != nil {
		return err
	}
	f.usage = st
	return nil
}

// sampleUsage records one round of h's running VMs, when its interval has
// passed since the last.
func (h *simHost) sampleUsage(ctx context.Context, now time.Time) {
	if h.recorder == nil || now.Sub(h.lastSample) < h.f.cfg.UsageInterval {
		return
	}
	h.lastSample = now
	h.mu.Lock()
	vms := make([]*simVM, 0, len(h.vms))
	for _, v := range h.vms {
		vms = append(vms, v)
	}
	h.mu.Unlock()
	samples := make([]usage.VMSample, 0, len(vms))
	for _, v := range vms {
		h.mu.Lock()
		hd := v.handle()
		h.mu.Unlock()
		if hd == nil {
			continue
		}
		st, err := h.driver.Stats(ctx, hd)
		if err != nil {
			continue
		}
		samples = append(samples, usage.VMSample{UID: v.uid, CPUSeconds: st.CPUSeconds, MemoryBytes: st.MemoryBytes})
	}
	if err := h.recorder.Round(ctx, now, samples); err != nil && ctx.Err() == nil {
		h.f.warn.warn("recording usage", h.name, err)
	}
}

// serveUsage answers a usage stream from the fleet's store.
func (h *simHost) serveUsage(conn net.Conn, req api.StreamRequest) {
	ans := api.UsageAnswer{Error: "simulated host " + h.name + " keeps no usage history (--simulate-usage-dir)"}
	if h.recorder != nil {
		ans = usage.Answer(h.f.usage, h.name, req.Usage)
	}
	_ = json.NewEncoder(conn).Encode(ans)
}
