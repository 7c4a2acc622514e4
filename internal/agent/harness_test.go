package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
)

// The harness runs a real Agent against a stand-in for the server's agent
// routes (controlPlane) and the in-memory driver of hypervisortest. The
// test plays the server: it places VMs, changes their specs, reads what
// the agent reports, and breaks the watch connection; and plays the
// machine: it kills VM processes, powers guests off and restarts the agent
// over the same VMs.

// controlPlane serves the agent routes of one host from memory.
type controlPlane struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	vms         map[string]*api.VM        // by key
	reports     map[string][]api.VMStatus // every status reported, by key
	hostReports []api.HostStatus          // every heartbeat
	removed     []string                  // keys reported removed
	watches     map[*watchConn]bool       // open watch streams
	watchesMade int                       // watch streams opened so far
	streams     chan net.Conn             // server ends of console streams the agent dialled
	failReports int                       // VM status reports to refuse (500) before accepting again
	network     *api.HostNetworkState     // the host's network state, sent on every watch
	changed     chan struct{}             // closed and replaced at every change
	fenceMS     int64                     // T_fence told with each heartbeat's answer
}

type watchConn struct {
	msgs chan api.AgentMessage
	drop chan struct{}
}

func newControlPlane(t *testing.T) *controlPlane {
	cp := &controlPlane{
		t: t, vms: map[string]*api.VM{}, reports: map[string][]api.VMStatus{},
		watches: map[*watchConn]bool{}, streams: make(chan net.Conn, 8), changed: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/hosts/{name}/status", cp.putHostStatus)
	mux.HandleFunc("GET /v1/agent/hosts/{name}/watch", cp.watch)
	mux.HandleFunc("PUT /v1/agent/vms/{project}/{name}/status", cp.putVMStatus)
	mux.HandleFunc("POST /v1/agent/vms/{project}/{name}/removed", cp.vmRemoved)
	mux.HandleFunc("GET /v1/agent/streams/{id}", cp.stream)
	cp.srv = httptest.NewServer(mux)
	t.Cleanup(cp.srv.Close)
	return cp
}

// notify wakes the waiters; cp.mu is held.
func (cp *controlPlane) notify() {
	close(cp.changed)
	cp.changed = make(chan struct{})
}

func (cp *controlPlane) putHostStatus(w http.ResponseWriter, r *http.Request) {
	var st api.HostStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cp.mu.Lock()
	cp.hostReports = append(cp.hostReports, st)
	cp.notify()
	fence := cp.fenceMS
	cp.mu.Unlock()
	writeJSON(w, api.Host{Meta: api.Meta{Name: r.PathValue("name")}, Status: st, FenceTimeoutMS: fence})
}

func (cp *controlPlane) watch(w http.ResponseWriter, r *http.Request) {
	wc := &watchConn{msgs: make(chan api.AgentMessage, 64), drop: make(chan struct{})}
	cp.mu.Lock()
	var first []api.AgentMessage
	for _, vm := range cp.vms {
		v := *vm
		first = append(first, api.AgentMessage{Type: api.AgentMsgVM, VM: &v})
	}
	first = append(first, api.AgentMessage{Type: api.AgentMsgSynced})
	if cp.network != nil {
		first = append(first, api.AgentMessage{Type: api.AgentMsgNetwork, Network: cp.network})
	}
	cp.watches[wc] = true
	cp.watchesMade++
	cp.notify()
	cp.mu.Unlock()
	defer func() {
		cp.mu.Lock()
		delete(cp.watches, wc)
		cp.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, m := range first {
		enc.Encode(m)
	}
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-wc.drop:
			return
		case m := <-wc.msgs:
			if enc.Encode(m) != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

func (cp *controlPlane) putVMStatus(w http.ResponseWriter, r *http.Request) {
	key := api.Key(r.PathValue("project"), r.PathValue("name"))
	var st api.VMStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.failReports > 0 {
		cp.failReports--
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error": {"code": "unavailable", "message": "refused by the test"}}`)
		return
	}
	vm, ok := cp.vms[key]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error": {"code": "not_found", "message": "vm %q not found"}}`, key)
		return
	}
	vm.Status = st
	cp.reports[key] = append(cp.reports[key], st)
	cp.notify()
	writeJSON(w, vm)
}

func (cp *controlPlane) vmRemoved(w http.ResponseWriter, r *http.Request) {
	key := api.Key(r.PathValue("project"), r.PathValue("name"))
	cp.mu.Lock()
	delete(cp.vms, key)
	cp.removed = append(cp.removed, key)
	cp.broadcastLocked(api.AgentMessage{Type: api.AgentMsgVMRemoved, Name: key})
	cp.notify()
	cp.mu.Unlock()
	writeJSON(w, struct{}{})
}

// stream accepts the agent's end of a console stream and hands the server
// end to the test; it holds the request until that end is closed.
func (cp *controlPlane) stream(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	conn := &closeNotifier{Conn: websocket.NetConn(ctx, ws, websocket.MessageBinary), closed: make(chan struct{})}
	cp.streams <- conn
	<-conn.closed
	cancel()
}

type closeNotifier struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (cp *controlPlane) broadcastLocked(m api.AgentMessage) {
	for wc := range cp.watches {
		wc.msgs <- m
	}
}

// place puts a VM on the host (or replaces it) and tells the agent.
func (cp *controlPlane) place(vm *api.VM) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	v := *vm
	cp.vms[vm.Key()] = &v
	sent := v
	cp.broadcastLocked(api.AgentMessage{Type: api.AgentMsgVM, VM: &sent})
	cp.notify()
}

// setSpec changes a VM's desired state, as an operation does, and returns
// its new generation.
func (cp *controlPlane) setSpec(key string, f func(*api.VMSpec)) int64 {
	cp.mu.Lock()
	vm, ok := cp.vms[key]
	if !ok {
		cp.mu.Unlock()
		cp.t.Fatalf("no vm %s", key)
	}
	next := *vm
	f(&next.Spec)
	next.Generation++
	cp.mu.Unlock()
	cp.place(&next)
	return next.Generation
}

func (cp *controlPlane) vm(key string) api.VM {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	vm, ok := cp.vms[key]
	if !ok {
		cp.t.Fatalf("no vm %s", key)
	}
	return *vm
}

// requestStream asks the agent for a console stream.
func (cp *controlPlane) requestStream(req api.StreamRequest) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.broadcastLocked(api.AgentMessage{Type: api.AgentMsgStream, Stream: &req})
}

// dropWatches ends every open watch stream, as a server restart or a
// network cut does; the agent reconnects.
func (cp *controlPlane) dropWatches() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for wc := range cp.watches {
		close(wc.drop)
		delete(cp.watches, wc)
	}
}

// until waits until cond, called under cp's lock at every change, holds.
func (cp *controlPlane) until(timeout time.Duration, what string, cond func() bool) {
	cp.t.Helper()
	deadline := time.After(timeout)
	for {
		cp.mu.Lock()
		ok := cond()
		ch := cp.changed
		cp.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			cp.t.Fatalf("%s: not within %s; reports: %s", what, timeout, cp.describe())
		}
	}
}

// waitStatus waits until the last status reported for key satisfies
// cond, and returns it.
func (cp *controlPlane) waitStatus(key string, timeout time.Duration, what string, cond func(api.VMStatus) bool) api.VMStatus {
	cp.t.Helper()
	var got api.VMStatus
	cp.until(timeout, what, func() bool {
		rs := cp.reports[key]
		if len(rs) == 0 {
			return false
		}
		got = rs[len(rs)-1]
		return cond(got)
	})
	return got
}

func (cp *controlPlane) reportsOf(key string) []api.VMStatus {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]api.VMStatus(nil), cp.reports[key]...)
}

func (cp *controlPlane) describe() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var b bytes.Buffer
	for key, rs := range cp.reports {
		for _, s := range rs {
			fmt.Fprintf(&b, "\n  %s: %s gen=%d pid=%d cause=%q reason=%q err=%v", key, s.PowerState, s.ObservedGeneration, s.PID, s.StopCause, s.Reason, s.Error)
		}
	}
	return b.String()
}

// harness is an agent over a control plane and a fake machine, which can
// be restarted over the same state dir and VMs.
type harness struct {
	t        *testing.T
	cp       *controlPlane
	host     *hypervisortest.Host
	drv      *hypervisortest.Driver
	stateDir string
	cfg      Config
	logs     *syncBuffer

	agent  *Agent
	cancel context.CancelFunc
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, cp: newControlPlane(t), host: hypervisortest.NewHost(), stateDir: t.TempDir(), logs: &syncBuffer{}}
	c, err := client.New(client.Config{URL: h.cp.srv.URL, Token: "host-token"})
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = Config{
		Client: c, Host: "h1", StateDir: h.stateDir, Address: "10.0.0.1",
		HeartbeatInterval: 50 * time.Millisecond,
		// The logs go to a buffer: goroutines may still log after the test.
		Logger:          slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RestartDelay:    100 * time.Millisecond,
		MaxRestartDelay: time.Second,
	}
	t.Cleanup(func() {
		h.stopAgent()
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logs.String())
		}
	})
	return h
}

// startAgent starts an agent with a new driver over the same machine, as
// a restarted agent process.
func (h *harness) startAgent() {
	h.t.Helper()
	h.drv = h.host.NewDriver()
	cfg := h.cfg
	cfg.Driver = h.drv
	a, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.agent, h.cancel, h.done = a, cancel, make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
}

// stopAgent ends the agent; the VMs keep running.
func (h *harness) stopAgent() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("agent Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Error("agent did not stop")
	}
	h.cancel = nil
	// Let the workers see their quit before the driver goes.
	h.agent.mu.Lock()
	workers := make([]*worker, 0, len(h.agent.workers))
	for _, w := range h.agent.workers {
		workers = append(workers, w)
	}
	h.agent.mu.Unlock()
	for _, w := range workers {
		w.stop()
	}
	time.Sleep(50 * time.Millisecond)
	h.drv.Close()
}

var uidSeq int

// newVM returns a VM for host h1 in project p, desired running.
func newVM(name string) *api.VM {
	uidSeq++
	return &api.VM{
		Meta:   api.Meta{Name: name, Project: "p", UID: fmt.Sprintf("uid-%s-%d", name, uidSeq), Generation: 1},
		Spec:   api.VMSpec{Host: "h1", VCPUs: 1, MemoryMiB: 64, PowerState: api.PowerRunning, StopTimeoutSeconds: 1},
		Status: api.VMStatus{PowerState: api.PowerPending},
	}
}

// running waits until the VM is reported running for generation gen
// (0: any) and returns the status.
func (h *harness) running(key string, gen int64) api.VMStatus {
	h.t.Helper()
	return h.cp.waitStatus(key, 5*time.Second, key+" reported running", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerRunning && s.PID != 0 && (gen == 0 || s.ObservedGeneration == gen)
	})
}
