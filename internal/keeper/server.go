package keeper

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// SocketPath is where the keeper of an agent's state directory listens.
func SocketPath(dir string) string { return filepath.Join(dir, "keeper.sock") }

// RecordPath is the keeper's record of its firings, one JSON object a line.
func RecordPath(dir string) string { return filepath.Join(dir, "keeper-fired.jsonl") }

// LogPath is where an agent that starts the keeper sends its output.
func LogPath(dir string) string { return filepath.Join(dir, "keeper.log") }

// Config configures a keeper.
type Config struct {
	// Dir is the agent's state directory: the socket and the record.
	Dir    string
	Logger *slog.Logger
	// Tick is how often the deadline is checked (default 50ms).
	Tick time.Duration
	// IdleExit: a keeper that holds no process and has had no agent
	// connected for this long exits (default 10 minutes), as does one whose
	// socket was removed: an agent starts one again when it needs one.
	IdleExit time.Duration
}

// maxFeed bounds one feed line.
const maxFeed = 1 << 20

// keeper is a running keeper: the watch and the pidfds of its processes.
type keeper struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	w       *Watch
	fds     map[string]int // pidfd by VM UID
	conns   map[net.Conn]bool
	idle    time.Time // when the last agent went, or the keeper started
	refused []string
	record  *os.File
}

// Run listens on the socket of cfg.Dir and keeps the HA VMs the agent
// names until ctx ends or it has nothing to keep (see Config.IdleExit).
// It refuses to start while another keeper answers on the socket.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 50 * time.Millisecond
	}
	if cfg.IdleExit <= 0 {
		cfg.IdleExit = 10 * time.Minute
	}
	path := SocketPath(cfg.Dir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("a keeper already listens on %s", path)
	}
	os.Remove(path) // a dead keeper's
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on the keeper socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("restricting the keeper socket: %w", err)
	}
	var ino uint64
	if fi, err := os.Stat(path); err == nil {
		ino = fi.Sys().(*syscall.Stat_t).Ino
	}
	// Opened now, so that no file is made in the directory later.
	rec, err := os.OpenFile(RecordPath(cfg.Dir), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening the keeper's record: %w", err)
	}
	defer rec.Close()
	k := &keeper{cfg: cfg, log: cfg.Logger, w: NewWatch(), fds: map[string]int{}, conns: map[net.Conn]bool{}, idle: time.Now(), record: rec}
	defer k.closeAll()
	go k.accept(ln)
	k.log.Info("keeper listening", "socket", path)

	tick := time.NewTicker(cfg.Tick)
	defer tick.Stop()
	lastStat := time.Now()
	ours := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		k.check()
		if time.Since(lastStat) < 250*time.Millisecond {
			continue
		}
		lastStat = time.Now()
		if ours {
			fi, err := os.Stat(path)
			if err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
				ours = false
				ln.Close()
				k.log.Warn("the keeper socket was removed: no agent can feed this keeper any more")
			}
		}
		k.mu.Lock()
		held, conns, idle := len(k.w.procs), len(k.conns), time.Since(k.idle)
		k.mu.Unlock()
		if held == 0 && (!ours || (conns == 0 && idle >= cfg.IdleExit)) {
			k.log.Info("keeper exits: no agent and nothing to keep")
			return nil
		}
	}
}

// check fires when due.
func (k *keeper) check() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := Now()
	if !k.w.Due(now) {
		return
	}
	procs := k.w.Procs()
	fds := make([]int, len(procs))
	for i, p := range procs {
		fds[i] = k.fds[p.UID]
	}
	k.log.Error("the agent has not fed an answered heartbeat for T_fence: killing the host's HA vms", "vms", len(procs))
	failedAt := killAll(fds, 5*time.Second)
	var killed, failed []Proc
	for i, p := range procs {
		if err, bad := failedAt[i]; bad {
			k.log.Error("keeper: killing ha vm failed", "vm", p.Name, "uid", p.UID, "pid", p.PID, "err", err)
			failed = append(failed, p)
			continue
		}
		k.log.Warn("keeper: killed ha vm", "vm", p.Name, "uid", p.UID, "pid", p.PID)
		closeFD(k.fds[p.UID])
		delete(k.fds, p.UID)
		killed = append(killed, p)
	}
	f := k.w.Fired(now, time.Now(), killed, failed)
	if b, err := json.Marshal(f); err == nil {
		if _, err := k.record.Write(append(b, '\n')); err != nil {
			k.log.Error("recording the keeper's firing", "err", err)
		}
	}
}

func (k *keeper) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go k.serve(c)
	}
}

// serve answers one agent's feeds, one JSON line each way.
func (k *keeper) serve(c net.Conn) {
	defer c.Close()
	k.mu.Lock()
	k.conns[c] = true
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.conns, c)
		k.idle = time.Now()
		k.mu.Unlock()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), maxFeed)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		var f Feed
		var st State
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			st = State{Message: fmt.Sprintf("bad feed: %v", err)}
		} else {
			st = k.feed(f)
		}
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := enc.Encode(st); err != nil {
			return
		}
	}
}

// feed takes one feed and says the keeper's state.
func (k *keeper) feed(f Feed) State {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := Now()
	if f.Contact != 0 {
		// A contact from the future would keep the keeper from firing.
		k.w.Contact(min(time.Duration(f.Contact), now), time.Duration(f.TimeoutMS)*time.Millisecond)
	}
	if f.Known {
		k.setProcs(f.VMs)
	}
	st := k.w.State(now)
	if st.Refused = k.refused; len(st.Refused) > 0 && st.Armed {
		// A VM's process it does not hold is not guarded: the host must
		// not look safe to restart on timeout.
		st.Armed = false
		st.Message = fmt.Sprintf("not armed: does not hold %d HA vm process(es) the agent named", len(st.Refused))
	}
	return st
}

// setProcs replaces the held processes: those already held (same PID and
// start) keep their pidfds, new ones get one, and those no longer named
// are let go.
func (k *keeper) setProcs(procs []Proc) {
	held := map[string]Proc{}
	for _, p := range k.w.Procs() {
		held[p.UID] = p
	}
	var keep []Proc
	k.refused = nil
	next := map[string]int{}
	for _, p := range procs {
		if _, dup := next[p.UID]; dup || p.UID == "" {
			continue
		}
		if old, ok := held[p.UID]; ok && old.PID == p.PID && old.Start == p.Start {
			next[p.UID] = k.fds[p.UID]
			keep = append(keep, p)
			continue
		}
		fd, err := openProc(p)
		if err != nil {
			k.refused = append(k.refused, err.Error())
			continue
		}
		next[p.UID] = fd
		keep = append(keep, p)
	}
	for uid, fd := range k.fds {
		if nfd, ok := next[uid]; !ok || nfd != fd {
			closeFD(fd)
		}
	}
	k.fds = next
	k.w.SetProcs(keep)
	if len(k.refused) > 0 {
		k.log.Warn("keeper: not holding processes the agent named", "refused", errors.Join(toErrs(k.refused)...))
	}
}

func toErrs(s []string) []error {
	out := make([]error, len(s))
	for i, m := range s {
		out[i] = errors.New(m)
	}
	return out
}

func (k *keeper) closeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, fd := range k.fds {
		closeFD(fd)
	}
	k.fds = map[string]int{}
	for c := range k.conns {
		c.Close() // the agents see the keeper gone
	}
}
