package v2v

import (
	"time"
)

// Phases of a disk's copy.
const (
	PhaseStream  = "stream"  // reading a streamed disk into the job directory
	PhaseDigest  = "digest"  // reading an OVA's disk in place against its manifest's digest
	PhaseConvert = "convert" // qemu-img convert into qcow2, zeros skipped
	PhaseVerify  = "verify"  // reading both back: qemu-img compare
	PhaseAdapt   = "adapt"   // virt-v2v-in-place
	PhaseDone    = "done"
)

// Progress is how one disk's copy goes.
type Progress struct {
	VM    string `json:"vm"`
	Disk  string `json:"disk"`
	Phase string `json:"phase"`
	// Done and Total are the phase's bytes.
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Rate is the phase's bytes a second since it started (or resumed);
	// ETA the time left at that rate.
	Rate float64       `json:"rate"`
	ETA  time.Duration `json:"eta"`
	// Resumed is the offset a resumed phase started from.
	Resumed int64 `json:"resumed,omitempty"`
}

// meter turns a phase's bytes into Progress with a rate and an ETA.
type meter struct {
	p     Progress
	start time.Time
	from  int64
	fn    func(Progress)
	last  time.Time
	now   func() time.Time
}

func newMeter(fn func(Progress), vm, disk, phase string, from, total int64) *meter {
	m := &meter{fn: fn, now: time.Now, from: from}
	m.start = m.now()
	m.p = Progress{VM: vm, Disk: disk, Phase: phase, Done: from, Total: total, Resumed: from}
	return m
}

// set reports done bytes, at most every 200 ms unless final.
func (m *meter) set(done int64, final bool) {
	if m.fn == nil {
		return
	}
	now := m.now()
	if !final && now.Sub(m.last) < 200*time.Millisecond {
		return
	}
	m.last = now
	m.p.Done = done
	m.p.Rate, m.p.ETA = rateETA(done-m.from, m.p.Total-done, now.Sub(m.start))
	m.fn(m.p)
}

// rateETA is the rate of moved bytes over elapsed and the time left for
// left bytes at it.
func rateETA(moved, left int64, elapsed time.Duration) (float64, time.Duration) {
	if elapsed <= 0 || moved <= 0 {
		return 0, 0
	}
	rate := float64(moved) / elapsed.Seconds()
	return rate, time.Duration(float64(max(left, 0)) / rate * float64(time.Second))
}
