package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// socketpair returns two connected unix stream sockets.
func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("sp%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("fileconn: %v", err)
		}
		conns[i] = c
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	return conns[0], conns[1]
}

// fakePeer is a scripted QMP server on one end of a socketpair.
type fakePeer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
}

func (p *fakePeer) send(s string) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if _, err := p.conn.Write([]byte(s + "\r\n")); err != nil {
		p.t.Errorf("fake peer write: %v", err)
	}
}

type cmd struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        string          `json:"id"`
}

func (p *fakePeer) recv() (cmd, error) {
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		return cmd{}, err
	}
	var c cmd
	if err := json.Unmarshal(line, &c); err != nil {
		p.t.Errorf("fake peer got bad json %q: %v", line, err)
	}
	return c, nil
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`

// startFake returns a connected client and the peer after the handshake.
func startFake(t *testing.T) (*Client, *fakePeer) {
	t.Helper()
	a, b := socketpair(t)
	p := &fakePeer{t: t, conn: b, r: bufio.NewReader(b)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.send(greeting)
		c, err := p.recv()
		if err != nil || c.Execute != "qmp_capabilities" {
			t.Errorf("want qmp_capabilities, got %+v, %v", c, err)
			return
		}
		// An event may arrive before the capabilities reply.
		p.send(`{"event": "RESUME", "timestamp": {"seconds": 1700000000, "microseconds": 5}}`)
		p.send(fmt.Sprintf(`{"return": {}, "id": %q}`, c.ID))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := NewClient(ctx, a)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	<-done
	t.Cleanup(func() { cl.Close() })
	return cl, p
}

func TestHandshakeAndExecute(t *testing.T) {
	cl, p := startFake(t)
	if got := cl.Version().String(); got != "7.2.22Debian" {
		t.Errorf("version = %q", got)
	}
	ev := <-cl.Events()
	if ev.Name != "RESUME" || ev.Time.Unix() != 1700000000 {
		t.Errorf("early event = %+v", ev)
	}

	go func() {
		c, _ := p.recv()
		if c.Execute != "query-status" {
			t.Errorf("got %q", c.Execute)
		}
		p.send(fmt.Sprintf(`{"return": {"status": "running", "running": true}, "id": %q}`, c.ID))
		c, _ = p.recv()
		if string(c.Arguments) != `{"device":"x"}` {
			t.Errorf("arguments = %s", c.Arguments)
		}
		p.send(fmt.Sprintf(`{"error": {"class": "DeviceNotFound", "desc": "no x"}, "id": %q}`, c.ID))
	}()
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	ctx := context.Background()
	if err := cl.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("status = %+v", st)
	}
	err := cl.Execute(ctx, "eject", map[string]string{"device": "x"}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" {
		t.Fatalf("eject error = %v, want DeviceNotFound", err)
	}
}

func TestConcurrentCallersOutOfOrder(t *testing.T) {
	cl, p := startFake(t)
	const n = 20
	go func() {
		// Read all commands, then answer in reverse order with events mixed in.
		var cmds []cmd
		for i := 0; i < n; i++ {
			c, err := p.recv()
			if err != nil {
				return
			}
			cmds = append(cmds, c)
		}
		for i := len(cmds) - 1; i >= 0; i-- {
			p.send(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}`)
			p.send(fmt.Sprintf(`{"return": {"echo": %s}, "id": %q}`, cmds[i].Arguments, cmds[i].ID))
		}
	}()
	go func() {
		for range cl.Events() {
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res struct {
				Echo struct{ N int } `json:"echo"`
			}
			if err := cl.Execute(context.Background(), "echo", map[string]int{"N": i}, &res); err != nil {
				t.Errorf("caller %d: %v", i, err)
				return
			}
			if res.Echo.N != i {
				t.Errorf("caller %d got reply for %d", i, res.Echo.N)
			}
		}()
	}
	wg.Wait()
}

func TestPeerCloseIsDetected(t *testing.T) {
	cl, p := startFake(t)
	<-cl.Events() // the early RESUME
	errc := make(chan error, 1)
	go func() { errc <- cl.Execute(context.Background(), "quit", nil, nil) }()
	if _, err := p.recv(); err != nil {
		t.Fatal(err)
	}
	p.send(`{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 2, "microseconds": 0}}`)
	p.conn.Close()

	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Execute error = %v, want ErrClosed", err)
	}
	select {
	case <-cl.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after peer closed")
	}
	if !errors.Is(cl.Err(), ErrClosed) {
		t.Errorf("Err = %v", cl.Err())
	}
	ev, ok := <-cl.Events()
	if !ok || ev.Name != "SHUTDOWN" || string(ev.Data) != `{"guest": false, "reason": "host-qmp-quit"}` {
		t.Errorf("event = %+v, %v", ev, ok)
	}
	if _, ok := <-cl.Events(); ok {
		t.Error("events channel not closed after drain")
	}
	if err := cl.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after close = %v", err)
	}
}

func TestExecuteContextCancel(t *testing.T) {
	cl, p := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	swallowed := make(chan struct{})
	go func() { p.recv(); close(swallowed) }() // never answer
	err := cl.Execute(ctx, "query-status", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	<-swallowed
	// A late reply to the abandoned id is ignored and the client still works.
	go func() {
		c, _ := p.recv()
		p.send(`{"return": {}, "id": "pv-1"}`)
		p.send(fmt.Sprintf(`{"return": {"ok": 1}, "id": %q}`, c.ID))
	}()
	var res struct{ OK int }
	if err := cl.Execute(context.Background(), "x", nil, &res); err != nil || res.OK != 1 {
		t.Fatalf("second Execute = %v, %+v", err, res)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	a, _ := socketpair(t) // the peer never greets
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewClient(ctx, a)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	// A liveness bound: the peer never greets, so without the deadline
	// the handshake would wait for ever.
	if time.Since(start) > 10*time.Second {
		t.Errorf("handshake timeout took %v", time.Since(start))
	}
}

func TestHandshakeRejectsNonQMP(t *testing.T) {
	a, b := socketpair(t)
	go b.Write([]byte("{\"hello\": 1}\n"))
	_, err := NewClient(context.Background(), a)
	if err == nil {
		t.Fatal("want error for a peer that is not QMP")
	}
}

func TestDialMissingSocket(t *testing.T) {
	_, err := Dial(context.Background(), t.TempDir()+"/none.sock")
	if err == nil {
		t.Fatal("want error")
	}
}
