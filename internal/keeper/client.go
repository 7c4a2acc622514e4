package keeper

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Client is an agent's connection to its keeper.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the keeper of an agent's state directory.
func Dial(dir string) (*Client, error) {
	c, err := net.DialTimeout("unix", SocketPath(dir), time.Second)
	if err != nil {
		return nil, fmt.Errorf("connecting to the keeper: %w", err)
	}
	return &Client{conn: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Feed sends one feed and reads the keeper's state.
func (c *Client) Feed(f Feed) (State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := json.Marshal(f)
	if err != nil {
		return State{}, fmt.Errorf("encoding a keeper feed: %w", err)
	}
	c.conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return State{}, fmt.Errorf("feeding the keeper: %w", err)
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return State{}, fmt.Errorf("reading the keeper's answer: %w", err)
	}
	var st State
	if err := json.Unmarshal(line, &st); err != nil {
		return State{}, fmt.Errorf("decoding the keeper's answer: %w", err)
	}
	return st, nil
}

// Close closes the connection; the keeper runs on.
func (c *Client) Close() error { return c.conn.Close() }

// Start connects to the keeper of dir, starting one with command (the
// `polyvisor keeper` command line) when none answers. The keeper runs in
// a session of its own with its output in LogPath(dir): it is no child
// the agent's end ends, and an agent started again finds it there.
func Start(ctx context.Context, dir string, command []string) (c *Client, started bool, err error) {
	if c, err := Dial(dir); err == nil {
		return c, false, nil
	}
	if len(command) == 0 {
		return nil, false, errors.New("no keeper answers and none can be started")
	}
	logf, err := os.OpenFile(LogPath(dir), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening the keeper's log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("starting the keeper: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaped while the agent lives
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := Dial(dir); err == nil {
			return c, true, nil
		}
		select {
		case err := <-exited:
			return nil, false, fmt.Errorf("the keeper exited at its start (%v): see %s", err, LogPath(dir))
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, false, fmt.Errorf("the keeper started but does not answer on %s", SocketPath(dir))
		}
	}
}
