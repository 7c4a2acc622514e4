package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/balance"
	"github.com/polyvisor/polyvisor/internal/planner"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// Bounds of a usage query.
const (
	defaultUsageRange = 24 * time.Hour
	maxUsageRange     = 400 * 24 * time.Hour
	maxUsagePoints    = 10000
	// maxUsageAnswer bounds what is read of an agent's answer.
	maxUsageAnswer = 64 << 20
	// usageFanOut is how many hosts a plan asks for history at once.
	usageFanOut = 32
	// planHistoryWindow and planHistoryStep are the history a plan of the
	// live estate sizes VMs from and fits the forecast's trend to.
	planHistoryWindow = 14 * 24 * time.Hour
	planHistoryStep   = time.Hour
)

func (s *Server) usageRoutes() []route {
	return []route{
		// A VM's history is its project's to read, as its live stats are.
		{method: "GET", path: "/v1/vms/{name}/usage", rule: auth.In(auth.PermVMRead), handler: s.vmUsage},
		// A host's history sums every project's VMs on it: the
		// installation's.
		{method: "GET", path: "/v1/hosts/{name}/usage", rule: auth.Superadmin, handler: s.hostUsage},
	}
}

// usageRange reads since, until and step from a request's query: since is
// a time (RFC 3339) or a duration back from until (24h, 7d); until a time,
// by default now; step a duration, by default the finest kept.
func usageRange(r *http.Request, now time.Time) (since, until time.Time, step time.Duration, err error) {
	q := r.URL.Query()
	until = now
	if v := q.Get("until"); v != "" {
		if until, err = time.Parse(time.RFC3339, v); err != nil {
			return since, until, 0, api.Invalid("until", "a time in RFC 3339 (2026-12-01T00:00:00Z), not %q", v)
		}
	}
	since = until.Add(-defaultUsageRange)
	if v := q.Get("since"); v != "" {
		if d, derr := parseSpan(v); derr == nil {
			since = until.Add(-d)
		} else if since, err = time.Parse(time.RFC3339, v); err != nil {
			return since, until, 0, api.Invalid("since", "a time in RFC 3339 or a duration back from until (24h, 7d), not %q", v)
		}
	}
	if !since.Before(until) || until.Sub(since) > maxUsageRange {
		return since, until, 0, api.Invalid("since", "must be before until and at most %d days before it", int(maxUsageRange.Hours()/24))
	}
	if v := q.Get("step"); v != "" {
		if step, err = parseSpan(v); err != nil || step < time.Minute {
			return since, until, 0, api.Invalid("step", "a duration of at least 1m (5m, 1h, 1d), not %q", v)
		}
	}
	span := until.Sub(since)
	if step > 0 && span/step > maxUsagePoints || step == 0 && span > 28*24*time.Hour && span/time.Hour > maxUsagePoints {
		return since, until, 0, api.Invalid("step", "more than %d points: ask for a step of at least %s", maxUsagePoints, (span/maxUsagePoints).Round(time.Minute)+time.Minute)
	}
	return since, until, step, nil
}

// parseSpan reads a positive Go duration, or a whole number of days ("7d").
func parseSpan(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 100000 {
			return 0, fmt.Errorf("not a number of days: %q", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		err = errors.New("not positive")
	}
	return d, err
}

func (s *Server) vmUsage(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	since, until, step, err := usageRange(r, time.Now().UTC())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.UsageHistory{Kind: usage.KindVM, Name: vm.Name, Since: since, Until: until, CPUs: vm.Spec.VCPUs, MemoryMiB: vm.Spec.MemoryMiB, Points: []api.UsagePoint{}}
	if vm.Spec.Provider != nil {
		// Sampled by the leading server (usage_providers.go).
		pts, st, err := s.providerHistory(r.Context(), vm.Spec.Provider.Name, usage.KindVM, vm.UID, since, until, step)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out.Points, out.StepSeconds = pts, st
		writeJSON(w, http.StatusOK, out)
		return
	}
	if vm.Spec.Host == "" {
		// Never placed: no host has sampled it.
		writeJSON(w, http.StatusOK, out)
		return
	}
	ans, err := s.askUsage(r.Context(), vm.Spec.Host, api.UsageQuery{Kind: usage.KindVM, UIDs: []string{vm.UID}, Since: since, Until: until, StepSeconds: int64(step / time.Second)}, vm.Key())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out.StepSeconds = ans.StepSeconds
	if pts := ans.Series[vm.UID]; pts != nil {
		out.Points = pts
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) hostUsage(w http.ResponseWriter, r *http.Request) {
	h, ok := s.hosts.Get(r.PathValue("name"))
	if !ok {
		s.writeError(w, r, api.NotFound("host", r.PathValue("name")))
		return
	}
	since, until, step, err := usageRange(r, time.Now().UTC())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if h.Provider != nil {
		pts, st, err := s.providerHistory(r.Context(), h.Provider.Name, usage.KindHost, h.Name, since, until, step)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, api.UsageHistory{Kind: usage.KindHost, Name: h.Name, Since: since, Until: until, StepSeconds: st,
			CPUs: h.Status.CPUs, MemoryMiB: h.Status.MemoryMiB, Points: pts})
		return
	}
	ans, err := s.askUsage(r.Context(), h.Name, api.UsageQuery{Kind: usage.KindHost, Since: since, Until: until, StepSeconds: int64(step / time.Second)}, "")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.UsageHistory{Kind: usage.KindHost, Name: h.Name, Since: since, Until: until, StepSeconds: ans.StepSeconds,
		CPUs: h.Status.CPUs, MemoryMiB: h.Status.MemoryMiB, Points: []api.UsagePoint{}}
	if pts := ans.Series[h.Name]; pts != nil {
		out.Points = pts
	}
	writeJSON(w, http.StatusOK, out)
}

// askUsage asks a host's agent for history, through a stream it dials
// back as for a console.
func (s *Server) askUsage(ctx context.Context, host string, q api.UsageQuery, vm string) (api.UsageAnswer, error) {
	var ans api.UsageAnswer
	conn, release, err := s.streams.open(ctx, host, api.StreamRequest{VM: vm, Console: "usage", Usage: &q}, s.forwardStream)
	if err != nil {
		return ans, err
	}
	defer release()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewDecoder(io.LimitReader(conn, maxUsageAnswer)).Decode(&ans); err != nil {
		return ans, &api.Error{Code: api.CodeUnavailable, Message: "reading the usage history from host " + strconv.Quote(host) + " failed"}
	}
	if ans.Error != "" {
		return ans, &api.Error{Code: api.CodeUnavailable, Message: "host " + strconv.Quote(host) + ": " + ans.Error}
	}
	return ans, nil
}

// UsageDemand reads demand from the hosts' histories: for a balancer or
// anything else that weighs what VMs and hosts use.
func (s *Server) UsageDemand() usage.DemandReader { return demandReader{s} }

type demandReader struct{ s *Server }

var _ usage.DemandReader = demandReader{}

// VMDemand is the mean of a VM's history over the window, vm its key
// (project/name).
func (d demandReader) VMDemand(ctx context.Context, vm string, window time.Duration) (usage.Demand, error) {
	v, ok := d.s.vms.Get(vm)
	if !ok {
		return usage.Demand{}, api.NotFound("vm", vm)
	}
	now := time.Now().UTC()
	if v.Spec.Provider != nil {
		pts, _, err := d.s.providerHistory(ctx, v.Spec.Provider.Name, usage.KindVM, v.UID, now.Add(-window), now, 0)
		if err != nil {
			return usage.Demand{}, err
		}
		return usage.Mean(fromAPI(pts)), nil
	}
	if v.Spec.Host == "" {
		return usage.Demand{}, nil
	}
	ans, err := d.s.askUsage(ctx, v.Spec.Host, api.UsageQuery{Kind: usage.KindVM, UIDs: []string{v.UID}, Since: now.Add(-window), Until: now}, v.Key())
	if err != nil {
		return usage.Demand{}, err
	}
	return usage.Mean(fromAPI(ans.Series[v.UID])), nil
}

// hostVMsHistory reads the means of the history of VMs placed on one of
// Polyvisor's hosts over the window, in one request to its agent: the
// balancer's demand for a host's VMs.
func (s *Server) hostVMsHistory(ctx context.Context, host string, vms []*api.VM, window time.Duration) (map[string]balance.HistoryMean, error) {
	now := time.Now().UTC()
	q := api.UsageQuery{Kind: usage.KindVM, Since: now.Add(-window), Until: now}
	for _, v := range vms {
		q.UIDs = append(q.UIDs, v.UID)
	}
	ans, err := s.askUsage(ctx, host, q, "")
	if err != nil {
		return nil, err
	}
	out := make(map[string]balance.HistoryMean, len(vms))
	for _, v := range vms {
		d := usage.Mean(fromAPI(ans.Series[v.UID]))
		out[v.Key()] = balance.HistoryMean{CPU: d.CPU, MemoryBytes: d.MemoryBytes, Points: d.Points}
	}
	return out, nil
}

// HostDemand is the mean of the sum of a host's VMs over the window.
func (d demandReader) HostDemand(ctx context.Context, host string, window time.Duration) (usage.Demand, error) {
	h, ok := d.s.hosts.Get(host)
	if !ok {
		return usage.Demand{}, api.NotFound("host", host)
	}
	now := time.Now().UTC()
	if h.Provider != nil {
		pts, _, err := d.s.providerHistory(ctx, h.Provider.Name, usage.KindHost, h.Name, now.Add(-window), now, 0)
		if err != nil {
			return usage.Demand{}, err
		}
		return usage.Mean(fromAPI(pts)), nil
	}
	ans, err := d.s.askUsage(ctx, host, api.UsageQuery{Kind: usage.KindHost, Since: now.Add(-window), Until: now}, "")
	if err != nil {
		return usage.Demand{}, err
	}
	return usage.Mean(fromAPI(ans.Series[host])), nil
}

func fromAPI(pts []api.UsagePoint) []usage.Point {
	out := make([]usage.Point, len(pts))
	for i, p := range pts {
		out[i] = usage.Point{Time: p.Time, CPU: p.CPU, CPUMax: p.CPUMax, MemoryBytes: float64(p.MemoryBytes), MemoryMax: float64(p.MemoryMaxBytes), Samples: p.Samples}
	}
	return out
}

// planHistories gathers, from every ready host's agent at once (a few at
// a time), the hourly history of the VMs on it over the plan's window, by
// VM UID. A host that does not answer is named in the warnings; its VMs
// are sized by their allocation.
func (s *Server) planHistories(ctx context.Context, vmsByHost map[string][]string) (map[string][]planner.Sample, []string) {
	now := time.Now().UTC().Truncate(planHistoryStep)
	out := map[string][]planner.Sample{}
	var warnings []string
	var mu sync.Mutex
	sem := make(chan struct{}, usageFanOut)
	var wg sync.WaitGroup
	for host, uids := range vmsByHost {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			ans, err := s.askUsage(hctx, host, api.UsageQuery{Kind: usage.KindVM, UIDs: uids, Since: now.Add(-planHistoryWindow), Until: now.Add(planHistoryStep), StepSeconds: int64(planHistoryStep / time.Second)}, "")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("host %s: no usage history (%v): its vms are sized by their allocation", host, err))
				return
			}
			for uid, pts := range ans.Series {
				if len(pts) == 0 {
					continue
				}
				h := make([]planner.Sample, len(pts))
				for i, p := range pts {
					h[i] = planner.Sample{Time: p.Time, CPU: p.CPU, MemoryMiB: float64(p.MemoryBytes) / (1 << 20)}
				}
				out[uid] = h
			}
		}()
	}
	wg.Wait()
	return out, warnings
}
