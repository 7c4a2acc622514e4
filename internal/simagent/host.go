package simagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
	"github.com/polyvisor/polyvisor/internal/usage"
	"github.com/polyvisor/polyvisor/internal/version"
)

// simHost is one simulated host: its identity, its connections to the
// servers, its in-memory hypervisor and the VMs placed on it.
type simHost struct {
	f    *Fleet
	idx  int
	name string
	src  net.IP // the address it dials from; nil for the machine's choice

	machine *hypervisortest.Host
	driver  *hypervisortest.Driver

	// One client per server, with the host token, for requests, and one
	// for the watch and streams (the same unless the fleet shares its
	// request connections).
	clients  []*client.Client
	watchers []*client.Client
	joined   atomic.Bool  // it has credentials and runs
	cur      atomic.Int64 // the server it talks to now
	beating  atomic.Bool  // its last heartbeat was answered
	// beatBusy is set while a heartbeat is in flight; beatOwed holds the
	// due time (unix ns) of one that fell due meanwhile.
	beatBusy atomic.Bool
	beatOwed atomic.Int64
	revoked  atomic.Bool // the server refuses its token: it stopped
	// moved is signalled when the host moves to another server: its watch
	// on the one it left (which may hang, cut off) ends for a new one.
	moved chan struct{}
	done  atomic.Bool
	life  context.Context // the fleet's run: convergences and streams live under it

	// recorder keeps the host's usage history (nil: none); lastSample
	// is when it last sampled, touched by one heartbeat at a time.
	recorder   *usage.Recorder
	lastSample time.Time

	mu  sync.Mutex
	vms map[string]*simVM // by key
}

func newSimHost(f *Fleet, idx int, name string, src net.IP) *simHost {
	m := hypervisortest.NewHostWith(hypervisortest.HostOptions{
		Timings: f.cfg.Timings, Usage: f.cfg.Usage, NoCallLog: true, Seed: uint64(idx) + 1,
	})
	h := &simHost{f: f, idx: idx, name: name, src: src, machine: m, driver: m.NewDriver(), vms: map[string]*simVM{}, moved: make(chan struct{}, 1)}
	if f.usage != nil {
		h.recorder = usage.NewRecorder(f.usage, name)
	}
	h.cur.Store(int64(idx % len(f.cfg.Servers)))
	return h
}

func (h *simHost) stopped() bool { return h.done.Load() }

// client is the host's client of the server it talks to now.
func (h *simHost) client() *client.Client {
	return h.clients[int(h.cur.Load())%len(h.clients)]
}

// watcher is the host's client for its watch and streams.
func (h *simHost) watcher() *client.Client {
	return h.watchers[int(h.cur.Load())%len(h.watchers)]
}

// failover moves the host to the next server, if it still talks to the
// one it lost (from).
func (h *simHost) failover(from int64) {
	if len(h.clients) > 1 && h.cur.CompareAndSwap(from, (from+1)%int64(len(h.clients))) {
		select {
		case h.moved <- struct{}{}:
		default:
		}
	}
}

// status is what the host reports in its heartbeat.
func (h *simHost) status() api.HostStatus {
	addr := ""
	if h.src != nil {
		addr = h.src.String()
	}
	return api.HostStatus{
		CPUs: h.f.cfg.HostCPUs, MemoryMiB: h.f.cfg.HostMemoryMiB,
		DiskTotalMiB: 2 << 20, DiskFreeMiB: 1 << 20,
		Accel: "tcg", AccelReason: "simulated host: its VMs are in-memory records, never QEMU",
		QEMUVersion: "simulated", AgentVersion: version.Version, Address: addr,
		Drivers: []string{hypervisortest.DriverName},
	}
}

// register joins the host with a join token and returns its host token.
func (h *simHost) register(ctx context.Context, joinToken string) (string, error) {
	server := h.f.cfg.Servers[int(h.cur.Load())]
	c, err := hostClient(server, "", h.f.cfg.JoinTLS, h.src)
	if err != nil {
		return "", err
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// As the real agent, it registers with its address only and is ready
	// once its first heartbeat says what it has.
	creds, err := c.Register(ctx, api.AgentRegister{JoinToken: joinToken, Host: h.name, Status: api.HostStatus{Address: h.status().Address}})
	if err != nil {
		return "", fmt.Errorf("registering host %q: %w", h.name, err)
	}
	h.f.mu.Lock()
	trusted := h.f.tls != nil
	h.f.mu.Unlock()
	if !trusted {
		if err := h.f.trust([]byte(creds.CACert)); err != nil {
			return "", err
		}
	}
	return creds.Token, nil
}

// start makes the host's clients with its token and starts its heartbeat
// and its watch. A host that just registered heartbeats at once, as an
// agent that starts; one that registered in an earlier run heartbeats at
// a random point of the interval, as one of a fleet that has been up.
func (h *simHost) start(ctx context.Context, token string, joined bool, wg *sync.WaitGroup) error {
	h.f.mu.Lock()
	tc := h.f.tls
	h.f.mu.Unlock()
	if tc == nil {
		return errors.New("simulated hosts: no CA certificate to trust the server with")
	}
	shared, err := h.f.sharedClients(tc)
	if err != nil {
		return err
	}
	for i, s := range h.f.cfg.Servers {
		w, err := hostClient(s, token, tc, h.src)
		if err != nil {
			return err
		}
		c := w
		if shared != nil {
			c = shared[i].WithToken(token)
		}
		h.clients, h.watchers = append(h.clients, c), append(h.watchers, w)
	}
	h.joined.Store(true)
	h.life = ctx
	first := time.Now()
	if !joined {
		first = h.f.phase()
	}
	h.f.beats.add(h, first)
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.follow(ctx)
	}()
	return nil
}

// summary is the host's part of the fleet's Stats.
func (h *simHost) summary() (registered, beating, revoked bool, vms, running int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.vms {
		vms++
		if v.running {
			running++
		}
	}
	return h.joined.Load(), h.beating.Load(), h.revoked.Load(), vms, running
}

// stop ends the host for good: the server refuses its credentials.
func (h *simHost) stop(err error) {
	if h.revoked.CompareAndSwap(false, true) {
		h.done.Store(true)
		h.beating.Store(false)
		h.f.log.Error("the server refuses a simulated host's credentials: it stops", "host", h.name, "err", err)
	}
}

// refused tells whether err is the server refusing the host's token.
func refused(err error) bool { return client.ErrorCode(err) == api.CodeUnauthorized }

// heartbeat sends a heartbeat of h, due at due. As the real agent's
// heartbeat loop, a host has one heartbeat in flight at most: one that
// falls due meanwhile is sent as soon as the one in flight is answered
// (its ticker keeps one tick), others are dropped.
func (f *Fleet) heartbeat(ctx context.Context, h *simHost, due time.Time) {
	if !h.beatBusy.CompareAndSwap(false, true) {
		h.beatOwed.CompareAndSwap(0, due.UnixNano())
		return
	}
	for {
		f.beatOnce(ctx, h, due)
		h.beatBusy.Store(false)
		owed := h.beatOwed.Load()
		if owed == 0 || ctx.Err() != nil || !h.beatBusy.CompareAndSwap(false, true) {
			return
		}
		h.beatOwed.Store(0)
		due = time.Unix(0, owed)
	}
}

func (f *Fleet) beatOnce(ctx context.Context, h *simHost, due time.Time) {
	if h.stopped() {
		return
	}
	start := time.Now()
	f.c.late.add(max(start.Sub(due), 0))
	cur := h.cur.Load()
	// As the agent: a server that stopped answering (cut off from the
	// network) is given up on after two intervals, from 2s to 10s.
	hctx, cancel := context.WithTimeout(ctx, min(max(2*f.cfg.HeartbeatInterval, 2*time.Second), 10*time.Second))
	_, err := h.client().PutHostStatus(hctx, h.name, h.status())
	cancel()
	if ctx.Err() != nil {
		return
	}
	f.c.heartbeat.add(time.Since(start))
	if err != nil {
		f.c.heartbeatErrors.Add(1)
		h.beating.Store(false)
		if refused(err) {
			h.stop(err)
			return
		}
		// As the agent: nothing answered, or a server error (that
		// server lost the store).
		if st := client.HTTPStatus(err); st == 0 || st >= 500 {
			h.failover(cur)
		}
		f.warn.warn("heartbeat failed", h.name, err)
		return
	}
	f.c.heartbeats.Add(1)
	h.beating.Store(true)
	h.sampleUsage(ctx, time.Now())
}

// follow keeps the host's watch open, reconnecting with backoff.
func (h *simHost) follow(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil && !h.stopped() {
		start := time.Now()
		cur := h.cur.Load()
		err := h.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		h.f.c.watchErrors.Add(1)
		if refused(err) {
			h.stop(err)
			return
		}
		if client.HTTPStatus(err) == 0 {
			h.failover(cur)
		}
		if time.Since(start) > 10*time.Second {
			backoff = 200 * time.Millisecond
		}
		h.f.warn.warn("watch ended; reconnecting", h.name, err)
		// Jittered, so that a fleet that lost its server does not come
		// back in one wave.
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (h *simHost) watchOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case <-h.moved: // a move before this watch: it is on the new server
	default:
	}
	msgs, errs := h.watcher().WatchHost(ctx, h.name)
	h.f.c.watchConnects.Add(1)
	h.f.c.watching.Add(1)
	defer h.f.c.watching.Add(-1)
	seen := map[string]bool{} // UIDs the server places here, until synced
	synced := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.moved:
			return errors.New("the host moved to another server")
		case err := <-errs:
			if err == nil {
				err = errors.New("watch stream closed")
			}
			return err
		case m, ok := <-msgs:
			if !ok {
				return errors.New("watch stream closed")
			}
			switch m.Type {
			case api.AgentMsgVM:
				if m.VM == nil {
					continue
				}
				if !synced {
					seen[m.VM.UID] = true
				}
				h.update(h.life, m.VM)
			case api.AgentMsgVMRemoved:
				h.removed(m.Name)
			case api.AgentMsgSynced:
				synced = true
				h.reapOrphans(ctx, seen)
			case api.AgentMsgStream:
				if m.Stream != nil {
					go h.serveStream(h.life, *m.Stream)
				}
			}
		}
	}
}

// reapOrphans removes the VMs of this machine the server no longer places
// here (deleted while the watch was down).
func (h *simHost) reapOrphans(ctx context.Context, seen map[string]bool) {
	for _, v := range h.machine.VMs() {
		if seen[v.UID] {
			continue
		}
		h.mu.Lock()
		for k, sv := range h.vms {
			if sv.uid == v.UID {
				delete(h.vms, k)
			}
		}
		h.mu.Unlock()
		hd := &hypervisor.Handle{Version: hypervisor.HandleVersion, Driver: hypervisortest.DriverName, Name: v.Name, UID: v.UID, PID: v.PID}
		if err := h.driver.Destroy(ctx, hd, false); err != nil && ctx.Err() == nil {
			h.f.warn.warn("removing a vm the server does not know", h.name, err)
		}
	}
}

// serveStream answers a stream request: the usage of a VM (stats), an
// empty console log, or a refusal for interactive consoles, which a
// simulated machine does not have.
func (h *simHost) serveStream(ctx context.Context, req api.StreamRequest) {
	h.f.c.streams.Add(1)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := h.watcher().DialStream(ctx, req.ID)
	if err != nil {
		h.f.warn.warn("dialling back for a stream", h.name, err)
		return
	}
	defer conn.Close()
	switch req.Console {
	case "usage":
		h.serveUsage(conn, req)
	case "stats":
		v := h.vm(req.VM)
		if v == nil || v.hd == nil {
			fmt.Fprintf(conn, "polyvisor: vm %q has no process on simulated host %s\r\n", req.VM, h.name)
			return
		}
		st, err := h.driver.Stats(ctx, v.handle())
		if err != nil {
			fmt.Fprintf(conn, "polyvisor: %v\r\n", err)
			return
		}
		_ = json.NewEncoder(conn).Encode(api.VMStats{Time: time.Now().UTC(), CPUSeconds: st.CPUSeconds, MemoryBytes: st.MemoryBytes})
	case "log":
		fmt.Fprintf(conn, "simulated host %s: vm %s has no serial output\n", h.name, req.VM)
	default:
		fmt.Fprintf(conn, "\r\npolyvisor: simulated host %s has no %s console\r\n", h.name, req.Console)
	}
}
