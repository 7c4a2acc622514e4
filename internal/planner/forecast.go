package planner

import (
	"math"
	"slices"
	"time"
)

// forecastBucket aligns samples taken at slightly different times.
const forecastBucket = 5 * time.Minute

// Forecast fits, per cluster, a line through the total demand of the VMs
// on its hosts (each VM's latest sample carried forward; VMs without
// history at their allocation) and says when it crosses the cluster's
// capacity at the target utilization (default 1: all of it).
func Forecast(snap Snapshot, opts Options) ([]ClusterForecast, error) {
	opts, err := withDefaults(opts, 1)
	if err != nil {
		return nil, err
	}
	if err := snap.validate(); err != nil {
		return nil, err
	}
	type cluster struct {
		hosts              int
		capCPU, capMem     float64
		vms                []*VM
		fixedCPU, fixedMem float64
	}
	clusters := map[string]*cluster{}
	hostOf := map[string]*Host{}
	for i := range snap.Hosts {
		h := &snap.Hosts[i]
		hostOf[h.Name] = h
		c := clusters[h.Cluster]
		if c == nil {
			c = &cluster{}
			clusters[h.Cluster] = c
		}
		if h.Cordoned {
			continue
		}
		c.hosts++
		c.capCPU += h.CPUs * opts.TargetUtilization
		c.capMem += h.MemoryMiB * opts.TargetUtilization
	}
	for i := range snap.VMs {
		v := &snap.VMs[i]
		h := hostOf[v.Host]
		if h == nil {
			continue
		}
		c := clusters[h.Cluster]
		c.vms = append(c.vms, v)
		if len(v.History) == 0 {
			cpu, mem := sizeOf(v, opts.Percentile).on(ratio(h.CPUOvercommit), ratio(h.MemoryOvercommit))
			c.fixedCPU += cpu
			c.fixedMem += mem
		}
	}
	var out []ClusterForecast
	for _, name := range sortedKeys(clusters) {
		c := clusters[name]
		times, cpu, mem := aggregate(c.vms)
		f := ClusterForecast{Cluster: name, Hosts: c.hosts, VMs: len(c.vms)}
		f.CPU = fitTrend(times, cpu, c.fixedCPU, c.capCPU)
		f.Memory = fitTrend(times, mem, c.fixedMem, c.capMem)
		for _, r := range []struct {
			name string
			t    Trend
		}{{"cpu", f.CPU}, {"memory", f.Memory}} {
			if r.t.RunsOutAt != nil && (f.RunsOutAt == nil || r.t.RunsOutAt.Before(*f.RunsOutAt)) {
				f.RunsOut, f.RunsOutAt = r.name, r.t.RunsOutAt
			}
		}
		out = append(out, f)
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// aggregate sums the VMs' histories at every time point any of them has,
// each VM counting from its first sample at its latest value.
func aggregate(vms []*VM) ([]time.Time, []float64, []float64) {
	seen := map[int64]bool{}
	var buckets []int64
	type series struct {
		t        []int64
		cpu, mem []float64
	}
	all := make([]series, 0, len(vms))
	for _, v := range vms {
		if len(v.History) == 0 {
			continue
		}
		h := slices.Clone(v.History)
		slices.SortStableFunc(h, func(a, b Sample) int { return a.Time.Compare(b.Time) })
		var s series
		for _, smp := range h {
			b := smp.Time.Truncate(forecastBucket).Unix()
			if n := len(s.t); n > 0 && s.t[n-1] == b {
				s.cpu[n-1], s.mem[n-1] = smp.CPU, smp.MemoryMiB // latest in the bucket
				continue
			}
			s.t = append(s.t, b)
			s.cpu = append(s.cpu, smp.CPU)
			s.mem = append(s.mem, smp.MemoryMiB)
			if !seen[b] {
				seen[b] = true
				buckets = append(buckets, b)
			}
		}
		all = append(all, s)
	}
	slices.Sort(buckets)
	cpu := make([]float64, len(buckets))
	mem := make([]float64, len(buckets))
	for _, s := range all {
		k := 0
		for bi, b := range buckets {
			for k+1 < len(s.t) && s.t[k+1] <= b {
				k++
			}
			if s.t[k] > b {
				continue
			}
			cpu[bi] += s.cpu[k]
			mem[bi] += s.mem[k]
		}
	}
	times := make([]time.Time, len(buckets))
	for i, b := range buckets {
		times[i] = time.Unix(b, 0).UTC()
	}
	return times, cpu, mem
}

// fitTrend fits total = a + b·days by least squares, with fixed added to
// every point, and finds where it reaches capacity.
func fitTrend(times []time.Time, values []float64, fixed, capacity float64) Trend {
	tr := Trend{Capacity: round(capacity), Points: len(times)}
	if len(times) == 0 {
		tr.Now = round(fixed)
		tr.Note = "no history"
		if fixed > capacity+slack {
			tr.Note = "already over capacity"
		}
		return tr
	}
	t0 := times[0]
	n := float64(len(times))
	var sx, sy, sxx, sxy float64
	for i, t := range times {
		x := t.Sub(t0).Hours() / 24
		y := values[i] + fixed
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	var a, b float64
	if d := n*sxx - sx*sx; len(times) > 1 && d > 0 {
		b = (n*sxy - sx*sy) / d
		a = (sy - b*sx) / n
	} else {
		a = sy / n
	}
	last := times[len(times)-1]
	xLast := last.Sub(t0).Hours() / 24
	now := a + b*xLast
	tr.Now, tr.PerDay = round(now), round(b)
	switch {
	case now >= capacity-slack:
		tr.Note = "already over capacity"
		at := last
		tr.RunsOutAt = &at
		zero := 0.0
		tr.DaysLeft = &zero
	case b <= 0 || len(times) < 2:
		tr.Note = "not growing"
	default:
		days := (capacity - now) / b
		if days > 365*100 {
			tr.Note = "not within a century"
			return tr
		}
		at := last.Add(time.Duration(days * 24 * float64(time.Hour))).Truncate(time.Minute)
		tr.RunsOutAt = &at
		d := math.Round(days*10) / 10
		tr.DaysLeft = &d
	}
	return tr
}
