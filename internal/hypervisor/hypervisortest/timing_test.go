package hypervisortest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// stepClock is a Clock that records what it is asked to wait and moves its
// time on by that much at once; with hold set, it waits for its context
// instead.
type stepClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
	hold  bool
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.slept = append(c.slept, d)
	hold := c.hold
	if !hold {
		c.now = c.now.Add(d)
	}
	c.mu.Unlock()
	if hold {
		<-ctx.Done()
	}
	return ctx.Err()
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// take returns and forgets what was waited so far.
func (c *stepClock) take() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

func cfgOf(uid string, memMiB int64) hypervisor.VMConfig {
	return hypervisor.VMConfig{Name: "vm-" + uid, UID: uid, VCPUs: 1, MemoryMiB: memMiB}
}

// Every call waits a latency of its own kind, drawn among its samples; a
// forced stop and the destruction of a running VM wait the forced stop's.
func TestTimingsEachCallWaitsItsLatency(t *testing.T) {
	clock := &stepClock{now: time.Unix(1000, 0)}
	h := NewHostWith(HostOptions{Clock: clock, Seed: 7, Timings: Timings{
		Create: Millis(10, 20, 30), Start: Fixed(500 * time.Millisecond),
		StopGraceful: Fixed(200 * time.Millisecond), StopForced: Fixed(40 * time.Millisecond),
		Destroy: Fixed(3 * time.Millisecond), Pause: Fixed(5 * time.Millisecond), Resume: Fixed(6 * time.Millisecond),
	}})
	d := h.NewDriver()
	ctx := context.Background()
	seen := map[time.Duration]int{}
	var handles []*hypervisor.Handle
	for i := range 60 {
		hd, err := d.Create(ctx, cfgOf(string(rune('a'+i%26))+string(rune('a'+i/26)), 64))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, hd)
		for _, s := range clock.take() {
			seen[s]++
		}
	}
	if len(seen) != 3 || seen[10*time.Millisecond] == 0 || seen[20*time.Millisecond] == 0 || seen[30*time.Millisecond] == 0 {
		t.Errorf("60 creates waited %v; want each of 10, 20 and 30 ms, nothing else", seen)
	}

	hd := handles[0]
	steps := []struct {
		name string
		call func() error
		want time.Duration
	}{
		{"start", func() error { return d.Start(ctx, hd, cfgOf(hd.UID, 64)) }, 500 * time.Millisecond},
		{"pause", func() error { return d.Pause(ctx, hd) }, 5 * time.Millisecond},
		{"resume", func() error { return d.Resume(ctx, hd) }, 6 * time.Millisecond},
		{"graceful stop", func() error { return d.Stop(ctx, hd, hypervisor.StopOptions{Timeout: time.Minute}) }, 200 * time.Millisecond},
		{"start again", func() error { return d.Start(ctx, hd, cfgOf(hd.UID, 64)) }, 500 * time.Millisecond},
		{"forced stop", func() error { return d.Stop(ctx, hd, hypervisor.StopOptions{Force: true}) }, 40 * time.Millisecond},
		{"destroy stopped", func() error { return d.Destroy(ctx, hd, false) }, 3 * time.Millisecond},
		{"start another", func() error { return d.Start(ctx, handles[1], cfgOf(handles[1].UID, 64)) }, 500 * time.Millisecond},
		{"destroy running", func() error { return d.Destroy(ctx, handles[1], false) }, 40 * time.Millisecond},
	}
	for _, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := clock.take(); !slices.Equal(got, []time.Duration{s.want}) {
			t.Errorf("%s waited %v, want [%v]", s.name, got, s.want)
		}
	}
}

// Zero timings wait nothing: NewHost is the instant machine the agent's
// tests expect.
func TestZeroTimingsWaitNothing(t *testing.T) {
	clock := &stepClock{hold: true} // would block any wait for good
	h := NewHostWith(HostOptions{Clock: clock})
	d := h.NewDriver()
	ctx := context.Background()
	hd, err := d.Create(ctx, cfgOf("u1", 64))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, hd, cfgOf("u1", 64)); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx, hd, hypervisor.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := clock.take(); len(got) != 0 {
		t.Errorf("a host without timings waited %v", got)
	}
}

// A call whose context ends while it waits fails and changes nothing, as
// a real call that is abandoned rolls back.
func TestTimingsCancelledCallChangesNothing(t *testing.T) {
	clock := &stepClock{}
	lat := Fixed(time.Second)
	h := NewHostWith(HostOptions{Clock: clock, Timings: Timings{Create: lat, Start: lat, StopGraceful: lat, StopForced: lat, Destroy: lat}})
	d := h.NewDriver()
	ctx := context.Background()
	running, err := d.Create(ctx, cfgOf("run", 64))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, running, cfgOf("run", 64)); err != nil {
		t.Fatal(err)
	}
	stopped, err := d.Create(ctx, cfgOf("off", 64))
	if err != nil {
		t.Fatal(err)
	}

	clock.mu.Lock()
	clock.hold = true
	clock.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := d.Create(cctx, cfgOf("new", 64)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("create cancelled while waiting: %v, want the deadline", err)
	}
	if _, ok := h.VM("new"); ok {
		t.Error("a cancelled create left a vm")
	}
	if err := d.Start(cctx, stopped, cfgOf("off", 64)); err == nil {
		t.Error("a cancelled start succeeded")
	}
	if err := d.Stop(cctx, running, hypervisor.StopOptions{Force: true}); err == nil {
		t.Error("a cancelled stop succeeded")
	}
	if err := d.Destroy(cctx, running, false); err == nil {
		t.Error("a cancelled destroy succeeded")
	}
	if v, _ := h.VM("off"); v.State != hypervisor.StateStopped || v.PID != 0 {
		t.Errorf("vm after a cancelled start: %+v", v)
	}
	if v, ok := h.VM("run"); !ok || v.State != hypervisor.StateRunning || v.PID != running.PID {
		t.Errorf("vm after a cancelled stop and destroy: %+v (exists %v), want running as pid %d", v, ok, running.PID)
	}
}

// Stats follow the host's Usage: the boot's CPU and memory grow with the
// time since the start, then the idle guest's CPU accrues; the guest's
// share counts its own memory size.
func TestStatsFollowUsage(t *testing.T) {
	clock := &stepClock{now: time.Unix(1000, 0)}
	u := Usage{Boot: 4 * time.Second, BootCPUSeconds: 3, IdleCPUs: 0.05, BaseBytes: 60 << 20, GuestShare: 0.5}
	h := NewHostWith(HostOptions{Clock: clock, Usage: u})
	d := h.NewDriver()
	ctx := context.Background()
	hd, err := d.Create(ctx, cfgOf("u1", 1024))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stats(ctx, hd); !errors.Is(err, hypervisor.ErrNotRunning) {
		t.Errorf("stats of a stopped vm: %v, want not running", err)
	}
	if err := d.Start(ctx, hd, cfgOf("u1", 1024)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		after time.Duration
		cpu   float64
		rss   int64
	}{
		{0, 0, 60 << 20},
		{2 * time.Second, 1.5, 60<<20 + 256<<20},
		{2 * time.Second, 3, 60<<20 + 512<<20},
		{10 * time.Second, 3.5, 60<<20 + 512<<20},
	} {
		clock.advance(c.after)
		st, err := d.Stats(ctx, hd)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.CPUSeconds - c.cpu; d > 1e-9 || d < -1e-9 || st.MemoryBytes != c.rss {
			t.Errorf("+%v: stats %+v, want %.2f CPU-seconds and %d bytes", c.after, st, c.cpu, c.rss)
		}
	}
	if err := d.Stop(ctx, hd, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stats(ctx, hd); !errors.Is(err, hypervisor.ErrNotRunning) {
		t.Errorf("stats after the stop: %v, want not running", err)
	}
}

// With the real clock a call really takes its latency (at least).
func TestTimingsRealClockWaits(t *testing.T) {
	h := NewHostWith(HostOptions{Timings: Timings{Create: Fixed(30 * time.Millisecond)}})
	t0 := time.Now()
	if _, err := h.NewDriver().Create(context.Background(), cfgOf("u1", 64)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took < 30*time.Millisecond {
		t.Errorf("create took %v, under its 30ms latency", took)
	}
}

// NoCallLog keeps no record of the calls a long-lived host sees.
func TestNoCallLog(t *testing.T) {
	d := NewHostWith(HostOptions{NoCallLog: true}).NewDriver()
	if _, err := d.Create(context.Background(), cfgOf("u1", 64)); err != nil {
		t.Fatal(err)
	}
	if c := d.Calls(); len(c) != 0 {
		t.Errorf("calls recorded: %v", c)
	}
	d2 := NewHost().NewDriver()
	if _, err := d2.Create(context.Background(), cfgOf("u1", 64)); err != nil {
		t.Fatal(err)
	}
	if c := d2.Calls(); !slices.Equal(c, []string{"create u1"}) {
		t.Errorf("calls of a default host: %v", c)
	}
}

// The measured profiles are usable as they are.
func TestQEMUProfiles(t *testing.T) {
	tm := QEMUTimings()
	for name, l := range map[string]Latency{"create": tm.Create, "start": tm.Start, "graceful stop": tm.StopGraceful,
		"forced stop": tm.StopForced, "destroy": tm.Destroy} {
		if len(l.Samples) == 0 || slices.Min(l.Samples) <= 0 {
			t.Errorf("%s: samples %v", name, l.Samples)
		}
	}
	u := QEMUUsage()
	if u.Boot <= 0 || u.BootCPUSeconds <= 0 || u.BaseBytes <= 0 || u.GuestShare <= 0 || u.GuestShare > 1 {
		t.Errorf("usage %+v", u)
	}
}
