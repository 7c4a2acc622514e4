package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestRealQEMU drives a real QEMU with no machine at all: it starts in
// seconds' fractions, answers QMP, and emits STOP/RESUME/SHUTDOWN events.
func TestRealQEMU(t *testing.T) {
	bin := peer.Binary(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-no-user-config",
		"-display", "none", "-S",
		"-chardev", "socket,id=qmp,path="+sock+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-waited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cl *Client
	for {
		cl, err = Dial(ctx, sock)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer cl.Close()
	if cl.Version().Major < 5 {
		t.Errorf("version %v", cl.Version())
	}

	var st struct {
		Status string `json:"status"`
	}
	if err := cl.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "prelaunch" {
		t.Fatalf("query-status = %+v, %v", st, err)
	}
	waitEvent := func(name string) Event {
		t.Helper()
		for {
			select {
			case ev, ok := <-cl.Events():
				if !ok {
					t.Fatalf("events closed waiting for %s", name)
				}
				if ev.Name == name {
					return ev
				}
			case <-ctx.Done():
				t.Fatalf("timeout waiting for %s", name)
			}
		}
	}
	// A descriptor passed along with getfd reaches QEMU under its name:
	// closefd knows it, and then no more.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := cl.ExecuteFile(ctx, "getfd", map[string]string{"fdname": "pv-test"}, nil, r); err != nil {
		t.Fatalf("getfd: %v", err)
	}
	if err := cl.Execute(ctx, "closefd", map[string]string{"fdname": "pv-test"}, nil); err != nil {
		t.Fatalf("closefd of a passed descriptor: %v", err)
	}
	var qerr *Error
	if err := cl.Execute(ctx, "closefd", map[string]string{"fdname": "pv-test"}, nil); !errors.As(err, &qerr) {
		t.Fatalf("closefd of a descriptor already closed = %v, want a qemu error", err)
	}
	if err := cl.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent("RESUME")
	if err := cl.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent("STOP")

	err = cl.Execute(ctx, "quit", nil, nil)
	if err != nil {
		t.Logf("quit: %v (the reply may race the close)", err)
	}
	ev := waitEvent("SHUTDOWN")
	var data struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(ev.Data, &data)
	if data.Guest || data.Reason != "host-qmp-quit" {
		t.Errorf("SHUTDOWN data = %s", ev.Data)
	}
	select {
	case <-cl.Done():
	case <-ctx.Done():
		t.Fatal("connection not seen closed after quit")
	}
	select {
	case <-waited:
	case <-ctx.Done():
		t.Fatal("qemu did not exit after quit")
	}
}
