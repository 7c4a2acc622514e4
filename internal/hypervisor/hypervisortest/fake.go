// Package hypervisortest provides an in-memory hypervisor driver for the
// tests of what drives VMs (the host agent). Its VMs are records and their
// processes fake pids; they live in a Host, which outlives the Drivers made
// over it as real VMs outlive an agent. Tests make the VMs do what real
// ones do by themselves (a guest that powers off, a process that is
// killed, a guest halted on an internal error or a panic) and make any
// driver call fail.
//
// A Host made by NewHostWith also behaves as a real machine does over
// time, for simulated hosts: its calls take the time its Timings say
// (QEMUTimings are measured from the QEMU driver) and its VMs report the
// CPU and memory its Usage says (QEMUUsage) through Stats.
//
// It follows the contract of hypervisor.Driver as the QEMU driver does:
// events outlive the call that subscribed, the first event replays the
// current state with the cause of the last stop, a stop that was asked for
// has the cause requested, and a process found gone by Recover is
// replayed as a crash.
package hypervisortest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// DriverName is the fake driver's name.
const DriverName = "fake"

// Operations a test can make fail, as passed to Driver.Fail.
const (
	OpCreate  = "create"
	OpStart   = "start"
	OpStop    = "stop"
	OpState   = "state"
	OpRecover = "recover"
	OpDestroy = "destroy"
	OpEvents  = "events"
	OpPause   = "pause"
	OpResume  = "resume"
	OpSetNICs = "setnics"
)

// Host is the fake machine: the VMs and their processes.
type Host struct {
	opts  HostOptions
	clock Clock

	mu      sync.Mutex
	rng     *rand.Rand
	vms     map[string]*vmRec // by uid
	nextPID int
	drivers map[*Driver]bool // open drivers, which see the VMs' events
	// Consoles receives the host end of every console a driver opens.
	Consoles chan net.Conn
}

type vmRec struct {
	name      string
	state     string // a hypervisor.State* value
	pid       int    // 0 when no process runs
	cause     hypervisor.Cause
	reason    string
	starts    int
	memoryMiB int64
	startedAt time.Time              // of the running process
	nics      []hypervisor.NICConfig // as started, then as set while it runs
}

// NewHost returns an empty fake machine whose calls take no time.
func NewHost() *Host { return NewHostWith(HostOptions{}) }

// NewHostWith returns an empty fake machine whose calls take the time
// opts.Timings says and whose VMs use what opts.Usage says.
func NewHostWith(opts HostOptions) *Host {
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Host{opts: opts, clock: clock, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		vms: map[string]*vmRec{}, nextPID: 1000, drivers: map[*Driver]bool{}, Consoles: make(chan net.Conn, 16)}
}

// Driver is a hypervisor.Driver over a Host, as one agent holds it.
type Driver struct {
	host *Host

	mu     sync.Mutex
	closed bool
	subs   map[string]map[chan hypervisor.StateEvent]bool
	last   map[string]hypervisor.StateEvent
	fail   map[string][]error
	calls  []string
}

var (
	_ hypervisor.Driver     = (*Driver)(nil)
	_ hypervisor.Pauser     = (*Driver)(nil)
	_ hypervisor.Consoler   = (*Driver)(nil)
	_ hypervisor.Statser    = (*Driver)(nil)
	_ hypervisor.NICPlugger = (*Driver)(nil)
)

// NewDriver returns a driver over h, as a (re)started agent makes one.
func (h *Host) NewDriver() *Driver {
	d := &Driver{host: h, subs: map[string]map[chan hypervisor.StateEvent]bool{},
		last: map[string]hypervisor.StateEvent{}, fail: map[string][]error{}}
	h.mu.Lock()
	h.drivers[d] = true
	h.mu.Unlock()
	return d
}

// Close detaches the driver: it sees no more events, as an agent that
// exits. Its VMs keep running.
func (d *Driver) Close() {
	d.host.mu.Lock()
	delete(d.host.drivers, d)
	d.host.mu.Unlock()
	d.mu.Lock()
	d.closed = true
	for uid, subs := range d.subs {
		for ch := range subs {
			close(ch)
		}
		delete(d.subs, uid)
	}
	d.mu.Unlock()
}

// Fail makes the next calls of op fail with errs, one error per call.
func (d *Driver) Fail(op string, errs ...error) {
	d.mu.Lock()
	d.fail[op] = append(d.fail[op], errs...)
	d.mu.Unlock()
}

// Calls returns the calls made so far, as "op uid".
func (d *Driver) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// CallCount counts the calls of op for uid.
func (d *Driver) CallCount(op, uid string) int {
	n := 0
	for _, c := range d.Calls() {
		if c == op+" "+uid {
			n++
		}
	}
	return n
}

func (d *Driver) call(op, uid string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.host.opts.NoCallLog {
		d.calls = append(d.calls, op+" "+uid)
	}
	if errs := d.fail[op]; len(errs) > 0 {
		d.fail[op] = errs[1:]
		return fmt.Errorf("fake %s of vm %s: %w", op, uid, errs[0])
	}
	return nil
}

// Name returns "fake".
func (d *Driver) Name() string { return DriverName }

// Capabilities of the fake driver.
func (d *Driver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{Pause: true, SerialConsole: true, KernelBoot: true, CloudInit: true, NICHotplug: true}
}

// Info describes the fake host.
func (d *Driver) Info(context.Context) (hypervisor.Info, error) {
	return hypervisor.Info{Accel: "tcg", Version: "fake 1"}, nil
}

// Create records a stopped VM.
func (d *Driver) Create(ctx context.Context, cfg hypervisor.VMConfig) (*hypervisor.Handle, error) {
	if err := d.call(OpCreate, cfg.UID); err != nil {
		return nil, err
	}
	h := d.host
	if err := h.wait(ctx, h.opts.Timings.Create); err != nil {
		return nil, fmt.Errorf("creating vm %s: %w", cfg.UID, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.vms[cfg.UID]; ok {
		return nil, fmt.Errorf("creating vm %s: it already exists", cfg.UID)
	}
	h.vms[cfg.UID] = &vmRec{name: cfg.Name, state: hypervisor.StateStopped, memoryMiB: cfg.MemoryMiB}
	hd := &hypervisor.Handle{Version: hypervisor.HandleVersion, Driver: DriverName, Name: cfg.Name, UID: cfg.UID, Dir: "/fake/" + cfg.UID}
	for _, dc := range cfg.Disks {
		hd.Disks = append(hd.Disks, hypervisor.DiskFile{Name: dc.Name, Path: "/fake/" + cfg.UID + "/" + dc.Name + ".qcow2", Format: "qcow2", SizeMiB: dc.SizeMiB})
	}
	return hd, nil
}

func (h *Host) vm(uid string) (*vmRec, error) {
	v, ok := h.vms[uid]
	if !ok {
		return nil, fmt.Errorf("vm %s does not exist", uid)
	}
	return v, nil
}

// Start gives the VM a new process, running or paused.
func (d *Driver) Start(ctx context.Context, hd *hypervisor.Handle, cfg hypervisor.VMConfig) error {
	if err := d.call(OpStart, hd.UID); err != nil {
		return err
	}
	h := d.host
	if err := h.wait(ctx, h.opts.Timings.Start); err != nil {
		return fmt.Errorf("starting vm %s: %w", hd.UID, err)
	}
	h.mu.Lock()
	v, err := h.vm(hd.UID)
	if err == nil && v.pid != 0 {
		err = fmt.Errorf("starting vm %s: already running as pid %d", hd.UID, v.pid)
	}
	if err != nil {
		h.mu.Unlock()
		return err
	}
	h.nextPID++
	v.pid, v.cause, v.reason = h.nextPID, "", ""
	v.starts++
	v.nics = append([]hypervisor.NICConfig(nil), cfg.NICs...)
	v.startedAt = h.clock.Now()
	if cfg.MemoryMiB > 0 {
		v.memoryMiB = cfg.MemoryMiB
	}
	v.state = hypervisor.StateRunning
	if cfg.StartPaused {
		v.state = hypervisor.StatePaused
	}
	hd.PID, hd.PIDStart = v.pid, uint64(v.starts)
	h.mu.Unlock()
	d.mu.Lock()
	delete(d.last, hd.UID)
	d.mu.Unlock()
	return nil
}

// Stop ends the VM's process; its event has the cause requested.
func (d *Driver) Stop(ctx context.Context, hd *hypervisor.Handle, opts hypervisor.StopOptions) error {
	if err := d.call(OpStop, hd.UID); err != nil {
		return err
	}
	lat := d.host.opts.Timings.StopGraceful
	if opts.Force {
		lat = d.host.opts.Timings.StopForced
	}
	if err := d.host.wait(ctx, lat); err != nil {
		return fmt.Errorf("stopping vm %s: %w", hd.UID, err)
	}
	pid := hd.PID
	hd.PID, hd.PIDStart = 0, 0
	d.host.end(hd.UID, pid, hypervisor.CauseRequested, "stopped as requested")
	return nil
}

// end stops the process pid of uid (if it still runs) and tells the open
// drivers why.
func (h *Host) end(uid string, pid int, cause hypervisor.Cause, reason string) bool {
	h.mu.Lock()
	v, ok := h.vms[uid]
	if !ok || v.pid == 0 || (pid != 0 && v.pid != pid) {
		h.mu.Unlock()
		return false
	}
	ev := hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: cause, Reason: reason, PID: v.pid}
	v.pid, v.state, v.cause, v.reason = 0, hypervisor.StateStopped, "", ""
	h.mu.Unlock()
	h.broadcast(uid, ev)
	return true
}

func (h *Host) broadcast(uid string, ev hypervisor.StateEvent) {
	h.mu.Lock()
	drivers := make([]*Driver, 0, len(h.drivers))
	for d := range h.drivers {
		drivers = append(drivers, d)
	}
	h.mu.Unlock()
	for _, d := range drivers {
		d.deliver(uid, ev)
	}
}

func (d *Driver) deliver(uid string, ev hypervisor.StateEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ev.State == hypervisor.StateStopped || ev.State == hypervisor.StateCrashed {
		d.last[uid] = ev
	}
	for ch := range d.subs[uid] {
		select {
		case ch <- ev:
		default:
			panic("hypervisortest: an event subscriber does not read its events")
		}
	}
}

// State reports the state of h's process: stopped when it is not the one
// that runs.
func (d *Driver) State(_ context.Context, hd *hypervisor.Handle) (hypervisor.Status, error) {
	if err := d.call(OpState, hd.UID); err != nil {
		return hypervisor.Status{}, err
	}
	return d.host.state(hd)
}

func (h *Host) state(hd *hypervisor.Handle) (hypervisor.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.vm(hd.UID)
	if err != nil {
		return hypervisor.Status{}, err
	}
	if v.pid == 0 || v.pid != hd.PID {
		return hypervisor.Status{State: hypervisor.StateStopped}, nil
	}
	return hypervisor.Status{State: v.state, PID: v.pid, Cause: v.cause, Reason: v.reason, Serial: "fake-serial"}, nil
}

// Recover re-attaches to h's process; one that is gone is replayed to
// the next subscriber as a crash.
func (d *Driver) Recover(_ context.Context, hd *hypervisor.Handle) (hypervisor.Status, error) {
	if err := d.call(OpRecover, hd.UID); err != nil {
		return hypervisor.Status{}, err
	}
	h := d.host
	h.mu.Lock()
	v, err := h.vm(hd.UID)
	gone := err == nil && hd.PID != 0 && v.pid != hd.PID
	h.mu.Unlock()
	if err != nil {
		return hypervisor.Status{}, err
	}
	if gone {
		d.mu.Lock()
		d.last[hd.UID] = hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseProcessExited,
			Reason: "the process exited while no agent was watching it", PID: hd.PID}
		d.mu.Unlock()
		hd.PID, hd.PIDStart = 0, 0
	}
	return h.state(hd)
}

// Destroy stops the VM if it runs and removes it; its subscriptions end.
func (d *Driver) Destroy(ctx context.Context, hd *hypervisor.Handle, _ bool) error {
	if err := d.call(OpDestroy, hd.UID); err != nil {
		return err
	}
	lat := d.host.opts.Timings.Destroy
	if st, err := d.host.state(hd); err == nil && st.State != hypervisor.StateStopped {
		lat = d.host.opts.Timings.StopForced
	}
	if err := d.host.wait(ctx, lat); err != nil {
		return fmt.Errorf("destroying vm %s: %w", hd.UID, err)
	}
	d.host.end(hd.UID, 0, hypervisor.CauseRequested, "stopped as requested")
	d.host.mu.Lock()
	delete(d.host.vms, hd.UID)
	d.host.mu.Unlock()
	d.mu.Lock()
	for ch := range d.subs[hd.UID] {
		close(ch)
	}
	delete(d.subs, hd.UID)
	delete(d.last, hd.UID)
	d.mu.Unlock()
	hd.PID, hd.PIDStart = 0, 0
	return nil
}

// Events subscribes to the VM's events until ctx ends; the first replays
// its current state.
func (d *Driver) Events(ctx context.Context, hd *hypervisor.Handle) (<-chan hypervisor.StateEvent, error) {
	if err := d.call(OpEvents, hd.UID); err != nil {
		return nil, err
	}
	ch := make(chan hypervisor.StateEvent, 64)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("fake driver is closed")
	}
	if d.subs[hd.UID] == nil {
		d.subs[hd.UID] = map[chan hypervisor.StateEvent]bool{}
	}
	d.subs[hd.UID][ch] = true
	d.mu.Unlock()

	h := d.host
	h.mu.Lock()
	ev := hypervisor.StateEvent{State: hypervisor.StateStopped, Replay: true}
	if v, ok := h.vms[hd.UID]; ok && v.pid != 0 {
		ev = hypervisor.StateEvent{State: v.state, Cause: v.cause, Reason: v.reason, PID: v.pid, Replay: true}
	}
	h.mu.Unlock()
	d.mu.Lock()
	if last, ok := d.last[hd.UID]; ok && ev.State == hypervisor.StateStopped {
		ev.Cause, ev.Reason, ev.PID = last.Cause, last.Reason, last.PID
	}
	if d.subs[hd.UID][ch] {
		ch <- ev
	}
	d.mu.Unlock()
	context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.subs[hd.UID][ch] {
			delete(d.subs[hd.UID], ch)
			close(ch)
		}
	})
	return ch, nil
}

// Subscribers counts the open event subscriptions of a VM.
func (d *Driver) Subscribers(uid string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.subs[uid])
}

// Pause pauses a running VM.
func (d *Driver) Pause(ctx context.Context, hd *hypervisor.Handle) error {
	return d.setRunState(ctx, OpPause, d.host.opts.Timings.Pause, hd, hypervisor.StateRunning, hypervisor.StatePaused, "paused")
}

// Resume resumes a paused VM.
func (d *Driver) Resume(ctx context.Context, hd *hypervisor.Handle) error {
	return d.setRunState(ctx, OpResume, d.host.opts.Timings.Resume, hd, hypervisor.StatePaused, hypervisor.StateRunning, "resumed")
}

func (d *Driver) setRunState(ctx context.Context, op string, lat Latency, hd *hypervisor.Handle, from, to, reason string) error {
	if err := d.call(op, hd.UID); err != nil {
		return err
	}
	h := d.host
	if err := h.wait(ctx, lat); err != nil {
		return fmt.Errorf("%s of vm %s: %w", op, hd.UID, err)
	}
	h.mu.Lock()
	v, err := h.vm(hd.UID)
	if err == nil && (v.pid == 0 || v.pid != hd.PID) {
		err = fmt.Errorf("%s of vm %s: %w", op, hd.UID, hypervisor.ErrNotRunning)
	}
	if err != nil {
		h.mu.Unlock()
		return err
	}
	changed := v.state == from
	if changed {
		v.state = to
	}
	pid := v.pid
	h.mu.Unlock()
	if changed {
		h.broadcast(hd.UID, hypervisor.StateEvent{State: to, Reason: reason, PID: pid})
	}
	return nil
}

// Stats reports what the VM's process uses, by the host's Usage: nothing
// for a host made without one.
func (d *Driver) Stats(_ context.Context, hd *hypervisor.Handle) (hypervisor.Stats, error) {
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.vm(hd.UID)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	if v.pid == 0 || v.pid != hd.PID {
		return hypervisor.Stats{}, fmt.Errorf("vm %s is not running: %w", hd.UID, hypervisor.ErrNotRunning)
	}
	cpu, rss := h.opts.Usage.at(h.clock.Now().Sub(v.startedAt), v.memoryMiB)
	return hypervisor.Stats{CPUSeconds: cpu, MemoryBytes: rss}, nil
}

// OpenConsole returns one end of a pipe and sends the other to
// Host.Consoles.
func (d *Driver) OpenConsole(_ context.Context, hd *hypervisor.Handle, kind string) (io.ReadWriteCloser, error) {
	if st, err := d.host.state(hd); err != nil || st.State == hypervisor.StateStopped {
		return nil, fmt.Errorf("opening %s console of vm %s: %w", kind, hd.UID, errors.Join(err, hypervisor.ErrNotRunning))
	}
	a, b := net.Pipe()
	select {
	case d.host.Consoles <- b:
	default:
		a.Close()
		return nil, errors.New("fake console: nobody takes the host end")
	}
	return a, nil
}

// ConsoleLog returns a fixed text.
func (d *Driver) ConsoleLog(context.Context, *hypervisor.Handle, int64) ([]byte, error) {
	return []byte("fake console log\n"), nil
}

// Kill kills the VM's process, as kill -9 would: a crash.
func (h *Host) Kill(uid string) error {
	if !h.end(uid, 0, hypervisor.CauseProcessExited, "the process was killed by signal 9") {
		return fmt.Errorf("vm %s has no process", uid)
	}
	return nil
}

// KillUnwatched kills the VM's process without telling any driver, as
// when no agent runs.
func (h *Host) KillUnwatched(uid string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.vm(uid)
	if err != nil {
		return err
	}
	if v.pid == 0 {
		return fmt.Errorf("vm %s has no process", uid)
	}
	v.pid, v.state = 0, hypervisor.StateStopped
	return nil
}

// GuestPoweroff makes the guest power itself off.
func (h *Host) GuestPoweroff(uid string) error {
	if !h.end(uid, 0, hypervisor.CauseGuestPoweroff, "the guest powered itself off") {
		return fmt.Errorf("vm %s has no process", uid)
	}
	return nil
}

// Halt halts the guest with cause (internal error, guest panic): its
// process keeps running, the VM is crashed.
func (h *Host) Halt(uid string, cause hypervisor.Cause, reason string) error {
	h.mu.Lock()
	v, err := h.vm(uid)
	if err == nil && v.pid == 0 {
		err = fmt.Errorf("vm %s has no process", uid)
	}
	if err != nil {
		h.mu.Unlock()
		return err
	}
	v.state, v.cause, v.reason = hypervisor.StateCrashed, cause, reason
	ev := hypervisor.StateEvent{State: hypervisor.StateCrashed, Cause: cause, Reason: reason, PID: v.pid}
	h.mu.Unlock()
	h.broadcast(uid, ev)
	return nil
}

// VM is what a test sees of a fake VM.
type VM struct {
	UID, Name string
	State     string
	PID       int
	Starts    int // how many times it was started
	// NICs are the NICs it was started with, or last set while it ran.
	NICs []hypervisor.NICConfig
}

// VM returns the fake VM uid, and whether it exists.
func (h *Host) VM(uid string) (VM, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[uid]
	if !ok {
		return VM{}, false
	}
	return VM{UID: uid, Name: v.name, State: v.state, PID: v.pid, Starts: v.starts, NICs: append([]hypervisor.NICConfig(nil), v.nics...)}, true
}

// VMs lists the fake VMs by uid.
func (h *Host) VMs() []VM {
	h.mu.Lock()
	uids := make([]string, 0, len(h.vms))
	for uid := range h.vms {
		uids = append(uids, uid)
	}
	h.mu.Unlock()
	sort.Strings(uids)
	out := make([]VM, 0, len(uids))
	for _, uid := range uids {
		if v, ok := h.VM(uid); ok {
			out = append(out, v)
		}
	}
	return out
}

// SetNICs sets a running VM's NICs (network NICs plugged in and out).
func (d *Driver) SetNICs(_ context.Context, hd *hypervisor.Handle, nics []hypervisor.NICConfig) error {
	if err := d.call(OpSetNICs, hd.UID); err != nil {
		return err
	}
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.vm(hd.UID)
	if err != nil || v.pid == 0 {
		return err
	}
	v.nics = append([]hypervisor.NICConfig(nil), nics...)
	return nil
}
