// Package qemu is Polyvisor's QEMU driver: it runs each VM as its own
// qemu-system-x86_64 process, under KVM when a probe guest runs under it
// and under TCG otherwise (see DecideAccel).
//
// A VM lives in StateDir/<uid>: its disks, NoCloud seed ISO, the persisted
// handle (handle.json), QEMU's log (qemu.log), the serial console's
// recording (console.log) and unix sockets for QMP, the serial console and
// VNC. QEMU processes run in their own session and outlive the agent; a
// restarted agent finds them again with Recover, which identifies a process
// by PID and start time and never starts a second one.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// DriverName is the name the driver registers under.
const DriverName = "qemu"

var (
	_ hypervisor.Driver     = (*Driver)(nil)
	_ hypervisor.Pauser     = (*Driver)(nil)
	_ hypervisor.Consoler   = (*Driver)(nil)
	_ hypervisor.NICPlugger = (*Driver)(nil)
)

// Config configures the driver.
type Config struct {
	// StateDir holds one directory per VM, StateDir/<uid>.
	StateDir string
	// QEMUBinary and QEMUImgBinary default to qemu-system-x86_64 and
	// qemu-img found on PATH.
	QEMUBinary    string
	QEMUImgBinary string
	Logger        *slog.Logger
	// Accel is "kvm" (required: New fails when KVM does not run a guest),
	// "tcg", or "auto"/"" to run the accelerator probe (DecideAccel).
	Accel string
	// RunDir holds short symlinks to VM directories whose socket paths
	// would not fit in a unix socket address; default /run/polyvisor.
	RunDir string
	// StartTimeout bounds Start when its ctx has no deadline; default 60s.
	StartTimeout time.Duration
	// User is the unprivileged user QEMU and passt drop to when the agent
	// runs as root; default DefaultUser, made when missing; "root" keeps
	// root. CgroupParent is where VMs' cgroups go (see detectCgroups).
	// PasstBinary defaults to passt found on PATH.
	User, CgroupParent, PasstBinary string
	// LogMaxBytes bounds each of a VM's logs (the guest's serial output
	// in console.log, QEMU's qemu.log): past it, the oldest half is
	// dropped (capLogs). Default 2 MiB.
	LogMaxBytes int64
	// OVMFCode and OVMFVars are the EFI firmware and its variable store
	// template for VMs with EFI firmware; default DefaultOVMFCode and
	// DefaultOVMFVars.
	OVMFCode, OVMFVars string
}

// Driver is the QEMU hypervisor driver. It is safe for concurrent use;
// lifecycle calls for one VM are expected to be serialized by the caller.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	accel AccelChoice

	runOnce sync.Once
	run     string
	conf    lazyConfinement
	denyMu  sync.Mutex // serializes rewrites of the guests' firewall rules

	attachMu sync.Mutex // serializes QMP connects (QEMU serves one client)
	mu       sync.Mutex
	vms      map[string]*vm                                 // by uid, while attached
	subs     map[string]map[chan hypervisor.StateEvent]bool // Events subscribers by uid; a channel leaves when closed
	// last is each VM's last stop or crash, kept until a process runs
	// again, for the replay of a new subscription; by uid.
	last map[string]hypervisor.StateEvent
	// requested holds the pid of each VM whose stop Polyvisor asked for,
	// so its end is not taken for a crash; by uid.
	requested map[string]int
	// incoming holds the VMs migrating in, by uid.
	incoming map[string]*incoming
}

// vm is the driver's live connection to one running QEMU.
type vm struct {
	uid    string
	dir    string
	pid    int
	start  uint64
	qmp    *qmp.Client
	exited chan struct{} // closed once the process is gone
	child  bool          // started by this driver, reaped by it
	// exitStatus says how a child ended ("killed by signal 9"); valid
	// once exited is closed, nil for a process that is not our child.
	exitStatus func() string

	mu sync.Mutex
	// shutdown is the reason of QEMU's SHUTDOWN event ("guest-shutdown",
	// "host-qmp-quit", "guest-panic", ...), empty before one.
	shutdown string
	crashed  bool // a crash of the running process was reported
	detached bool // Close dropped the connection, or a newer connection replaced it: no exit event
	// changed is signalled (never blocking) on QEMU's migration and block
	// job events, so a migration reacts to them rather than to a poll.
	changed chan struct{}
}

// changes is the channel signalled on the VM's migration and block job
// events.
func (v *vm) changes() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.changed == nil {
		v.changed = make(chan struct{}, 1)
	}
	return v.changed
}

// notifyChange signals changes without blocking.
func (v *vm) notifyChange() {
	v.mu.Lock()
	if v.changed == nil {
		v.changed = make(chan struct{}, 1)
	}
	ch := v.changed
	v.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// New returns a driver. It checks that the QEMU binaries exist and that
// the accelerator is known, and does not touch any VM.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("configuring qemu driver: no state dir")
	}
	if cfg.QEMUBinary == "" {
		cfg.QEMUBinary = "qemu-system-x86_64"
	}
	if cfg.QEMUImgBinary == "" {
		cfg.QEMUImgBinary = "qemu-img"
	}
	for _, b := range []*string{&cfg.QEMUBinary, &cfg.QEMUImgBinary} {
		p, err := exec.LookPath(*b)
		if err != nil {
			return nil, fmt.Errorf("configuring qemu driver: %w", err)
		}
		*b = p
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	runDir := cfg.RunDir
	if runDir == "" {
		runDir = defaultRunDir()
	}
	// The probe is bounded by its own timeout; New has no caller's context.
	accel, err := DecideAccel(context.Background(), ProbeConfig{
		Want:       cfg.Accel,
		QEMUBinary: cfg.QEMUBinary,
		CacheFile:  filepath.Join(runDir, "accel-probe.json"),
	})
	if err != nil {
		return nil, fmt.Errorf("configuring qemu driver: %w", err)
	}
	log.Info("accelerator decided", "accel", accel.Accel, "reason", accel.Reason)
	return &Driver{
		cfg:   cfg,
		log:   log.With("driver", DriverName),
		accel: accel,
		vms:   map[string]*vm{},
		subs:  map[string]map[chan hypervisor.StateEvent]bool{},
	}, nil
}

// Name returns "qemu".
func (d *Driver) Name() string { return DriverName }

// Accel is the accelerator VMs run under: "kvm" or "tcg".
func (d *Driver) Accel() string { return d.accel.Accel }

// Capabilities says what the driver can do.
func (d *Driver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{
		Pause:         true,
		SerialConsole: true,
		VNCConsole:    true,
		KernelBoot:    true,
		CloudInit:     true,
		LiveMigration: true,
		NICHotplug:    true,
	}
}

// Info reports the accelerator and QEMU's version line.
func (d *Driver) Info(ctx context.Context) (hypervisor.Info, error) {
	out, err := exec.CommandContext(ctx, d.cfg.QEMUBinary, "--version").Output()
	if err != nil {
		return hypervisor.Info{}, fmt.Errorf("asking qemu for its version: %w", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return hypervisor.Info{Accel: d.accel.Accel, AccelReason: d.accel.Reason, Version: strings.TrimSpace(line), Confinement: d.confinement().info()}, nil
}

// Close drops the driver's QMP connections without touching the VMs, which
// keep running (as when the agent exits). A new driver finds them again
// with Recover.
func (d *Driver) Close() error {
	d.mu.Lock()
	vms := make([]*vm, 0, len(d.vms))
	for _, v := range d.vms {
		vms = append(vms, v)
	}
	d.vms = map[string]*vm{}
	d.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		v.detached = true
		v.mu.Unlock()
		v.qmp.Close()
	}
	return nil
}

func (d *Driver) runDirOnce() string {
	d.runOnce.Do(func() { d.run = d.resolveRunDir() })
	return d.run
}

// attached returns the driver's live connection to h's process, dialing
// QMP if there is none yet. It returns nil, nil when the process is gone.
func (d *Driver) attached(ctx context.Context, h *hypervisor.Handle) (*vm, error) {
	if !processAlive(h.PID, h.PIDStart) {
		return nil, nil
	}
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	d.mu.Lock()
	v := d.vms[h.UID]
	d.mu.Unlock()
	if v != nil && v.pid == h.PID && v.start == h.PIDStart {
		select {
		case <-v.qmp.Done():
		default:
			return v, nil
		}
	}
	if h.Extra[extraQMP] == "" {
		if err := d.sockets(h); err != nil {
			return nil, err
		}
	}
	if err := ensureSockLink(h); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(dctx, h.Extra[extraQMP])
	if err != nil {
		if !processAlive(h.PID, h.PIDStart) {
			return nil, nil
		}
		return nil, fmt.Errorf("connecting to qemu of vm %s: %w", h.UID, err)
	}
	nv := &vm{uid: h.UID, dir: h.Dir, pid: h.PID, start: h.PIDStart, qmp: c, exited: make(chan struct{})}
	if v != nil && v.pid == h.PID && v.start == h.PIDStart {
		// Reconnect after a dropped connection: keep the exit watcher, and
		// let the new connection's monitor report the exit.
		nv.exited, nv.child, nv.exitStatus = v.exited, v.child, v.exitStatus
		v.mu.Lock()
		v.detached = true
		nv.shutdown, nv.crashed = v.shutdown, v.crashed
		v.mu.Unlock()
	} else {
		go pollExit(nv)
	}
	d.register(nv)
	return nv, nil
}

// pollExit closes v.exited once a process that is not our child is gone.
func pollExit(v *vm) {
	for processAlive(v.pid, v.start) {
		time.Sleep(200 * time.Millisecond)
	}
	close(v.exited)
}

// errNotRunning is returned for actions that need a running VM.
var errNotRunning = errors.New("vm is not running")
