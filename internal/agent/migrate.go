package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Live migration between two agents. The target agent listens, for one
// migration alone, on a fresh port of its host's address, and records the
// address and a fresh random token with the server, which lets only the
// source's agent read them. Each connection the source makes starts with
// a fixed-size header naming the token and the channel (the memory, or one
// disk); the target lets in each channel once, and only with the token,
// before it hands the connection to its driver. The listener closes when
// the migration ends. The hypervisor never listens itself.

// Header of a migration connection: magic, token (hex), channel (padded).
const (
	migMagic      = "PVMIG1 "
	migTokenLen   = 64
	migChannelLen = 80
	migHeaderLen  = len(migMagic) + migTokenLen + 1 + migChannelLen + 1
)

// migHeaderTimeout bounds the wait for a connection's header.
const migHeaderTimeout = 10 * time.Second

func migHeader(token, channel string) ([]byte, error) {
	if len(token) != migTokenLen || len(channel) > migChannelLen || strings.ContainsAny(channel, " \n") {
		return nil, fmt.Errorf("migration channel %q or token cannot be sent", channel)
	}
	return []byte(migMagic + token + " " + channel + strings.Repeat(" ", migChannelLen-len(channel)) + "\n"), nil
}

// readMigHeader reads a connection's header and returns its channel, once
// its token matches.
func readMigHeader(conn net.Conn, token string) (string, error) {
	buf := make([]byte, migHeaderLen)
	conn.SetReadDeadline(time.Now().Add(migHeaderTimeout))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return "", fmt.Errorf("reading migration header: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	s := string(buf)
	if !strings.HasPrefix(s, migMagic) || s[len(s)-1] != '\n' {
		return "", errors.New("not a migration header")
	}
	got := s[len(migMagic) : len(migMagic)+migTokenLen]
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return "", errors.New("wrong migration token")
	}
	return strings.TrimRight(s[len(migMagic)+migTokenLen+1:len(s)-1], " "), nil
}

// migrator is the agent's driver as a Migrator.
func (a *Agent) migrator() (hypervisor.Migrator, error) {
	m, ok := a.driver.(hypervisor.Migrator)
	if !ok {
		return nil, fmt.Errorf("driver %s cannot migrate vms: %w", a.driver.Name(), hypervisor.ErrNotSupported)
	}
	return m, nil
}

// migrationListenAddr is where the agent listens for incoming
// migrations: its host's address, or the loopback address when it has
// none (one machine).
func (a *Agent) migrationListenAddr() string {
	host := a.cfg.Address
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "0")
}

// incomingMig is a migration this host receives.
type incomingMig struct {
	op     string
	cancel context.CancelFunc
	done   chan struct{} // closed when it ended
	mu     sync.Mutex
	ok     bool // the VM runs here
}

func (in *incomingMig) succeeded() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ok
}

// outgoingMig is a migration this host sends.
type outgoingMig struct {
	op     string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	status api.MigrationStatus
	ok     bool // the target holds the VM; this host's copy is paused for good
}

func (o *outgoingMig) set(st api.MigrationStatus) {
	o.mu.Lock()
	o.status = st
	o.mu.Unlock()
}

func (o *outgoingMig) get() (api.MigrationStatus, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.status, o.ok
}

// receive starts receiving vm, which migrates here: the VM made with its
// hypervisor waiting, a listener for this migration, its address and
// token recorded with the server; then, in the background, the
// connections let in and the VM run once its memory arrived.
func (w *worker) receive(ctx context.Context, vm *api.VM) error {
	mig := vm.Spec.Migration
	if w.in != nil {
		if w.in.op == mig.Operation {
			return nil
		}
		w.endIncoming()
	}
	m, err := w.a.migrator()
	if err == nil && mig.Offline {
		m, err = w.a.diskReceiver()
	}
	if err != nil {
		return w.reportIncomingFailed(ctx, mig.Operation, err)
	}
	if w.currentHandle() != nil {
		return w.reportIncomingFailed(ctx, mig.Operation, errors.New("this host already has the vm"))
	}
	cfg, err := w.a.vmConfig(ctx, vm)
	if err != nil {
		return w.reportIncomingFailed(ctx, mig.Operation, err)
	}
	h, err := m.PrepareIncoming(ctx, cfg)
	if err != nil {
		return w.reportIncomingFailed(ctx, mig.Operation, err)
	}
	abort := func(cause error) error {
		if derr := m.AbortIncoming(context.WithoutCancel(ctx), h); derr != nil {
			w.log.Error("removing an incoming vm", "err", derr)
		}
		removeHandle(w.a.cfg.StateDir, h.UID)
		w.setHandle(nil)
		return w.reportIncomingFailed(ctx, mig.Operation, cause)
	}
	if err := w.persist(h); err != nil {
		return abort(err)
	}
	if !mig.Offline {
		// A stopped VM's volumes are plugged in when it starts.
		if err := w.plugIncomingVolumes(ctx, h, vm); err != nil {
			return abort(err)
		}
	}
	ln, err := net.Listen("tcp", w.a.migrationListenAddr())
	if err != nil {
		return abort(fmt.Errorf("listening for the migration: %w", err))
	}
	tok := make([]byte, migTokenLen/2)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	rec := api.AgentMigration{Operation: mig.Operation, State: api.IncomingListening, Address: ln.Addr().String(), Token: token}
	if _, err := w.a.c.PutAgentMigration(ctx, rec); err != nil {
		ln.Close()
		return abort(fmt.Errorf("recording where the migration goes: %w", err))
	}
	ictx, cancel := context.WithCancel(w.runCtx)
	in := &incomingMig{op: mig.Operation, cancel: cancel, done: make(chan struct{})}
	w.in = in
	log := w.log.With("migration", mig.Operation)
	log.Info("receiving vm", "listen", ln.Addr().String())
	go func() {
		<-ictx.Done()
		ln.Close()
	}()
	go w.acceptMigration(ictx, ln, m, h, token, log)
	go func() {
		defer close(in.done)
		err := m.FinishIncoming(ictx, h)
		cancel() // the listener closes
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ictx), 30*time.Second)
		defer rcancel()
		if err != nil {
			log.Warn("receiving vm failed", "err", err)
			if derr := m.AbortIncoming(rctx, h); derr != nil {
				log.Error("removing an incoming vm", "err", derr)
			}
			removeHandle(w.a.cfg.StateDir, h.UID)
			if ictx.Err() == nil || !errors.Is(err, context.Canceled) {
				w.a.c.PutAgentMigration(rctx, api.AgentMigration{Operation: in.op, State: api.IncomingFailed, Error: err.Error()})
			}
			return
		}
		in.mu.Lock()
		in.ok = true
		in.mu.Unlock()
		log.Info("vm received", "offline", mig.Offline)
		if _, err := w.a.c.PutAgentMigration(rctx, api.AgentMigration{Operation: in.op, State: api.IncomingRunning}); err != nil {
			log.Warn("recording the received vm", "err", err)
		}
	}()
	return nil
}

// plugIncomingVolumes plugs the VM's volumes (on shared storage: the
// server lets no other volume migrate) into the waiting hypervisor, each
// into the port the source reports it in, so the guest's state fits. The
// hypervisor opens them inactive until the switchover: the source keeps
// their locks until it lets them go.
func (w *worker) plugIncomingVolumes(ctx context.Context, h *hypervisor.Handle, vm *api.VM) error {
	if len(vm.Spec.Volumes) == 0 {
		return nil
	}
	va, ok := w.a.driver.(hypervisor.VolumeAttacher)
	if !ok {
		return fmt.Errorf("driver %s cannot attach volumes: %w", w.a.driver.Name(), hypervisor.ErrNotSupported)
	}
	for _, vc := range incomingVolumes(vm) {
		if err := va.AttachVolume(ctx, h, vc); err != nil {
			return fmt.Errorf("plugging in volume %s before the memory arrives: %w", vc.Name, err)
		}
	}
	return nil
}

// incomingVolumes are the VM's volumes as a migration's target plugs
// them: in the source's ports, ordered by port so that a volume the
// source did not report goes into the first port left free. The root
// volume is not among them: the target's hypervisor opens it at start,
// as the source's did.
func incomingVolumes(vm *api.VM) []hypervisor.VolumeConfig {
	port := map[string]string{}
	for _, st := range vm.Status.Volumes {
		port[st.Volume] = st.Port
	}
	var out []hypervisor.VolumeConfig
	for _, a := range vm.Spec.Volumes {
		if a.Boot {
			continue
		}
		out = append(out, hypervisor.VolumeConfig{Name: a.Volume, Path: a.Path, Export: a.Export, IOPS: a.Limits.IOPS, BPS: a.Limits.BPS, Port: port[a.Volume]})
	}
	slices.SortStableFunc(out, func(a, b hypervisor.VolumeConfig) int {
		switch {
		case a.Port == b.Port:
			return 0
		case a.Port == "":
			return 1
		case b.Port == "":
			return -1
		}
		return cmp.Compare(portNumber(a.Port), portNumber(b.Port))
	})
	return out
}

// portNumber is K of a port named pvslotK, or -1.
func portNumber(p string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(p, "pvslot"))
	if err != nil {
		return -1
	}
	return n
}

// diskReceiver receives a stopped VM: Create, then its disks copied
// (hypervisor.DiskMover), each channel once.
func (a *Agent) diskReceiver() (*diskReceiver, error) {
	dm, ok := a.driver.(hypervisor.DiskMover)
	if !ok {
		return nil, fmt.Errorf("driver %s cannot move a stopped vm's disks: %w", a.driver.Name(), hypervisor.ErrNotSupported)
	}
	return &diskReceiver{d: a.driver, dm: dm, changed: make(chan struct{}, 1)}, nil
}

// diskReceiver is the target's side of a stopped VM's move, as a
// Migrator: FinishIncoming returns once every disk is whole here.
type diskReceiver struct {
	d       hypervisor.Driver
	dm      hypervisor.DiskMover
	mu      sync.Mutex
	want    int
	got     map[string]bool
	err     error
	changed chan struct{}
}

func (r *diskReceiver) PrepareIncoming(ctx context.Context, cfg hypervisor.VMConfig) (*hypervisor.Handle, error) {
	h, err := r.d.Create(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.want, r.got = len(hypervisor.MovedDisks(h)), map[string]bool{}
	r.mu.Unlock()
	return h, nil
}

func (r *diskReceiver) Incoming(ctx context.Context, h *hypervisor.Handle, channel string, conn net.Conn) error {
	err := r.dm.ReceiveDisk(ctx, h, channel, conn)
	r.mu.Lock()
	if err != nil {
		r.err = errors.Join(r.err, err)
	} else {
		r.got[channel] = true
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return err
}

func (r *diskReceiver) FinishIncoming(ctx context.Context, h *hypervisor.Handle) error {
	for {
		r.mu.Lock()
		err, done := r.err, len(r.got) >= r.want
		r.mu.Unlock()
		switch {
		case err != nil:
			return err
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.changed:
		}
	}
}

func (r *diskReceiver) AbortIncoming(ctx context.Context, h *hypervisor.Handle) error {
	return r.d.Destroy(ctx, h, false)
}

func (r *diskReceiver) MigrateOut(context.Context, *hypervisor.Handle, hypervisor.MigrationDialer, func(hypervisor.MigrationProgress)) error {
	return fmt.Errorf("a disk receiver sends nothing: %w", hypervisor.ErrNotSupported)
}

// acceptMigration lets in each channel once, with the token, until ctx
// ends.
func (w *worker) acceptMigration(ctx context.Context, ln net.Listener, m hypervisor.Migrator, h *hypervisor.Handle, token string, log interface{ Warn(string, ...any) }) {
	seen := map[string]bool{}
	var mu sync.Mutex
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			channel, err := readMigHeader(conn, token)
			if err == nil {
				mu.Lock()
				if seen[channel] {
					err = fmt.Errorf("channel %q was already let in", channel)
				}
				seen[channel] = true
				mu.Unlock()
			}
			if err != nil {
				log.Warn("refusing a migration connection", "from", conn.RemoteAddr().String(), "err", err)
				conn.Close()
				return
			}
			if err := m.Incoming(ctx, h, channel, conn); err != nil {
				log.Warn("receiving a migration channel", "channel", channel, "err", err)
			}
		}()
	}
}

func (w *worker) reportIncomingFailed(ctx context.Context, op string, cause error) error {
	if _, err := w.a.c.PutAgentMigration(ctx, api.AgentMigration{Operation: op, State: api.IncomingFailed, Error: cause.Error()}); err != nil {
		w.log.Warn("recording a failed incoming migration", "err", err)
	}
	return fmt.Errorf("receiving vm: %w", cause)
}

// endIncoming stops receiving: a VM that does not run here yet is
// removed. The VM's worker calls it when the migration ended without
// the VM coming here.
func (w *worker) endIncoming() {
	in := w.in
	if in == nil {
		return
	}
	w.in = nil
	in.cancel()
	<-in.done
	if !in.succeeded() {
		w.setHandle(nil)
		w.unsubscribe()
	}
}

// send starts migrating vm to its target in the background.
func (w *worker) send(vm *api.VM) {
	mig := vm.Spec.Migration
	if w.out != nil && w.out.op == mig.Operation {
		return
	}
	w.endOutgoing()
	h := w.currentHandle()
	ctx, cancel := context.WithCancel(w.runCtx)
	o := &outgoingMig{op: mig.Operation, cancel: cancel, done: make(chan struct{}),
		status: api.MigrationStatus{Operation: mig.Operation, Phase: hypervisor.PhaseStorage}}
	w.out = o
	log := w.log.With("migration", mig.Operation, "target", mig.Target)
	go func() {
		defer close(o.done)
		err := w.migrateOut(ctx, h, o, mig.Offline, log)
		if err == nil {
			// Also when cancelled too late: the target holds the guest.
			o.mu.Lock()
			o.ok = true
			o.mu.Unlock()
		}
		if ctx.Err() != nil {
			return // cancelled: the worker knows
		}
		st, _ := o.get()
		if err != nil {
			log.Warn("migrating vm failed", "err", err)
			st.Phase, st.Error = api.MigrationFailed, err.Error()
		} else {
			st.Phase = hypervisor.PhaseCompleted
			log.Info("vm migrated; waiting for the server to move it")
		}
		o.set(st)
		w.poke()
	}()
}

// migrateOut waits for the target's address, then migrates.
func (w *worker) migrateOut(ctx context.Context, h *hypervisor.Handle, o *outgoingMig, offline bool, log interface{ Info(string, ...any) }) error {
	m, err := w.a.migrator()
	if err != nil {
		return err
	}
	dm, ok := w.a.driver.(hypervisor.DiskMover)
	if offline && !ok {
		return fmt.Errorf("driver %s cannot move a stopped vm's disks: %w", w.a.driver.Name(), hypervisor.ErrNotSupported)
	}
	if h == nil {
		return errors.New("this host has no process for the vm")
	}
	var rec *api.AgentMigration
	for rec == nil || rec.State != api.IncomingListening || rec.Address == "" {
		if rec != nil && rec.State == api.IncomingFailed {
			return fmt.Errorf("the target could not receive the vm: %s", rec.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		r, err := w.a.c.AgentMigration(ctx, o.op)
		if err == nil {
			rec = r
		}
	}
	log.Info("sending vm", "to", rec.Address)
	dial := func(ctx context.Context, channel string) (net.Conn, error) {
		hdr, err := migHeader(rec.Token, channel)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", rec.Address)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", rec.Address, err)
		}
		if _, err := conn.Write(hdr); err != nil {
			conn.Close()
			return nil, fmt.Errorf("opening channel %s: %w", channel, err)
		}
		return conn, nil
	}
	if offline {
		return dm.SendDisks(ctx, h, dial)
	}
	last := time.Time{}
	return m.MigrateOut(ctx, h, dial, func(p hypervisor.MigrationProgress) {
		o.set(api.MigrationStatus{Operation: o.op, Phase: p.Phase, DiskTotal: p.DiskTotal, DiskDone: p.DiskDone,
			MemoryTotal: p.MemoryTotal, MemorySent: p.MemorySent, MemoryRemaining: p.MemoryRemaining,
			DirtyRate: p.DirtyRate, ExpectedDowntimeMs: p.ExpectedDowntimeMs, Throttle: p.Throttle})
		if time.Since(last) > 500*time.Millisecond {
			last = time.Now()
			w.poke()
		}
	})
}

// endOutgoing cancels a migration this host sends, if one runs, and waits
// for the guest to run here again.
func (w *worker) endOutgoing() {
	o := w.out
	if o == nil {
		return
	}
	w.out = nil
	o.cancel()
	<-o.done
}

// poke asks the worker to report the migration's progress.
func (w *worker) poke() {
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

// endMigrations runs when the worker ends (the VM left this host): a VM
// migrated away is destroyed here, one that did not arrive is removed.
func (w *worker) endMigrations() {
	if o := w.out; o != nil {
		// The VM left this host, possibly before this side saw its
		// migration complete: wait for it to say.
		w.endOutgoing()
		if !o.succeeded() {
			o = nil
		}
		w.out = o
	}
	if o := w.out; o != nil && o.succeeded() {
		if h := w.currentHandle(); h != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := w.a.driver.Destroy(ctx, h, false); err != nil {
				w.log.Error("removing the vm migrated away", "err", err)
			} else {
				removeHandle(w.a.cfg.StateDir, h.UID)
				w.forgetHandle(h.UID)
				w.log.Info("vm migrated away; its process and files here are gone")
			}
			cancel()
		}
		w.out = nil
	}
	w.endOutgoing()
	if in := w.in; in != nil {
		h := w.currentHandle()
		w.endIncoming()
		if in.succeeded() && h != nil {
			// It ran here, but the server kept the VM on its source.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := w.a.driver.Destroy(ctx, h, false); err != nil {
				w.log.Error("removing a received vm the server kept on its source", "err", err)
			} else {
				removeHandle(w.a.cfg.StateDir, h.UID)
			}
			cancel()
		}
		w.forgetHandle(w.uid)
	}
}

func (o *outgoingMig) succeeded() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ok
}

// forgetHandle drops a handle forget handed back to the agent, once its
// VM is gone from this host.
func (w *worker) forgetHandle(uid string) {
	w.a.mu.Lock()
	delete(w.a.handles, uid)
	w.a.mu.Unlock()
	w.setHandle(nil)
}
