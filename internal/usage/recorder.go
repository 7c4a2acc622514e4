package usage

import (
	"context"
	"sync"
	"time"
)

// Recorder turns the cumulative CPU time a driver reports into cores busy
// between two samples, and adds each VM's and its host's points to a
// Store. A host's point is the sum of its VMs' in one round.
type Recorder struct {
	store *Store
	host  string

	mu   sync.Mutex
	last map[string]cumulative // by VM UID
}

type cumulative struct {
	t   time.Time
	cpu float64
}

// VMSample is what a driver reports of one running VM.
type VMSample struct {
	UID         string
	CPUSeconds  float64 // cumulative
	MemoryBytes int64
}

// NewRecorder records host's VMs into store.
func NewRecorder(store *Store, host string) *Recorder {
	return &Recorder{store: store, host: host, last: map[string]cumulative{}}
}

// Store is where the recorder writes.
func (r *Recorder) Store() *Store { return r.store }

// Round records one round of samples taken at t: each VM's CPU over the
// time since its previous sample (a VM seen for the first time, or whose
// CPU time went back because it restarted, starts its count and adds no
// point yet) and memory, and the host's sum. A round in which a VM adds
// no point adds none to the host either: its sum would be short of that
// VM (after every agent start, the first round's). VMs not in the round
// are forgotten.
func (r *Recorder) Round(ctx context.Context, t time.Time, samples []VMSample) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var hostCPU, hostMem float64
	seen := make(map[string]bool, len(samples))
	var firstErr error
	partial := false
	for _, s := range samples {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		seen[s.UID] = true
		prev, ok := r.last[s.UID]
		r.last[s.UID] = cumulative{t: t, cpu: s.CPUSeconds}
		dt := t.Sub(prev.t).Seconds()
		if !ok || dt <= 0 || s.CPUSeconds < prev.cpu {
			partial = true
			continue
		}
		cpu := (s.CPUSeconds - prev.cpu) / dt
		mem := float64(max(s.MemoryBytes, 0))
		hostCPU += cpu
		hostMem += mem
		if err := r.store.Add(KindVM, s.UID, t, cpu, mem); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for uid := range r.last {
		if !seen[uid] {
			delete(r.last, uid)
		}
	}
	if partial {
		return firstErr
	}
	if err := r.store.Add(KindHost, r.host, t, hostCPU, hostMem); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}
