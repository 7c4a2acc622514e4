package hypervisortest

import (
	"context"
	"math/rand/v2"
	"time"
)

// Latency is how long one kind of driver call takes: each call takes one
// of Samples, drawn at random, so that a simulated host shows the spread of
// a real one and not only its median. The zero Latency takes no time.
type Latency struct {
	Samples []time.Duration
}

// Fixed is a Latency that always takes d.
func Fixed(d time.Duration) Latency { return Latency{Samples: []time.Duration{d}} }

// Millis is a Latency drawn from samples given in milliseconds.
func Millis(ms ...float64) Latency {
	l := Latency{Samples: make([]time.Duration, len(ms))}
	for i, m := range ms {
		l.Samples[i] = time.Duration(m * float64(time.Millisecond))
	}
	return l
}

func (l Latency) draw(r *rand.Rand) time.Duration {
	switch len(l.Samples) {
	case 0:
		return 0
	case 1:
		return l.Samples[0]
	}
	return l.Samples[r.IntN(len(l.Samples))]
}

// Timings are the latencies of a Host's driver calls. A call waits first
// and takes effect after, as a real one does: a call whose context ends
// while it waits fails and changes nothing.
type Timings struct {
	Create       Latency
	Start        Latency
	StopGraceful Latency // Stop without Force: the guest shuts down on ACPI
	StopForced   Latency // Stop with Force, and Destroy of a running VM
	Destroy      Latency // removing a stopped VM's files
	Pause        Latency
	Resume       Latency
}

// Usage is what a running VM uses of its host, as Stats reports it: a boot
// that keeps a CPU busy, then an idle guest, and a process whose resident
// memory grows during the boot to a base plus a share of the guest's
// memory.
type Usage struct {
	// Boot is how long the guest's boot keeps the process busy, and
	// BootCPUSeconds the CPU time it takes in all.
	Boot           time.Duration
	BootCPUSeconds float64
	// IdleCPUs is the CPU an idle guest uses after its boot, in CPUs.
	IdleCPUs float64
	// BaseBytes is the process's resident memory as it starts, and
	// GuestShare the share of the guest's memory resident after the boot.
	BaseBytes  int64
	GuestShare float64
}

// QEMUTimings are the latencies of the QEMU driver measured on a 2-CPU
// machine without KVM (QEMU 7.2 under TCG), with the tiny test guest: 1
// vCPU, 256 MiB, an overlay of a qcow2 disk, one user-mode NIC (passt),
// confined as the agent runs it. Samples are from
// TestMeasureQEMUTimings (see docs/BENCHMARKS.md, "Simulated hosts"):
// Create makes the overlay and the VM's directory (two qemu-img runs),
// Start spawns passt and QEMU and waits for QMP, a graceful Stop is the
// guest's ACPI shutdown, a forced one a kill.
func QEMUTimings() Timings {
	return Timings{
		Create:       Millis(70.0, 73.2, 73.6, 79.1, 88.8, 132.4, 141.4, 192.1),
		Start:        Millis(258.3, 373.7, 434.5, 505.1, 811.7, 872.4, 903.4, 953.0),
		StopGraceful: Millis(61.6, 80.4, 139.5, 188.6, 209.8, 248.4, 302.4),
		StopForced:   Millis(26.9, 38.5, 45.4, 48.4, 60.9, 62.4, 84.3, 182.5),
		Destroy:      Millis(1.0, 1.1, 1.4, 1.5, 1.6, 2.8, 6.0, 8.8),
		Pause:        Millis(1, 2),
		Resume:       Millis(1, 2),
	}
}

// QEMUUsage is what the tiny test guest's QEMU used under TCG in the same
// measurement: about 3 s of one CPU for the boot, 0.05 CPUs idle after
// (the guest prints a tick every 0.2 s), 62 MiB resident at start and
// 233 MiB of its 256 MiB guest after the boot.
func QEMUUsage() Usage {
	return Usage{
		Boot:           4 * time.Second,
		BootCPUSeconds: 3.0,
		IdleCPUs:       0.05,
		BaseBytes:      62 << 20,
		GuestShare:     (233.0 - 62.0) / 256.0,
	}
}

// Clock is the time a Host's latencies and usage follow. Tests may give
// their own, to see what a Host waits without waiting.
type Clock interface {
	Now() time.Time
	// Sleep waits d, or until ctx ends (then it returns ctx's error).
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HostOptions configure a fake machine made by NewHostWith.
type HostOptions struct {
	Timings Timings
	Usage   Usage
	// Clock defaults to the real time.
	Clock Clock
	// Seed makes the draws of latencies repeatable; 0 seeds at random.
	Seed uint64
	// NoCallLog keeps no record of the calls made (Driver.Calls), for
	// hosts that live long and see many VMs.
	NoCallLog bool
}

// wait takes the latency l of a call, drawn on the host.
func (h *Host) wait(ctx context.Context, l Latency) error {
	if len(l.Samples) == 0 {
		return ctx.Err()
	}
	h.mu.Lock()
	d := l.draw(h.rng)
	h.mu.Unlock()
	return h.clock.Sleep(ctx, d)
}

// usage computes Stats for a process running since start for a guest of
// memMiB.
func (u Usage) at(running time.Duration, memMiB int64) (cpu float64, rss int64) {
	running = max(running, 0)
	guest := u.GuestShare * float64(memMiB<<20)
	if u.Boot <= 0 || running >= u.Boot {
		cpu = u.BootCPUSeconds + (running-max(u.Boot, 0)).Seconds()*u.IdleCPUs
		return cpu, u.BaseBytes + int64(guest)
	}
	f := float64(running) / float64(u.Boot)
	return u.BootCPUSeconds * f, u.BaseBytes + int64(guest*f)
}
