package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// Live migration, QEMU's way, with the streams carried by the agents:
// QEMU itself never listens or dials. It runs in an empty chroot as an
// unprivileged user whose loopback traffic the host refuses, and a stream
// that reaches it has already been let in by its agent.
//
// The destination QEMU starts with -incoming defer and -S, its disks made
// as new overlays of the same images and exported by its NBD server, which
// listens on a unix socket in the VM's directory (the agent's, closed to
// QEMU's user) passed to it as a descriptor. The source mirrors each disk
// into its export (blockdev-mirror, sync=top: what the overlay holds) until
// the mirrors are ready, then migrates the memory through a descriptor
// (migrate fd:) with auto-converge, and pauses before switchover: with the
// guest stopped it completes the mirrors (block-job-cancel of a ready
// mirror ends it with both sides equal) and lets the migration finish. The
// destination, whose disks stay inactive until then (late-block-activate),
// stops its NBD server and runs the guest.

// maxMigrationBandwidth lifts QEMU's default cap on migration bandwidth
// (128 MiB/s): the link between the agents decides.
const maxMigrationBandwidth = 1 << 40

// pollMigration is how often a migration's state is asked besides QEMU's
// events (MIGRATION, BLOCK_JOB_READY, JOB_STATUS_CHANGE), which wake the
// waits at once: it paces the progress reports.
const pollMigration = 100 * time.Millisecond

// migrationSteps, when set (by benchmarks), is told how long each step of
// a migration took, as the debug log is.
var migrationSteps func(uid, side, step string, took time.Duration)

// stepClock times the steps of one side of a migration.
type stepClock struct {
	log       interface{ Debug(string, ...any) }
	uid, side string
	t         time.Time
}

func newStepClock(log interface{ Debug(string, ...any) }, uid, side string) *stepClock {
	return &stepClock{log: log, uid: uid, side: side, t: time.Now()}
}

// mark records the time since the last mark as the step named step.
func (s *stepClock) mark(step string) {
	now := time.Now()
	took := now.Sub(s.t)
	s.t = now
	s.log.Debug("migration step", "vm", s.uid, "side", s.side, "step", step, "ms", float64(took.Microseconds())/1000)
	if f := migrationSteps; f != nil {
		f(s.uid, s.side, step, took)
	}
}

// waitChange waits until QEMU reports a migration or block job event, at
// most for d, or until ctx ends.
func (v *vm) waitChange(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-v.changes():
	case <-t.C:
	}
	return nil
}

var _ hypervisor.Migrator = (*Driver)(nil)

// incoming is what a VM migrating in holds besides its process.
type incoming struct {
	mu    sync.Mutex
	nbd   *net.UnixListener // nil for a VM without disks
	conns []net.Conn        // spliced disk channels
	done  bool
}

func (in *incoming) track(c ...net.Conn) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.done {
		return false
	}
	in.conns = append(in.conns, c...)
	return true
}

func (in *incoming) close() {
	in.mu.Lock()
	in.done = true
	conns := in.conns
	in.conns = nil
	in.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if in.nbd != nil {
		in.nbd.Close() // unlinks the socket
	}
}

func (d *Driver) incomingOf(uid string) *incoming {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.incoming[uid]
}

func (d *Driver) setIncoming(uid string, in *incoming) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.incoming == nil {
		d.incoming = map[string]*incoming{}
	}
	if in == nil {
		delete(d.incoming, uid)
	} else {
		d.incoming[uid] = in
	}
}

// PrepareIncoming makes the VM and starts QEMU waiting for the migration,
// its disks exported for the source's mirrors.
func (d *Driver) PrepareIncoming(ctx context.Context, cfg hypervisor.VMConfig) (h *hypervisor.Handle, err error) {
	clock := newStepClock(d.log, cfg.UID, "target")
	h, err = d.Create(ctx, cfg)
	if err != nil {
		return nil, err
	}
	clock.mark("create")
	defer func() {
		if err != nil {
			if derr := d.AbortIncoming(context.Background(), h); derr != nil {
				d.log.Error("rolling back an incoming vm", "vm", h.UID, "err", derr)
			}
		}
	}()
	cfg.StartPaused = true
	if err := d.start(ctx, h, cfg, true); err != nil {
		return nil, err
	}
	clock.mark("start-qemu")
	v, err := d.attached(ctx, h)
	if err != nil || v == nil {
		return nil, fmt.Errorf("preparing incoming vm %s: qemu is gone: %w", h.UID, err)
	}
	if err := setCapabilities(ctx, v.qmp, map[string]bool{"late-block-activate": true, "events": true}); err != nil {
		return nil, fmt.Errorf("preparing incoming vm %s: %w", h.UID, err)
	}
	in := &incoming{}
	d.setIncoming(h.UID, in)
	if len(mirrored(h.Disks)) == 0 {
		// Every disk on shared storage: only the memory moves. The
		// disks stay inactive here (-incoming) until the switchover, so
		// the source keeps their locks until it lets them go.
		clock.mark("capabilities")
		return h, nil
	}
	path := filepath.Join(filepath.Dir(h.Extra[extraQMP]), nbdSock)
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening for the disks of incoming vm %s: %w", h.UID, err)
	}
	in.nbd = ln
	f, err := ln.File()
	if err != nil {
		return nil, fmt.Errorf("listening for the disks of incoming vm %s: %w", h.UID, err)
	}
	err = getFD(ctx, v.qmp, "pv-nbd", f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("passing the nbd listener to vm %s: %w", h.UID, err)
	}
	if err := v.qmp.Execute(ctx, "nbd-server-start", map[string]any{
		"addr": map[string]any{"type": "fd", "data": map[string]string{"str": "pv-nbd"}},
	}, nil); err != nil {
		return nil, fmt.Errorf("starting the nbd server of vm %s: %w", h.UID, err)
	}
	for i, df := range h.Disks {
		if df.Shared {
			continue
		}
		if err := v.qmp.Execute(ctx, "nbd-server-add", map[string]any{
			"device": diskNode(i), "name": df.Name, "writable": true,
		}, nil); err != nil {
			return nil, fmt.Errorf("exporting disk %s of vm %s: %w", df.Name, h.UID, err)
		}
	}
	clock.mark("nbd-export")
	d.log.Info("waiting for incoming migration", "vm", h.UID, "disks", len(h.Disks))
	return h, nil
}

// mirrored are the disks a migration copies: those not on shared storage.
func mirrored(disks []hypervisor.DiskFile) []hypervisor.DiskFile {
	var out []hypervisor.DiskFile
	for _, df := range disks {
		if !df.Shared {
			out = append(out, df)
		}
	}
	return out
}

// diskNode is the block node of the VM's i-th disk (BuildArgs).
func diskNode(i int) string { return "disk" + strconv.Itoa(i) }

// Incoming hands the memory stream to QEMU, or splices a disk's channel to
// the NBD server.
func (d *Driver) Incoming(ctx context.Context, h *hypervisor.Handle, channel string, conn net.Conn) error {
	in := d.incomingOf(h.UID)
	if in == nil {
		conn.Close()
		return fmt.Errorf("receiving %s of vm %s: no migration is awaited", channel, h.UID)
	}
	if name, ok := hypervisor.DiskOfChannel(channel); ok {
		if in.nbd == nil || !hasMirroredDisk(h, name) {
			conn.Close()
			return fmt.Errorf("receiving disk %q of vm %s: no such disk", name, h.UID)
		}
		var dl net.Dialer
		u, err := dl.DialContext(ctx, "unix", in.nbd.Addr().String())
		if err != nil {
			conn.Close()
			return fmt.Errorf("connecting disk %s of vm %s to its nbd server: %w", name, h.UID, err)
		}
		if !in.track(conn, u) {
			conn.Close()
			u.Close()
			return fmt.Errorf("receiving disk %s of vm %s: the migration ended", name, h.UID)
		}
		go splice(conn, u)
		return nil
	}
	if channel != hypervisor.ChannelMemory {
		conn.Close()
		return fmt.Errorf("receiving vm %s: unknown migration channel %q", h.UID, channel)
	}
	defer conn.Close()
	v, err := d.attached(ctx, h)
	if err != nil || v == nil {
		return fmt.Errorf("receiving memory of vm %s: qemu is gone: %w", h.UID, err)
	}
	if err := passConn(ctx, v.qmp, "pv-mig", conn); err != nil {
		return fmt.Errorf("receiving memory of vm %s: %w", h.UID, err)
	}
	if err := v.qmp.Execute(ctx, "migrate-incoming", map[string]string{"uri": "fd:pv-mig"}, nil); err != nil {
		return fmt.Errorf("receiving memory of vm %s: %w", h.UID, err)
	}
	return nil
}

// hasMirroredDisk says whether h has a disk named name that a migration
// copies (a shared one is never written through the NBD server).
func hasMirroredDisk(h *hypervisor.Handle, name string) bool {
	for _, df := range mirrored(h.Disks) {
		if df.Name == name {
			return true
		}
	}
	return false
}

// splice copies between a and b both ways until either ends, then closes
// both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// passConn hands QEMU a copy of conn's descriptor under name.
func passConn(ctx context.Context, c *qmp.Client, name string, conn net.Conn) error {
	fc, ok := conn.(interface{ File() (*os.File, error) })
	if !ok {
		return fmt.Errorf("passing a %T to qemu: not a socket", conn)
	}
	f, err := fc.File()
	if err != nil {
		return fmt.Errorf("passing a connection to qemu: %w", err)
	}
	defer f.Close()
	return getFD(ctx, c, name, f)
}

// getFD hands QEMU a copy of f's descriptor under name (QMP getfd), for a
// later command to use as "fd:<name>". f stays the caller's to close.
func getFD(ctx context.Context, c *qmp.Client, name string, f *os.File) error {
	return c.ExecuteFile(ctx, "getfd", map[string]string{"fdname": name}, nil, f)
}

// migrationInfo is what query-migrate answers.
type migrationInfo struct {
	Status           string `json:"status"`
	ErrorDesc        string `json:"error-desc"`
	ExpectedDowntime int64  `json:"expected-downtime"`
	Throttle         int    `json:"cpu-throttle-percentage"`
	RAM              *struct {
		Total          int64 `json:"total"`
		Transferred    int64 `json:"transferred"`
		Remaining      int64 `json:"remaining"`
		DirtyPagesRate int64 `json:"dirty-pages-rate"`
		PageSize       int64 `json:"page-size"`
	} `json:"ram"`
}

func queryMigrate(ctx context.Context, c *qmp.Client) (migrationInfo, error) {
	var mi migrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &mi)
	return mi, err
}

// FinishIncoming waits until the memory has arrived, stops the NBD server
// and runs the guest.
func (d *Driver) FinishIncoming(ctx context.Context, h *hypervisor.Handle) error {
	in := d.incomingOf(h.UID)
	if in == nil {
		return fmt.Errorf("finishing incoming vm %s: no migration is awaited", h.UID)
	}
	clock := newStepClock(d.log, h.UID, "target")
	for {
		v, err := d.attached(ctx, h)
		if err != nil || v == nil {
			return fmt.Errorf("finishing incoming vm %s: qemu is gone: %w", h.UID, err)
		}
		mi, err := queryMigrate(ctx, v.qmp)
		if err != nil {
			return fmt.Errorf("finishing incoming vm %s: %w", h.UID, err)
		}
		switch mi.Status {
		case "completed":
			clock.mark("receive")
			if in.nbd != nil {
				if err := v.qmp.Execute(ctx, "nbd-server-stop", nil, nil); err != nil {
					return fmt.Errorf("finishing incoming vm %s: stopping its nbd server: %w", h.UID, err)
				}
			}
			in.close()
			d.setIncoming(h.UID, nil)
			if err := v.qmp.Execute(ctx, "cont", nil, nil); err != nil {
				return fmt.Errorf("running migrated vm %s: %w", h.UID, err)
			}
			clock.mark("run")
			d.log.Info("vm migrated in", "vm", h.UID)
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("receiving vm %s: migration %s: %s", h.UID, mi.Status, mi.ErrorDesc)
		}
		if err := v.waitChange(ctx, pollMigration); err != nil {
			return fmt.Errorf("finishing incoming vm %s: %w", h.UID, err)
		}
	}
}

// AbortIncoming kills the waiting QEMU and removes the VM's directory.
func (d *Driver) AbortIncoming(ctx context.Context, h *hypervisor.Handle) error {
	if in := d.incomingOf(h.UID); in != nil {
		in.close()
		d.setIncoming(h.UID, nil)
	}
	return d.Destroy(ctx, h, false)
}

func setCapabilities(ctx context.Context, c *qmp.Client, caps map[string]bool) error {
	var list []map[string]any
	for name, on := range caps {
		list = append(list, map[string]any{"capability": name, "state": on})
	}
	if err := c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list}, nil); err != nil {
		return fmt.Errorf("setting migration capabilities: %w", err)
	}
	return nil
}

// mirrorNode is the NBD client node and the job mirroring disk i.
func mirrorNode(i int) string { return "pv-mig-disk" + strconv.Itoa(i) }

// blockJob is one entry of query-block-jobs.
type blockJob struct {
	Device string `json:"device"`
	Len    int64  `json:"len"`
	Offset int64  `json:"offset"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
}

// MigrateOut migrates the running VM h to the destination dial reaches.
func (d *Driver) MigrateOut(ctx context.Context, h *hypervisor.Handle, dial hypervisor.MigrationDialer, progress func(hypervisor.MigrationProgress)) (err error) {
	if err := checkHandle(h); err != nil {
		return err
	}
	if progress == nil {
		progress = func(hypervisor.MigrationProgress) {}
	}
	v, err := d.attached(ctx, h)
	if err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, hypervisor.ErrNotRunning)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := v.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	if st.Status != "running" {
		return fmt.Errorf("migrating vm %s: its guest is %s, not running: %w", h.UID, st.Status, hypervisor.ErrNotRunning)
	}
	log := d.log.With("vm", h.UID, "pid", h.PID)
	clock := newStepClock(d.log, h.UID, "source")
	m := &outgoing{c: v.qmp, v: v, log: log}
	defer func() {
		if err != nil {
			m.rollback()
		}
	}()
	// Shared disks are the target's already: only the others are mirrored,
	// and without them the memory goes straight away.
	toMirror := false
	for _, df := range h.Disks {
		toMirror = toMirror || !df.Shared
	}
	if err := setCapabilities(ctx, v.qmp, map[string]bool{
		"auto-converge": true, "pause-before-switchover": toMirror, "events": true,
	}); err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	if err := v.qmp.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxMigrationBandwidth}, nil); err != nil {
		return fmt.Errorf("migrating vm %s: setting its bandwidth: %w", h.UID, err)
	}
	clock.mark("capabilities")
	// Mirrors first: the memory goes once the disks are in step.
	for i, df := range h.Disks {
		if df.Shared {
			continue
		}
		if err := m.mirror(ctx, dial, i, df.Name); err != nil {
			return fmt.Errorf("migrating vm %s: %w", h.UID, err)
		}
	}
	if toMirror {
		clock.mark("mirror-start")
	}
	if err := m.waitMirrors(ctx, progress); err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	if toMirror {
		clock.mark("mirror-ready")
	}
	conn, err := dial(ctx, hypervisor.ChannelMemory)
	if err != nil {
		return fmt.Errorf("migrating vm %s: connecting its memory channel: %w", h.UID, err)
	}
	err = passConn(ctx, v.qmp, "pv-mig", conn)
	conn.Close()
	if err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	if err := v.qmp.Execute(ctx, "migrate", map[string]string{"uri": "fd:pv-mig"}, nil); err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	m.started = true
	clock.mark("memory-start")
	log.Info("migrating vm", "disks", len(m.mirrors))
	if err := m.memory(ctx, clock, progress); err != nil {
		return fmt.Errorf("migrating vm %s: %w", h.UID, err)
	}
	return nil
}

// memory follows the memory migration until it completes: at the pause
// before switchover it completes the mirrors and lets QEMU go on, once.
// QEMU still answers pre-switchover for a moment after migrate-continue,
// until its migration thread runs again; a second migrate-continue then
// would find it in another state and fail a migration that is going well.
func (m *outgoing) memory(ctx context.Context, clock *stepClock, progress func(hypervisor.MigrationProgress)) error {
	continued := false
	for {
		mi, qerr := queryMigrate(ctx, m.c)
		if qerr != nil {
			return qerr
		}
		p := hypervisor.MigrationProgress{Phase: hypervisor.PhaseMemory, ExpectedDowntimeMs: mi.ExpectedDowntime, Throttle: mi.Throttle}
		if r := mi.RAM; r != nil {
			p.MemoryTotal, p.MemorySent, p.MemoryRemaining = r.Total, r.Transferred, r.Remaining
			p.DirtyRate = r.DirtyPagesRate * max(r.PageSize, 4096)
		}
		switch mi.Status {
		case "pre-switchover":
			p.Phase = hypervisor.PhaseSwitchover
			progress(p)
			if continued {
				break
			}
			clock.mark("memory")
			if err := m.completeMirrors(ctx); err != nil {
				return err
			}
			continued = true
			if err := m.c.Execute(ctx, "migrate-continue", map[string]string{"state": "pre-switchover"}, nil); err != nil {
				// Seen: QEMU answers "not in expected state: completed" when
				// the migration went through meanwhile. Then the target
				// holds the guest: failing here would leave it paused on
				// both sides.
				if done, qerr := queryMigrate(ctx, m.c); qerr != nil || done.Status != "completed" {
					return err
				}
				m.log.Warn("the migration completed before it was told to continue", "err", err)
			}
			clock.mark("mirror-complete")
		case "device":
			p.Phase = hypervisor.PhaseSwitchover
			progress(p)
		case "completed":
			clock.mark("switchover")
			p.Phase = hypervisor.PhaseCompleted
			progress(p)
			m.log.Info("vm migrated out")
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", mi.Status, mi.ErrorDesc)
		default:
			progress(p)
		}
		if ctx.Err() == nil && m.wait(ctx) == nil {
			continue
		}
		// Cancelled: unless it completed meanwhile, when the target
		// holds the guest and this one must never run again.
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		mi, qerr = queryMigrate(qctx, m.c)
		cancel()
		if qerr == nil && mi.Status == "completed" {
			m.log.Info("vm migrated out before the cancel")
			return nil
		}
		return ctx.Err()
	}
}

// outgoing is a migration leaving this host: its mirrors, and whether the
// memory migration started.
type outgoing struct {
	c   *qmp.Client
	v   *vm
	log interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
	mirrors []string // job ids, which are also the target nodes' names
	nodes   []string // NBD client nodes added
	started bool
}

func (m *outgoing) mirror(ctx context.Context, dial hypervisor.MigrationDialer, i int, name string) error {
	conn, err := dial(ctx, hypervisor.ChannelDisk(name))
	if err != nil {
		return fmt.Errorf("connecting the channel of disk %s: %w", name, err)
	}
	node := mirrorNode(i)
	err = passConn(ctx, m.c, node, conn)
	conn.Close()
	if err != nil {
		return fmt.Errorf("mirroring disk %s: %w", name, err)
	}
	if err := m.c.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "nbd", "node-name": node, "export": name,
		"server": map[string]string{"type": "fd", "str": node},
	}, nil); err != nil {
		m.c.Execute(context.Background(), "closefd", map[string]string{"fdname": node}, nil)
		return fmt.Errorf("opening the destination of disk %s: %w", name, err)
	}
	m.nodes = append(m.nodes, node)
	if err := m.c.Execute(ctx, "blockdev-mirror", map[string]any{
		"job-id": node, "device": diskNode(i), "target": node, "sync": "top",
	}, nil); err != nil {
		return fmt.Errorf("mirroring disk %s: %w", name, err)
	}
	m.mirrors = append(m.mirrors, node)
	return nil
}

func (m *outgoing) jobs(ctx context.Context) (map[string]blockJob, error) {
	var list []blockJob
	if err := m.c.Execute(ctx, "query-block-jobs", nil, &list); err != nil {
		return nil, err
	}
	jobs := map[string]blockJob{}
	for _, j := range list {
		jobs[j.Device] = j
	}
	return jobs, nil
}

// waitMirrors waits until every mirror is ready: the destination holds
// what the disk holds, and the guest's writes go to both.
func (m *outgoing) waitMirrors(ctx context.Context, progress func(hypervisor.MigrationProgress)) error {
	for len(m.mirrors) > 0 {
		jobs, err := m.jobs(ctx)
		if err != nil {
			return fmt.Errorf("asking how the disks' mirrors go: %w", err)
		}
		p := hypervisor.MigrationProgress{Phase: hypervisor.PhaseStorage}
		ready := true
		for _, id := range m.mirrors {
			j, ok := jobs[id]
			if !ok {
				return fmt.Errorf("the mirror %s ended before it was ready (see qemu.log)", id)
			}
			p.DiskTotal += j.Len
			p.DiskDone += j.Offset
			ready = ready && j.Ready
		}
		progress(p)
		if ready {
			return nil
		}
		if err := m.wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// completeMirrors ends the ready mirrors with the guest paused, so the
// destination's disks equal the source's, and closes the NBD clients.
func (m *outgoing) completeMirrors(ctx context.Context) error {
	for _, id := range m.mirrors {
		if err := m.c.Execute(ctx, "block-job-cancel", map[string]any{"device": id}, nil); err != nil {
			return fmt.Errorf("completing the mirror %s: %w", id, err)
		}
	}
	if err := m.waitJobsGone(ctx); err != nil {
		return err
	}
	m.mirrors = nil
	return m.dropNodes(ctx)
}

func (m *outgoing) waitJobsGone(ctx context.Context) error {
	for {
		jobs, err := m.jobs(ctx)
		if err != nil {
			return fmt.Errorf("asking how the disks' mirrors go: %w", err)
		}
		left := 0
		for _, id := range m.mirrors {
			if _, ok := jobs[id]; ok {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if err := m.wait(ctx); err != nil {
			return err
		}
	}
}

// wait waits for a block job or migration event, or a poll's time.
func (m *outgoing) wait(ctx context.Context) error {
	if m.v == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollMigration):
			return nil
		}
	}
	return m.v.waitChange(ctx, pollMigration)
}

func (m *outgoing) dropNodes(ctx context.Context) error {
	var errs []error
	for _, n := range m.nodes {
		if err := m.c.Execute(ctx, "blockdev-del", map[string]string{"node-name": n}, nil); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", n, err))
		}
	}
	m.nodes = nil
	return errors.Join(errs...)
}

// rollback cancels what a failed or cancelled migration started, leaving
// the guest running on the source. It does not depend on the caller's
// context.
func (m *outgoing) rollback() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if m.started {
		m.c.Execute(ctx, "migrate_cancel", nil, nil)
		for ctx.Err() == nil {
			mi, err := queryMigrate(ctx, m.c)
			if err == nil && mi.Status == "completed" {
				// Too late to cancel: the target holds the guest, and
				// resuming it here would run it twice.
				m.log.Warn("the migration completed before it could be cancelled: the guest stays paused here")
				return
			}
			if err != nil || (mi.Status != "cancelling" && mi.Status != "active" && mi.Status != "pre-switchover" && mi.Status != "device" && mi.Status != "setup") {
				break
			}
			m.wait(ctx)
		}
	}
	for _, id := range m.mirrors {
		m.c.Execute(ctx, "block-job-cancel", map[string]any{"device": id, "force": true}, nil)
	}
	if err := m.waitJobsGone(ctx); err != nil {
		m.log.Warn("cancelling the disks' mirrors", "err", err)
	}
	m.mirrors = nil
	if err := m.dropNodes(ctx); err != nil {
		m.log.Warn("closing the disks' mirror targets", "err", err)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := m.c.Execute(ctx, "query-status", nil, &st); err == nil && st.Status != "running" {
		if err := m.c.Execute(ctx, "cont", nil, nil); err != nil {
			m.log.Warn("resuming the vm after a failed migration", "status", st.Status, "err", err)
		}
	}
}
