package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/estate"
)

// streamBroker joins a client that wants a VM console to the agent of the
// VM's host. The server never dials a host: it asks the host's agent, on
// the agent's watch stream, to dial back /v1/agent/streams/{id}, and then
// splices the two websockets.
type streamBroker struct {
	mu      sync.Mutex
	hosts   map[string]chan api.StreamRequest // the newest watch of each host
	pending map[string]*pendingStream
	closed  bool
}

type pendingStream struct {
	host string
	conn chan net.Conn // the agent's end, once it dials back
	done chan struct{} // closed when the splice ends
}

// abandon ends a stream nobody waits for any more: an agent conn handed
// over in the meantime is closed and its handler released.
func (p *pendingStream) abandon() {
	select {
	case c := <-p.conn:
		c.Close()
	default:
	}
	close(p.done)
}

// streamDialTimeout bounds how long an agent has to dial back.
const streamDialTimeout = 10 * time.Second

func newStreamBroker() *streamBroker {
	return &streamBroker{hosts: map[string]chan api.StreamRequest{}, pending: map[string]*pendingStream{}}
}

// register makes a host's watch the one that receives stream requests.
func (b *streamBroker) register(host string) (<-chan api.StreamRequest, func()) {
	ch := make(chan api.StreamRequest, 16)
	b.mu.Lock()
	b.hosts[host] = ch
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		if b.hosts[host] == ch {
			delete(b.hosts, host)
		}
		b.mu.Unlock()
	}
}

// open asks host's agent for a stream and waits for it to dial back. The
// returned release must be called when the caller is done with the conn.
// When the host's agent watches another server, forward (when not nil)
// hands the request to that server, naming this one as the server the
// agent dials.
func (b *streamBroker) open(ctx context.Context, host string, req api.StreamRequest, forward func(context.Context, string, api.StreamRequest) error) (net.Conn, func(), error) {
	req.ID = api.NewUID()
	p := &pendingStream{host: host, conn: make(chan net.Conn, 1), done: make(chan struct{})}
	b.mu.Lock()
	ch, ok := b.hosts[host]
	closed := b.closed
	if !closed {
		b.pending[req.ID] = p
	}
	b.mu.Unlock()
	cleanup := func() {
		b.mu.Lock()
		delete(b.pending, req.ID)
		b.mu.Unlock()
	}
	switch {
	case closed:
		return nil, nil, &api.Error{Code: api.CodeUnavailable, Message: "the server is stopping"}
	case ok:
		select {
		case ch <- req:
		default:
			cleanup()
			return nil, nil, &api.Error{Code: api.CodeUnavailable, Message: "the agent of host " + strconv.Quote(host) + " is busy"}
		}
	case forward != nil:
		if err := forward(ctx, host, req); err != nil {
			cleanup()
			return nil, nil, err
		}
	default:
		cleanup()
		return nil, nil, notConnected(host)
	}
	timer := time.NewTimer(streamDialTimeout)
	defer timer.Stop()
	select {
	case c := <-p.conn:
		cleanup()
		var once sync.Once
		return c, func() { once.Do(func() { c.Close(); close(p.done) }) }, nil
	case <-timer.C:
		cleanup()
		p.abandon()
		return nil, nil, &api.Error{Code: api.CodeUnavailable, Message: "the agent of host " + strconv.Quote(host) + " did not open the console in time"}
	case <-ctx.Done():
		cleanup()
		p.abandon()
		return nil, nil, ctx.Err()
	}
}

func notConnected(host string) error {
	return &api.Error{Code: api.CodeUnavailable, Message: "the agent of host " + strconv.Quote(host) + " is not connected"}
}

// deliver hands a stream request another server forwarded to host's
// agent, if its watch is held here.
func (b *streamBroker) deliver(host string, req api.StreamRequest) error {
	b.mu.Lock()
	ch, ok := b.hosts[host]
	b.mu.Unlock()
	if !ok {
		return &api.Error{Code: api.CodeNotFound, Message: "the agent of host " + strconv.Quote(host) + " does not watch this server"}
	}
	select {
	case ch <- req:
		return nil
	default:
		return &api.Error{Code: api.CodeUnavailable, Message: "the agent of host " + strconv.Quote(host) + " is busy"}
	}
}

// forwardStream hands a stream request to the other servers, one of which
// may hold the host's watch; the agent is to dial this server back.
func (s *Server) forwardStream(ctx context.Context, host string, req api.StreamRequest) error {
	url := s.advertisedURL()
	if url == "" {
		return notConnected(host)
	}
	req.Server = url
	peers, err := s.peers(ctx)
	if err != nil || len(peers) == 0 {
		return notConnected(host)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, p := range peers {
		if err := p.c.PeerStream(fctx, host, req); err == nil {
			return nil
		}
	}
	return notConnected(host)
}

// attach hands an agent's dialled-back conn to the waiting client. It
// returns a channel closed when the client is done with it.
func (b *streamBroker) attach(id, host string, c net.Conn) (<-chan struct{}, bool) {
	b.mu.Lock()
	p, ok := b.pending[id]
	if ok && p.host == host {
		delete(b.pending, id)
	}
	b.mu.Unlock()
	if !ok || p.host != host {
		return nil, false
	}
	p.conn <- c
	return p.done, true
}

func (b *streamBroker) closeAll() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

const wsReadLimit = 4 << 20

// attachStream is the agent's end of a console stream.
func (s *Server) attachStream(w http.ResponseWriter, r *http.Request) {
	host := auth.FromContext(r.Context()).Name
	ended := make(chan struct{})
	var wsp atomic.Pointer[websocket.Conn]
	release, err := s.guard.open(r, streamAgent, s.hostAccess(host), func(reason string) {
		closeWebsocket(&wsp, reason)
		close(ended)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	wsp.Store(ws)
	ws.SetReadLimit(wsReadLimit)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	done, ok := s.streams.attach(r.PathValue("id"), host, conn)
	if !ok {
		ws.Close(websocket.StatusPolicyViolation, "unknown stream")
		return
	}
	select {
	case <-done:
	case <-ended:
		closeWebsocket(&wsp, "")
	case <-r.Context().Done():
	}
}

// closeWebsocket ends a guarded websocket, telling its peer why; one not
// yet accepted is ended by its handler.
func closeWebsocket(wsp *atomic.Pointer[websocket.Conn], reason string) {
	if ws := wsp.Load(); ws != nil {
		if len(reason) > 120 {
			reason = reason[:120]
		}
		_ = ws.Close(websocket.StatusPolicyViolation, reason)
	}
}

// vmConsole connects a client websocket to a VM's serial or VNC console.
func (s *Server) vmConsole(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	name := vm.Name
	kind := r.URL.Query().Get("type")
	switch kind {
	case "":
		kind = "serial"
	case "serial", "vnc":
	default:
		s.writeError(w, r, api.Invalid("type", "must be serial or vnc, not %q", kind))
		return
	}
	if vm.Status.PowerState != api.PowerRunning && vm.Status.PowerState != api.PowerPaused {
		s.writeError(w, r, api.Conflict("vm %q is %s: its console is available while it runs", name, vm.Status.PowerState))
		return
	}
	// The console ends when the caller's credentials go or it may no
	// longer use the project's consoles; each user may hold only so many.
	octx, ocancel := context.WithCancel(r.Context())
	defer ocancel()
	var wsp atomic.Pointer[websocket.Conn]
	unguard, err := s.guard.open(r, streamConsole, s.projectAccess(vm.Project, auth.PermVMConsole), func(reason string) {
		ocancel()
		closeWebsocket(&wsp, reason)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer unguard()
	var (
		agentConn net.Conn
		release   func()
	)
	if vm.Spec.Provider != nil {
		agentConn, err = s.providerConsole(r.WithContext(octx), vm, kind)
		release = func() {
			if agentConn != nil {
				agentConn.Close()
			}
		}
	} else {
		agentConn, release, err = s.streams.open(octx, vm.Spec.Host, api.StreamRequest{VM: vm.Key(), Console: kind}, s.forwardStream)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		return
	}
	wsp.Store(ws)
	if octx.Err() != nil {
		// Ended while the agent dialled back.
		closeWebsocket(&wsp, "access ended")
		return
	}
	ws.SetReadLimit(wsReadLimit)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	splice(client, agentConn)
}

// providerConsole dials the VNC console a provider offers for a VM (libvirt
// VNC). Consoles a provider serves itself (vSphere WebMKS) are reached
// through their ticket instead.
func (s *Server) providerConsole(r *http.Request, vm *api.VM, kind string) (net.Conn, error) {
	if kind != "vnc" {
		return nil, api.Unprocessable("vm %q of provider %q has no %s console here; use type=vnc or its console ticket", vm.Name, vm.Spec.Provider.Name, kind)
	}
	if caps, _ := s.ctl.Estate.Capabilities(vm.Spec.Provider.Name); !caps.Console {
		return nil, api.Unprocessable("provider %q lacks the capability \"console\"", vm.Spec.Provider.Name)
	}
	con, err := s.ctl.Estate.Console(r.Context(), vm)
	if err != nil {
		return nil, estate.MapError(err)
	}
	if con.Type != "vnc" || con.Port == 0 {
		return nil, api.Unprocessable("the console of vm %q is %s: get it from /v1/vms/%s/console/ticket", vm.Name, con.Type, vm.Name)
	}
	var d net.Dialer
	c, err := d.DialContext(r.Context(), "tcp", net.JoinHostPort(con.Host, strconv.Itoa(con.Port)))
	if err != nil {
		return nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("connecting to the console of vm %q: %v", vm.Name, err)}
	}
	return c, nil
}

// splice copies both ways until either side ends.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// vmConsoleLog returns the serial output the VM's host recorded.
func (s *Server) vmConsoleLog(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	name := vm.Name
	if vm.Spec.Provider != nil {
		s.writeError(w, r, api.Unprocessable("vm %q of provider %q has no serial log recorded by Polyvisor", name, vm.Spec.Provider.Name))
		return
	}
	n := int64(64 << 10)
	if v := r.URL.Query().Get("bytes"); v != "" {
		var err error
		n, err = strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 16<<20 {
			s.writeError(w, r, api.Invalid("bytes", "must be from 1 to %d, not %q", 16<<20, v))
			return
		}
	}
	conn, release, err := s.streams.open(r.Context(), vm.Spec.Host, api.StreamRequest{VM: vm.Key(), Console: "log", Bytes: n}, s.forwardStream)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	data, err := io.ReadAll(io.LimitReader(conn, n))
	if err != nil && !errors.Is(err, io.EOF) && len(data) == 0 {
		s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: "reading the console log from host " + strconv.Quote(vm.Spec.Host) + " failed"})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(data)
}

// vmStats samples what a running VM uses, from its host's driver.
func (s *Server) vmStats(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	if vm.Spec.Provider != nil {
		s.writeError(w, r, api.Unprocessable("provider %q reports no usage of its vms here", vm.Spec.Provider.Name))
		return
	}
	if vm.Status.PowerState != api.PowerRunning && vm.Status.PowerState != api.PowerPaused {
		s.writeError(w, r, api.Conflict("vm %q is %s: usage is sampled while it runs", vm.Name, vm.Status.PowerState))
		return
	}
	conn, release, err := s.streams.open(r.Context(), vm.Spec.Host, api.StreamRequest{VM: vm.Key(), Console: "stats"}, s.forwardStream)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var st api.VMStats
	if err := json.NewDecoder(io.LimitReader(conn, 4096)).Decode(&st); err != nil {
		s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: "sampling vm " + strconv.Quote(vm.Name) + " on host " + strconv.Quote(vm.Spec.Host) + " failed"})
		return
	}
	st.VCPUs, st.MemoryMiB = vm.Spec.VCPUs, vm.Spec.MemoryMiB
	writeJSON(w, http.StatusOK, st)
}
