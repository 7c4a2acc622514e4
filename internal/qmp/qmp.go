// Package qmp is a small client for the QEMU Machine Protocol: it dials a
// QMP unix socket, negotiates capabilities, runs commands (several callers
// may run commands at once; replies are matched by id) and delivers the
// asynchronous events QEMU sends (SHUTDOWN, STOP, RESUME, POWERDOWN, ...).
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by Execute once the connection is closed, by either
// side.
var ErrClosed = errors.New("qmp connection closed")

// Error is an error reply from QEMU.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// Event is an asynchronous QMP event.
type Event struct {
	Name string          // "SHUTDOWN", "STOP", "RESUME", ...
	Data json.RawMessage // the event's data object, may be nil
	Time time.Time       // when QEMU emitted it
}

// Version is QEMU's version as announced in the QMP greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d%s", v.Major, v.Minor, v.Micro, v.Package)
}

// message is any message QEMU sends.
type message struct {
	Greeting *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP,omitempty"`
	Return    json.RawMessage `json:"return,omitempty"`
	Error     *Error          `json:"error,omitempty"`
	ID        string          `json:"id,omitempty"`
	Event     string          `json:"event,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp,omitempty"`
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id,omitempty"`
}

type reply struct {
	ret json.RawMessage
	err error
}

// Client is a QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn    net.Conn
	dec     *json.Decoder
	version Version

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	err     error // why the connection ended

	events *eventQueue
	done   chan struct{}
}

// Dial connects to the QMP unix socket at path and negotiates capabilities.
// ctx bounds the connect and handshake only.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dialing qmp socket %s: %w", path, err)
	}
	return NewClient(ctx, conn)
}

// NewClient runs the QMP handshake (greeting, qmp_capabilities) on conn and
// returns a client that owns conn; conn is closed if the handshake fails.
// ctx bounds the handshake only.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:    conn,
		dec:     json.NewDecoder(bufio.NewReader(conn)),
		pending: make(map[string]chan reply),
		events:  newEventQueue(),
		done:    make(chan struct{}),
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := c.handshake()
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		c.events.abandon()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, fmt.Errorf("negotiating qmp capabilities: %w", err)
	}
	conn.SetDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

func (c *Client) handshake() error {
	var m message
	if err := c.dec.Decode(&m); err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if m.Greeting == nil {
		return errors.New("reading greeting: not a qmp greeting")
	}
	q := m.Greeting.Version
	c.version = Version{Major: q.QEMU.Major, Minor: q.QEMU.Minor, Micro: q.QEMU.Micro, Package: q.Package}
	if err := c.write(request{Execute: "qmp_capabilities", ID: "caps"}); err != nil {
		return err
	}
	for {
		var m message
		if err := c.dec.Decode(&m); err != nil {
			return fmt.Errorf("reading qmp_capabilities reply: %w", err)
		}
		switch {
		case m.Event != "":
			c.events.push(toEvent(&m))
		case m.Error != nil:
			return m.Error
		case m.Return != nil:
			return nil
		}
	}
}

// Version is the QEMU version from the greeting.
func (c *Client) Version() Version { return c.version }

func (c *Client) write(r request) error { return c.writeOOB(r, nil) }

// writeOOB writes r with oob as the socket's ancillary data (nil for none).
func (c *Client) writeOOB(r request, oob []byte) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding qmp command %s: %w", r.Execute, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if oob != nil {
		uc, ok := c.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("sending qmp command %s with a file: the connection is not a unix socket", r.Execute)
		}
		if _, _, err := uc.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
			return fmt.Errorf("sending qmp command %s: %w", r.Execute, err)
		}
		return nil
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("sending qmp command %s: %w", r.Execute, err)
	}
	return nil
}

// Execute runs cmd with args (nil, or anything that encodes as a JSON
// object) and decodes the reply's "return" into result (nil to discard).
// A QEMU error reply is returned as *Error. If ctx ends first, Execute
// returns ctx's error; the command may still run in QEMU.
func (c *Client) Execute(ctx context.Context, cmd string, args, result any) error {
	return c.execute(ctx, cmd, args, result, nil)
}

// ExecuteFile runs cmd as Execute does, passing f's descriptor along with
// it (SCM_RIGHTS), as QMP's getfd and add-fd expect: QEMU, confined,
// opens nothing by path once it runs. The connection must be a unix
// socket.
func (c *Client) ExecuteFile(ctx context.Context, cmd string, args, result any, f *os.File) error {
	return c.execute(ctx, cmd, args, result, syscall.UnixRights(int(f.Fd())))
}

func (c *Client) execute(ctx context.Context, cmd string, args, result any, oob []byte) error {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("running qmp command %s: %w", cmd, ErrClosed)
	}
	c.nextID++
	id := "pv-" + strconv.FormatUint(c.nextID, 10)
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.writeOOB(request{Execute: cmd, Arguments: args, ID: id}, oob); err != nil {
		c.forget(id)
		return err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("running qmp command %s: %w", cmd, r.err)
		}
		if result != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("decoding reply to qmp command %s: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("running qmp command %s: %w", cmd, ctx.Err())
	}
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *Client) readLoop() {
	var err error
	for {
		var m message
		if err = c.dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			c.events.push(toEvent(&m))
		case m.ID != "":
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				r := reply{ret: m.Return}
				if m.Error != nil {
					r.err = m.Error
				}
				ch <- r
			}
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	pending := c.pending
	c.pending = map[string]chan reply{}
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
	c.conn.Close()
	c.events.close()
	close(c.done)
}

// Events returns the channel of events QEMU sent. Events are queued without
// bound, so a slow reader never stalls command replies: a client whose
// connection stays open must have its events read. The channel is closed
// once the connection has ended and the queued events are delivered, or at
// once when Close is called. There is one channel per client: concurrent
// readers share the events.
func (c *Client) Events() <-chan Event { return c.events.out }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (wrapping ErrClosed), or nil while it
// is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and waits for the reader to stop.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	c.events.abandon()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func toEvent(m *message) Event {
	e := Event{Name: m.Event, Data: m.Data}
	if m.Timestamp != nil {
		e.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
	}
	return e
}

// eventQueue is an unbounded FIFO that feeds a channel.
type eventQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	q      []Event
	closed bool
	out    chan Event

	stopOnce sync.Once
	stop     chan struct{} // closed to drop queued events
}

func newEventQueue() *eventQueue {
	e := &eventQueue{out: make(chan Event), stop: make(chan struct{})}
	e.cond = sync.NewCond(&e.mu)
	go e.pump()
	return e
}

func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	e.cond.Signal()
}

func (e *eventQueue) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cond.Signal()
}

// abandon stops delivery: queued events are dropped and out is closed.
func (e *eventQueue) abandon() {
	e.stopOnce.Do(func() { close(e.stop) })
	e.close()
}

func (e *eventQueue) pump() {
	defer close(e.out)
	for {
		e.mu.Lock()
		for len(e.q) == 0 && !e.closed {
			e.cond.Wait()
		}
		if len(e.q) == 0 {
			e.mu.Unlock()
			return
		}
		ev := e.q[0]
		e.q = e.q[1:]
		e.mu.Unlock()
		select {
		case e.out <- ev:
		case <-e.stop:
			return
		}
	}
}
