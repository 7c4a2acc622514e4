package keeper

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The keeper's decisions on a fake clock: armed only once it knows
// T_fence, a contact and the set of HA VMs; due T_fence after the
// sending of the last answered heartbeat, never earlier; an older
// contact never moves the deadline back; it fires once per contact,
// again after a failed kill, and a newer contact arms it again.
func TestWatchTimeline(t *testing.T) {
	const T = 3 * time.Second
	w := NewWatch()
	now := 100 * time.Second
	if st := w.State(now); st.Armed || w.Due(now+time.Hour) {
		t.Fatalf("armed or due before any contact: %+v", st)
	}
	w.Contact(now, T)
	if st := w.State(now); st.Armed || !strings.Contains(st.Message, "list of HA vms") {
		t.Errorf("armed before the agent's list of HA vms: %+v", st)
	}
	p := Proc{UID: "u1", Name: "p/web", PID: 1234, Start: 99}
	w.SetProcs([]Proc{p})
	if st := w.State(now + T - time.Millisecond); !st.Armed || st.Guarded != 1 || st.DeadlineInMS != 1 {
		t.Errorf("not armed with a contact, T_fence and the list: %+v", st)
	}
	if w.Due(now + T - time.Millisecond) {
		t.Error("due before T_fence")
	}
	// An answer to an older heartbeat does not move the deadline back.
	w.Contact(now-time.Second, T)
	if !w.Due(now + T) {
		t.Error("not due at T_fence from the newest contact")
	}
	if st := w.State(now + T); st.Armed {
		t.Errorf("armed at the deadline: %+v", st)
	}
	// A kill that failed is tried again.
	w.Fired(now+T, time.Now(), nil, []Proc{p})
	if !w.Due(now + T + 50*time.Millisecond) {
		t.Error("not due again after a failed kill")
	}
	f := w.Fired(now+T+50*time.Millisecond, time.Now(), []Proc{p}, nil)
	if f.SilentMS != (T+50*time.Millisecond).Milliseconds() || len(f.Killed) != 1 || len(w.Procs()) != 0 {
		t.Errorf("firing %+v, procs left %v", f, w.Procs())
	}
	if w.Due(now + 2*T) {
		t.Error("due twice for one contact")
	}
	if st := w.State(now + 2*T); st.Armed || st.Fired == nil || !strings.Contains(st.Message, "fired") {
		t.Errorf("state after firing: %+v", st)
	}
	// A newer contact (the control plane answers again) arms it again.
	w.Contact(now+2*T, T)
	if st := w.State(now + 2*T); !st.Armed {
		t.Errorf("not armed again by a newer contact: %+v", st)
	}
	if w.Due(now + 3*T - time.Millisecond) {
		t.Error("due before T_fence from the newer contact")
	}
	// T_fence 0 from the server: HA is off, the keeper disarms.
	w.Contact(now+2*T+time.Second, 0)
	if st := w.State(now + 2*T + time.Second); st.Armed || w.Due(now+time.Hour) {
		t.Errorf("armed or due with T_fence 0: %+v", st)
	}
}

// sleeper starts a process that stands for a VM's QEMU.
func sleeper(t *testing.T, name string) (*exec.Cmd, Proc) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	start, err := ProcStart(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, Proc{UID: "uid-" + name, Name: name, PID: cmd.Process.Pid, Start: start}
}

func gone(pid int) bool {
	_, err := ProcStart(pid)
	return err != nil
}

// A real keeper, fed over its socket: it holds the processes it is told
// of (refusing one whose start time is not the process's, so a reused PID
// is never killed, and saying it is not armed while it does not hold
// every process named), does not fire while fed, kills every held process at
// once when the contacts stop for T_fence and no earlier than T_fence
// after the last (its record says how long), leaves other processes
// alone, is armed again by a newer contact, and exits once its socket is
// removed and it holds nothing.
func TestKeeperKillsWhenNotFed(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Dir: dir, Tick: 10 * time.Millisecond}) }()
	var c *Client
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if c, _, err = Start(ctx, dir, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer c.Close()
	if err := Run(ctx, Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second keeper on the same directory: %v", err)
	}
	a, pa := sleeper(t, "web")
	b, pb := sleeper(t, "db")
	other, po := sleeper(t, "plain")
	reused := po
	reused.UID, reused.Start = "uid-reused", po.Start+1 // a PID reused since
	const T = 3 * time.Second                           // well above a feed's delay on a busy machine
	st, err := c.Feed(Feed{Contact: int64(Now()), TimeoutMS: T.Milliseconds(), Known: true, VMs: []Proc{pa, pb, reused}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Armed || st.Guarded != 2 || len(st.Refused) != 1 || !strings.Contains(st.Refused[0], "not the vm's process") {
		t.Fatalf("state after a feed naming a process that is not the one named: %+v, want unarmed", st)
	}
	st, err = c.Feed(Feed{Known: true, VMs: []Proc{pa, pb}})
	if err != nil || !st.Armed || st.Guarded != 2 || len(st.Refused) != 0 {
		t.Fatalf("state after the feed of the two processes: %+v %v", st, err)
	}
	// Fed every 100ms for a while: nothing dies.
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if st, err = c.Feed(Feed{Contact: int64(Now()), TimeoutMS: T.Milliseconds()}); err != nil || !st.Armed {
			t.Fatalf("feed: %+v %v", st, err)
		}
	}
	if gone(pa.PID) || gone(pb.PID) {
		t.Fatal("a held process died while the keeper was fed")
	}
	// Silence: both held processes die.
	for deadline := time.Now().Add(10 * time.Second); !gone(pa.PID) || !gone(pb.PID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the keeper did not kill its processes")
		}
	}
	a.Wait()
	b.Wait()
	if gone(po.PID) {
		t.Error("the keeper killed a process it did not hold")
	}
	// The record is written once the kills are seen done, after the
	// processes are gone.
	var rec []byte
	for deadline := time.Now().Add(10 * time.Second); len(rec) == 0; time.Sleep(10 * time.Millisecond) {
		var err error
		if rec, err = os.ReadFile(RecordPath(dir)); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the keeper did not record its firing")
		}
	}
	var f Firing
	if err := json.NewDecoder(bufio.NewReader(strings.NewReader(string(rec)))).Decode(&f); err != nil {
		t.Fatalf("record %q: %v", rec, err)
	}
	if f.SilentMS < T.Milliseconds() || len(f.Killed) != 2 || len(f.Failed) != 0 {
		t.Errorf("firing %+v: want 2 killed, no earlier than %v after the last contact", f, T)
	}
	st, err = c.Feed(Feed{})
	if err != nil || st.Armed || st.Fired == nil || st.Guarded != 0 {
		t.Errorf("state after firing: %+v %v", st, err)
	}
	if st, err = c.Feed(Feed{Contact: int64(Now()), TimeoutMS: 60000}); err != nil || !st.Armed {
		t.Errorf("not armed again by a newer contact: %+v %v", st, err)
	}
	// The agent's state directory goes: the keeper, holding nothing, exits.
	os.Remove(SocketPath(dir))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("keeper: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the keeper did not exit once its socket was removed")
	}
	_ = other
}
