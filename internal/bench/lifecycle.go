package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// lifecycleTarget is the ratio median(Polyvisor)/median(bare QEMU) to meet.
const lifecycleTarget = 1.05

// lifecycleHost is the built-in agent's host name in the benchmark.
const lifecycleHost = "bench"

// lifecycleOptions are the flags of `bench lifecycle`.
type lifecycleOptions struct {
	rounds      int
	guestDir    string
	pollEvery   time.Duration
	bootTimeout time.Duration
	keep        bool
	// exact adds a diagnostic boot per round with Polyvisor's own QEMU
	// command line, started directly (see exactBoot).
	exact bool
}

// PolyvisorBoot is one timed create of a VM through the API. Every figure
// is in milliseconds from the moment POST /v1/vms was sent.
type PolyvisorBoot struct {
	// TotalMs is until the guest's marker appeared in console.log.
	TotalMs float64 `json:"totalMs"`
	// AcceptedMs is until the 202 came back.
	AcceptedMs float64 `json:"acceptedMs"`
	// QEMUUpMs is until console.log existed (QEMU set up its chardevs).
	QEMUUpMs float64 `json:"qemuUpMs"`
	// GuestMs is from console.log existing to the marker.
	GuestMs float64 `json:"guestMs"`
	// DeleteMs is from DELETE sent to its operation done (not in TotalMs).
	DeleteMs float64 `json:"deleteMs"`
	// CPU is where the machine's CPU went from create to deleted.
	CPU CPUUse `json:"cpu"`
}

// BareBoot is one timed boot of QEMU started directly, in milliseconds
// from the process's start.
type BareBoot struct {
	TotalMs  float64 `json:"totalMs"`
	QEMUUpMs float64 `json:"qemuUpMs"`
	GuestMs  float64 `json:"guestMs"`
	// CPU is where the machine's CPU went from start to killed.
	CPU CPUUse `json:"cpu"`
}

// LifecycleRound is one round: one boot of each, in Order.
type LifecycleRound struct {
	Round     int           `json:"round"` // 0 is the warm-up
	Order     string        `json:"order"` // "polyvisor,bare" or "bare,polyvisor"
	Polyvisor PolyvisorBoot `json:"polyvisor"`
	Bare      BareBoot      `json:"bare"`
	// Exact is the diagnostic boot of --exact-args, run after the other two.
	Exact *BareBoot `json:"exact,omitempty"`
}

// LifecycleReport is the result of `bench lifecycle`.
type LifecycleReport struct {
	Machine Machine          `json:"machine"`
	Warmup  LifecycleRound   `json:"warmup"`
	Rounds  []LifecycleRound `json:"rounds"`
	// Medians over the counted rounds.
	Polyvisor PolyvisorBoot `json:"medianPolyvisor"`
	Bare      BareBoot      `json:"medianBare"`
	Exact     *BareBoot     `json:"medianExact,omitempty"`
	Ratio     float64       `json:"ratio"`
	Target    float64       `json:"target"`
	Met       bool          `json:"met"`
	// BareArgs is the bare QEMU's command line (paths of round 1);
	// PolyvisorArgs is the one Polyvisor's agent ran (warm-up round).
	BareArgs      []string `json:"bareArgs"`
	PolyvisorArgs []string `json:"polyvisorArgs"`
	ExactArgs     []string `json:"exactArgs,omitempty"`
	PollEveryMs   float64  `json:"pollEveryMs"`
}

// lifecycleRun holds what one `bench lifecycle` started.
type lifecycleRun struct {
	opts      lifecycleOptions
	bin       string
	tmp       string
	guestDir  string
	srv       *serverProc
	c         *client.Client
	meter     *cpuMeter
	log       io.Writer
	bareArgs  []string
	pvArgs    []string
	exactArgs []string
}

func runLifecycle(ctx context.Context, opts lifecycleOptions, log io.Writer) (rep *LifecycleReport, err error) {
	if opts.rounds < 1 {
		return nil, fmt.Errorf("--rounds must be at least 1, not %d", opts.rounds)
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("the lifecycle benchmark needs %s: %w", tool, err)
		}
	}
	guestDir, err := resolveGuestDir(ctx, opts.guestDir, log)
	if err != nil {
		return nil, err
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the polyvisor binary: %w", err)
	}
	var cl cleanups
	defer cl.run()
	tmp, err := os.MkdirTemp("", "pvbench-lc-")
	if err != nil {
		return nil, fmt.Errorf("making temp dir: %w", err)
	}
	cl.add(func() {
		// Whatever bare QEMU a failure left behind.
		killQEMUsUnder(tmp)
		if opts.keep {
			fmt.Fprintf(log, "kept %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	})
	r := &lifecycleRun{opts: opts, bin: bin, tmp: tmp, guestDir: guestDir, log: log}

	fmt.Fprintf(log, "starting polyvisor server (data dir %s)\n", filepath.Join(tmp, "server"))
	r.srv, err = startServer(ctx, &cl, bin, filepath.Join(tmp, "server"), "--host-name", lifecycleHost,
		"--accel", "tcg") // the bare QEMU runs TCG too: the same work on both sides
	if err != nil {
		return nil, err
	}
	r.c = r.srv.local
	r.meter = &cpuMeter{server: r.srv.pid(), qemuDir: tmp}
	if err := waitHostReady(ctx, r.c, lifecycleHost, r.srv.proc); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "importing the tiny guest from %s\n", guestDir)
	if err := importGuest(ctx, r.c, guestDir, true); err != nil {
		return nil, r.srv.failure(err)
	}

	rep = &LifecycleReport{Machine: describeMachine(ctx), Target: lifecycleTarget, PollEveryMs: msOf(opts.pollEvery)}
	for i := 0; i <= opts.rounds; i++ {
		round, err := r.round(ctx, i)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			rep.Warmup = round
			fmt.Fprintf(log, "warm-up: polyvisor %.0f ms, bare %.0f ms (not counted)\n", round.Polyvisor.TotalMs, round.Bare.TotalMs)
			continue
		}
		fmt.Fprintf(log, "round %d/%d (%s): polyvisor %.0f ms, bare %.0f ms\n", i, opts.rounds, round.Order, round.Polyvisor.TotalMs, round.Bare.TotalMs)
		rep.Rounds = append(rep.Rounds, round)
	}
	rep.BareArgs, rep.PolyvisorArgs, rep.ExactArgs = r.bareArgs, r.pvArgs, r.exactArgs
	rep.Machine.LoadEnd = loadAvg()
	rep.summarize()
	return rep, nil
}

// summarize computes the medians and the ratio from the rounds.
func (rep *LifecycleReport) summarize() {
	col := func(f func(LifecycleRound) float64) float64 {
		xs := make([]float64, len(rep.Rounds))
		for i, r := range rep.Rounds {
			xs[i] = f(r)
		}
		return median(xs)
	}
	rep.Polyvisor = PolyvisorBoot{
		TotalMs:    col(func(r LifecycleRound) float64 { return r.Polyvisor.TotalMs }),
		AcceptedMs: col(func(r LifecycleRound) float64 { return r.Polyvisor.AcceptedMs }),
		QEMUUpMs:   col(func(r LifecycleRound) float64 { return r.Polyvisor.QEMUUpMs }),
		GuestMs:    col(func(r LifecycleRound) float64 { return r.Polyvisor.GuestMs }),
		DeleteMs:   col(func(r LifecycleRound) float64 { return r.Polyvisor.DeleteMs }),
	}
	rep.Bare = BareBoot{
		TotalMs:  col(func(r LifecycleRound) float64 { return r.Bare.TotalMs }),
		QEMUUpMs: col(func(r LifecycleRound) float64 { return r.Bare.QEMUUpMs }),
		GuestMs:  col(func(r LifecycleRound) float64 { return r.Bare.GuestMs }),
	}
	if len(rep.Rounds) > 0 && rep.Rounds[0].Exact != nil {
		rep.Exact = &BareBoot{
			TotalMs:  col(func(r LifecycleRound) float64 { return r.Exact.TotalMs }),
			QEMUUpMs: col(func(r LifecycleRound) float64 { return r.Exact.QEMUUpMs }),
			GuestMs:  col(func(r LifecycleRound) float64 { return r.Exact.GuestMs }),
		}
	}
	if rep.Bare.TotalMs > 0 {
		rep.Ratio = rep.Polyvisor.TotalMs / rep.Bare.TotalMs
	}
	rep.Met = rep.Ratio > 0 && rep.Ratio <= rep.Target
}

// round boots once each way; odd rounds (and the warm-up) go Polyvisor
// first, even rounds bare QEMU first.
func (r *lifecycleRun) round(ctx context.Context, i int) (LifecycleRound, error) {
	out := LifecycleRound{Round: i, Order: "polyvisor,bare"}
	pvFirst := i%2 == 1 || i == 0
	if !pvFirst {
		out.Order = "bare,polyvisor"
	}
	var err error
	for _, pv := range []bool{pvFirst, !pvFirst} {
		if pv {
			out.Polyvisor, err = r.polyvisorBoot(ctx, i)
		} else {
			out.Bare, err = r.bareBoot(ctx, i)
		}
		if err != nil {
			return out, fmt.Errorf("round %d: %w", i, err)
		}
	}
	if r.opts.exact {
		b, err := r.exactBoot(ctx, i)
		if err != nil {
			return out, fmt.Errorf("round %d: %w", i, err)
		}
		out.Exact = &b
	}
	return out, nil
}

// polyvisorBoot creates a VM through the API, times it to the marker in its
// console.log, then deletes it and waits for the deletion.
func (r *lifecycleRun) polyvisorBoot(ctx context.Context, i int) (PolyvisorBoot, error) {
	var b PolyvisorBoot
	name := fmt.Sprintf("bench-lc-%d", i)
	req := api.VMCreate{
		Name: name, VCPUs: 1, MemoryMiB: 256,
		Disks: []api.Disk{{Name: "root", Image: imageDisk}},
		Boot:  api.Boot{Kernel: imageKernel, Initrd: imageInitrd, Cmdline: "console=ttyS0 quiet no_timer_check"},
	}
	cpu0 := r.meter.sample()
	t0 := time.Now()
	op, err := r.c.CreateVM(ctx, req, client.CreateOptions{})
	if err != nil {
		return b, r.srv.failure(err)
	}
	b.AcceptedMs = msOf(time.Since(t0))
	if op.Target.UID == "" {
		return b, fmt.Errorf("create of %s answered an operation without the VM's uid", name)
	}
	logPath := filepath.Join(r.srv.dataDir, "agent", "vms", op.Target.UID, "console.log")
	mt, err := watchMarker(ctx, logPath, guestMarker, r.opts.pollEvery, r.opts.bootTimeout)
	if err != nil {
		return b, r.srv.failure(fmt.Errorf("polyvisor VM %s: %w", name, err))
	}
	b.TotalMs = msOf(mt.MarkerAt.Sub(t0))
	b.QEMUUpMs = msOf(mt.FileAt.Sub(t0))
	b.GuestMs = msOf(mt.MarkerAt.Sub(mt.FileAt))

	if r.pvArgs == nil {
		// Outside the timed part: the command line the agent ran.
		if vm, err := r.c.GetVM(ctx, name); err == nil && vm.Status.PID > 0 {
			if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vm.Status.PID)); err == nil {
				r.pvArgs = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
			}
		}
	}

	td := time.Now()
	dop, err := r.c.DeleteVM(ctx, name, false)
	if err != nil {
		return b, r.srv.failure(err)
	}
	if err := waitSucceeded(ctx, r.c, dop, 2*time.Minute); err != nil {
		return b, r.srv.failure(err)
	}
	b.DeleteMs = msOf(time.Since(td))
	b.CPU = r.meter.since(cpu0)
	return b, nil
}

// bareArgsFor is the bare QEMU's command line: the same machine as
// Polyvisor's, with only what booting the guest needs.
func bareArgsFor(guestDir, overlay, serial string) []string {
	return []string{
		"-accel", "tcg", "-machine", "q35", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", filepath.Join(guestDir, guestKernel),
		"-initrd", filepath.Join(guestDir, guestInitrd),
		"-append", "console=ttyS0 quiet no_timer_check",
		"-blockdev", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + overlay,
		"-device", "virtio-blk-pci,drive=disk0",
		"-serial", "file:" + serial,
	}
}

// bareBoot starts QEMU directly on a fresh overlay, times it to the marker
// in its serial output file, and kills it. Making the overlay is not timed.
func (r *lifecycleRun) bareBoot(ctx context.Context, i int) (BareBoot, error) {
	var b BareBoot
	dir := filepath.Join(r.tmp, "bare", fmt.Sprint(i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return b, fmt.Errorf("making bare qemu dir: %w", err)
	}
	overlay := filepath.Join(dir, "disk.qcow2")
	backing := filepath.Join(r.guestDir, guestDisk)
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
		return b, fmt.Errorf("creating overlay: %w: %s", err, strings.TrimSpace(string(out)))
	}
	serial := filepath.Join(dir, "serial.log")
	args := bareArgsFor(r.guestDir, overlay, serial)
	if i == 1 {
		r.bareArgs = append([]string{"qemu-system-x86_64"}, args...)
	}
	cpu0 := r.meter.sample()
	t0 := time.Now()
	p, err := startProc("bare qemu", filepath.Join(dir, "qemu.log"), "qemu-system-x86_64", args...)
	if err != nil {
		return b, err
	}
	defer p.kill()
	mt, err := watchMarker(ctx, serial, guestMarker, r.opts.pollEvery, r.opts.bootTimeout)
	if err != nil {
		return b, p.failure(fmt.Errorf("bare qemu: %w", err))
	}
	b.TotalMs = msOf(mt.MarkerAt.Sub(t0))
	b.QEMUUpMs = msOf(mt.FileAt.Sub(t0))
	b.GuestMs = msOf(mt.MarkerAt.Sub(mt.FileAt))
	p.kill()
	b.CPU = r.meter.since(cpu0)
	return b, nil
}
