package server

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/planner"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// providerUsageTimeout bounds one provider's usage reading.
const providerUsageTimeout = 20 * time.Second

// providerUsageSeries bounds the series of the providers' history: as an
// agent's store, 4,096 series (2.2 GB at most).
const providerUsageSeries = 4096

// providerUsageDir is where the leading server keeps the history of the
// connected providers' VMs and hosts.
func providerUsageDir(dataDir string) string { return filepath.Join(dataDir, "usage-providers") }

// providerSampler samples the connected providers' usage into the
// server's provider history while the server leads.
type providerSampler struct {
	s     *Server
	store *usage.Store

	// readings are the readings under way; busy names their providers:
	// a provider still answering the last reading is not asked again, so
	// one that hangs holds up neither the others nor the rounds.
	readings sync.WaitGroup
	busyMu   sync.Mutex
	busy     map[string]bool

	mu sync.Mutex
	// maxSeries bounds the series written (the store's bound): past it,
	// series new to a round are not made, so that an estate larger than
	// the store does not evict, each round, series it writes again the
	// next. kept holds, by provider, the series written in its last round.
	maxSeries int
	kept      map[string]map[string]bool
	// last is each VM's previous cumulative CPU time (libvirt), by
	// provider and native id: the first reading of a VM only sets it.
	last map[string]cumulativeCPU
}

type cumulativeCPU struct {
	t   time.Time
	cpu float64
}

// leadProviderUsage samples every connected provider each usage interval
// while this server leads (ctx is the term), and syncs the history when
// the term ends.
func (s *Server) leadProviderUsage(ctx context.Context, _ store.Writer) {
	ps := s.provUsage
	if ps == nil {
		return
	}
	t := time.NewTicker(s.cfg.UsageInterval)
	defer t.Stop()
	synced := time.Now()
	for {
		ps.round(ctx, time.Now().UTC())
		if time.Since(synced) >= 5*time.Minute {
			if err := ps.store.Sync(); err != nil {
				s.log.Warn("syncing the providers' usage history", "err", err)
			}
			synced = time.Now()
		}
		select {
		case <-ctx.Done():
			ps.readings.Wait()
			_ = ps.store.Sync()
			ps.mu.Lock()
			ps.last = map[string]cumulativeCPU{} // the next term starts its counts again
			ps.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

// round starts a reading of each connected provider that can tell its
// usage and is not still answering the last one, all at once.
func (ps *providerSampler) round(ctx context.Context, now time.Time) {
	connected := ps.s.ctl.Estate.Connected()
	ps.mu.Lock()
	for name := range ps.kept {
		if connected[name] == nil {
			delete(ps.kept, name) // its series no longer count against the bound
		}
	}
	ps.mu.Unlock()
	for name, p := range connected {
		r, ok := p.(provider.UsageReader)
		if !ok {
			continue
		}
		ps.busyMu.Lock()
		if ps.busy[name] {
			ps.busyMu.Unlock()
			ps.s.log.Warn("a provider's last usage reading is still under way: this round skips it", "provider", name)
			continue
		}
		ps.busy[name] = true
		ps.busyMu.Unlock()
		ps.readings.Add(1)
		go func() {
			defer ps.readings.Done()
			defer func() {
				ps.busyMu.Lock()
				delete(ps.busy, name)
				ps.busyMu.Unlock()
			}()
			rctx, cancel := context.WithTimeout(ctx, providerUsageTimeout)
			defer cancel()
			u, err := r.Usage(rctx)
			if err != nil {
				if ctx.Err() == nil {
					ps.s.log.Warn("reading a provider's usage", "provider", name, "err", err)
				}
				return
			}
			if err := ps.record(name, now, u); err != nil {
				ps.s.log.Warn("recording a provider's usage", "provider", name, "err", err)
			}
		}()
	}
}

// record writes one reading of provider name: each mirrored VM's point
// by its UID, and each mirrored host's by its name. A provider that reads
// no host usage gets its hosts' points as the sums of their VMs', in
// rounds where every running VM of the host added one.
func (ps *providerSampler) record(name string, t time.Time, u *provider.Usage) error {
	uids := map[string]string{} // native id -> UID
	for _, v := range ps.s.vms.Select(func(v *api.VM) bool { return v.Spec.Provider != nil && v.Spec.Provider.Name == name }) {
		uids[v.Spec.Provider.ID] = v.UID
	}
	hosts := map[string]string{} // native id -> host name
	for _, h := range ps.s.hosts.Select(func(h *api.Host) bool { return h.Provider != nil && h.Provider.Name == name }) {
		hosts[h.Provider.ID] = h.Name
	}
	return ps.recordAs(name, t, u, uids, hosts)
}

// recordAs is record with the provider's mirrored VMs' UIDs and hosts'
// names by native id.
func (ps *providerSampler) recordAs(name string, t time.Time, u *provider.Usage, uids, hosts map[string]string) (err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var points []seriesPoint
	add := func(kind, id string, cpu, mem float64) { points = append(points, seriesPoint{kind, id, cpu, mem}) }
	defer func() {
		if e := ps.write(name, t, points); err == nil {
			err = e
		}
	}()
	type sum struct {
		cpu, mem float64
		partial  bool
	}
	sums := map[string]*sum{}
	prefix := name + "/"
	seen := map[string]bool{}
	for _, v := range u.VMs {
		uid, ok := uids[v.ID]
		if !ok {
			continue // not mirrored (yet)
		}
		hs := sums[v.Host]
		if hs == nil {
			hs = &sum{}
			sums[v.Host] = hs
		}
		cpu := v.CPUCores
		if v.Cumulative {
			key := prefix + v.ID
			seen[key] = true
			prev, ok := ps.last[key]
			ps.last[key] = cumulativeCPU{t: t, cpu: v.CPUSeconds}
			dt := t.Sub(prev.t).Seconds()
			if !ok || dt <= 0 || v.CPUSeconds < prev.cpu {
				hs.partial = true // first reading, or restarted: a count starts
				continue
			}
			cpu = (v.CPUSeconds - prev.cpu) / dt
		}
		mem := float64(max(v.MemoryBytes, 0))
		hs.cpu += cpu
		hs.mem += mem
		add(usage.KindVM, uid, cpu, mem)
	}
	for key := range ps.last {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix && !seen[key] {
			delete(ps.last, key)
		}
	}
	if len(u.Hosts) > 0 {
		for _, h := range u.Hosts {
			if hn, ok := hosts[h.ID]; ok {
				add(usage.KindHost, hn, h.CPUCores, float64(max(h.MemoryBytes, 0)))
			}
		}
		return nil
	}
	for id, hs := range sums {
		if hn, ok := hosts[id]; ok && !hs.partial {
			add(usage.KindHost, hn, hs.cpu, hs.mem)
		}
	}
	return nil
}

// leadsProviderUsage tells whether this server keeps the providers'
// history now; when not, the error names the server that does.
func (s *Server) leadsProviderUsage(ctx context.Context, provider string) error {
	if s.provUsage == nil {
		return &api.Error{Code: api.CodeUnprocessable, Message: fmt.Sprintf("provider %q: this server samples no provider's usage (--usage-interval is negative)", provider)}
	}
	if _, ok := s.ctl.Term(); ok {
		return nil
	}
	term, ok, err := s.ctl.Leader(ctx)
	if err != nil {
		return &api.Error{Code: api.CodeUnavailable, Message: "the store cannot say who leads: " + err.Error()}
	}
	at := "no server leads now"
	if ok {
		at = fmt.Sprintf("ask %s (%s)", term.Name, term.URL)
	}
	return api.Conflict("provider %q: the usage of its vms and hosts is kept by the leading server, not this one: %s", provider, at)
}

// providerHistory reads one provider VM's (by UID) or host's series from
// the leader's provider history.
func (s *Server) providerHistory(ctx context.Context, provider, kind, id string, since, until time.Time, step time.Duration) ([]api.UsagePoint, int64, error) {
	if err := s.leadsProviderUsage(ctx, provider); err != nil {
		return nil, 0, err
	}
	pts, st, err := s.provUsage.store.Query(kind, id, since, until, step)
	if err != nil {
		return nil, 0, fmt.Errorf("reading the providers' usage history: %w", err)
	}
	out := make([]api.UsagePoint, len(pts))
	for i, p := range pts {
		out[i] = api.UsagePoint{Time: p.Time, CPU: p.CPU, CPUMax: p.CPUMax, MemoryBytes: int64(p.MemoryBytes), MemoryMaxBytes: int64(p.MemoryMax), Samples: p.Samples}
	}
	return out, int64(st / time.Second), nil
}

// providerPlanHistories adds to histories the hourly history of the
// provider VMs over a plan's window, when this server keeps it (it
// leads); else a warning says their history was not read.
func (s *Server) providerPlanHistories(ctx context.Context, histories map[string][]planner.Sample) []string {
	vms := s.vms.Select(func(v *api.VM) bool { return v.Spec.Deletion == nil && v.Spec.Provider != nil })
	if len(vms) == 0 || s.provUsage == nil {
		return nil
	}
	if err := s.leadsProviderUsage(ctx, vms[0].Spec.Provider.Name); err != nil {
		return []string{"the providers' vms are sized by their allocation: their usage history is on the leading server"}
	}
	now := time.Now().UTC().Truncate(planHistoryStep)
	for _, v := range vms {
		pts, _, err := s.provUsage.store.Query(usage.KindVM, v.UID, now.Add(-planHistoryWindow), now.Add(planHistoryStep), planHistoryStep)
		if err != nil || len(pts) == 0 {
			continue
		}
		h := make([]planner.Sample, len(pts))
		for i, p := range pts {
			h[i] = planner.Sample{Time: p.Time, CPU: p.CPU, MemoryMiB: p.MemoryBytes / (1 << 20)}
		}
		histories[v.UID] = h
	}
	return nil
}

// seriesPoint is one point of one series.
type seriesPoint struct {
	kind, id string
	cpu, mem float64
}

// write writes the points of one round of provider name: to the series
// it wrote in its last round, then, within the bound of series, to new
// ones. It returns the first error, or says how many were not written
// for the bound. Called with ps.mu held.
func (ps *providerSampler) write(name string, t time.Time, pts []seriesPoint) error {
	if ps.kept == nil {
		ps.kept = map[string]map[string]bool{}
	}
	prev, kept := ps.kept[name], make(map[string]bool, len(pts))
	used := 0 // series written in their last rounds by the others
	for p, k := range ps.kept {
		if p != name {
			used += len(k)
		}
	}
	for _, p := range pts {
		if prev[p.kind+"/"+p.id] {
			used++
		}
	}
	var firstErr error
	skipped := 0
	for _, p := range pts {
		key := p.kind + "/" + p.id
		if !prev[key] {
			if ps.maxSeries > 0 && used >= ps.maxSeries {
				skipped++
				continue
			}
			used++
		}
		kept[key] = true
		if err := ps.store.Add(p.kind, p.id, t, p.cpu, p.mem); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	ps.kept[name] = kept
	if firstErr == nil && skipped > 0 {
		firstErr = fmt.Errorf("%d vms and hosts not sampled: the providers' history keeps at most %d series", skipped, ps.maxSeries)
	}
	return firstErr
}
