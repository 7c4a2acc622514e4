package v2vrun

import (
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// runState is a run's view of its VMs, shared by their goroutines and
// written to the record every ReportEvery.
type runState struct {
	mu    sync.Mutex
	vms   []api.VMMigrationVMStatus
	mades []made
}

// made is what a run made for one VM, to remove on a cancel.
type made struct {
	vm     bool
	images []string
}

// newRunState starts from the record's VMs: those a run before a
// restart finished stay finished.
func newRunState(m *api.VMMigration) *runState {
	return &runState{vms: append([]api.VMMigrationVMStatus(nil), m.Status.VMs...), mades: make([]made, len(m.Status.VMs))}
}

// plan sets the VMs' plans, keeping what the record says of their
// progress.
func (s *runState) plan(plans []planned) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.VMMigrationVMStatus, len(plans))
	for i, pl := range plans {
		if i < len(s.vms) {
			out[i] = s.vms[i]
		}
		out[i].Name, out[i].SourceID, out[i].SourceName, out[i].Plan = pl.plan.Name, pl.src.ID, pl.src.HW.Name, apiPlan(pl)
		if out[i].State == "" || out[i].State == api.VMMigrationRunning {
			out[i].State = api.VMMigrationPending
		}
	}
	s.vms = out
	s.mades = make([]made, len(plans))
}

func (s *runState) set(i int, change func(*api.VMMigrationVMStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.vms[i])
}

func (s *runState) phase(i int, phase, disk string) {
	s.set(i, func(v *api.VMMigrationVMStatus) {
		v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes = phase, disk, 0, 0, 0, 0, 0
	})
}

func (s *runState) note(i int, note string) {
	s.set(i, func(v *api.VMMigrationVMStatus) {
		for _, n := range v.Notes {
			if n == note {
				return
			}
		}
		v.Notes = append(v.Notes, note)
	})
}

func (s *runState) vm(i int) api.VMMigrationVMStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.vms) {
		return api.VMMigrationVMStatus{}
	}
	return s.vms[i]
}

func (s *runState) made(i int, change func(*made)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.mades[i])
}

func (s *runState) madeOf(i int) made {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.mades) {
		return made{}
	}
	md := s.mades[i]
	md.images = append([]string(nil), md.images...)
	return md
}

// cancelUnfinished marks every VM not finished cancelled.
func (s *runState) cancelUnfinished() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.vms {
		if !final(s.vms[i].State) {
			s.vms[i].State = api.VMMigrationCancelled
		}
	}
}

func (s *runState) snapshot() []api.VMMigrationVMStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]api.VMMigrationVMStatus(nil), s.vms...)
}

// status is the record's status with the run's VMs and state.
func (s *runState) status(state, server string, prev api.VMMigrationStatus) api.VMMigrationStatus {
	prev.State, prev.Server, prev.VMs = state, server, s.snapshot()
	prev.ReportedAt = timeNow()
	return prev
}

var timeNow = func() time.Time { return time.Now().UTC() }
