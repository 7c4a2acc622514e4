package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func tickCount(t *testing.T, c *client.Client, vm string) int {
	t.Helper()
	b, err := c.ConsoleLog(context.Background(), vm, 1<<20)
	if err != nil {
		t.Fatalf("reading console log: %v", err)
	}
	return strings.Count(string(b), "polyvisor-tick")
}

// TestVMLifecycle drives one VM through its whole life on real QEMU.
func TestVMLifecycle(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)
	if fi, err := os.Stat(filepath.Join(srv.dataDir, "admin.token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v, want mode 0600", fi, err)
	}

	// Follow the event stream for the whole test.
	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	events, _ := c.Events(evCtx, api.EventVM, api.EventOperation)
	seenEvents := make(chan []api.Event, 1)
	go func() {
		var all []api.Event
		for ev := range events {
			all = append(all, ev)
		}
		seenEvents <- all
	}()

	req := guestVM("life")
	req.CloudInit = &api.CloudInit{MetaData: "instance-id: iid-life\nlocal-hostname: life\n", UserData: "#cloud-config\n"}
	req.Labels = map[string]string{"suite": "e2e"}
	op, err := c.CreateVM(ctx, req, client.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	waitOK(t, c, op)
	vm, err := c.GetVM(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Status.PowerState != api.PowerRunning || vm.Status.PID == 0 || vm.Spec.Host != "local" {
		t.Fatalf("after create: %+v", vm.Status)
	}

	// The marker, and the seed delivered as cloud-init NoCloud data.
	log := waitConsole(t, c, "life", marker, 1)
	waitConsole(t, c, "life", "seed instance-id=iid-life", 1)
	_ = log

	// The interactive serial console streams the guest's output live.
	conn, err := c.Console(ctx, "life", "serial")
	if err != nil {
		t.Fatalf("opening the serial console: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	sc := bufio.NewScanner(conn)
	live := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "polyvisor-tick") {
			live = true
			break
		}
	}
	conn.Close()
	if !live {
		t.Fatalf("no tick line through the console websocket: %v", sc.Err())
	}

	// The graphical console: QEMU's VNC server through the same path.
	vnc, err := c.Console(ctx, "life", "vnc")
	if err != nil {
		t.Fatalf("opening the vnc console: %v", err)
	}
	_ = vnc.SetReadDeadline(time.Now().Add(10 * time.Second))
	banner := make([]byte, 12)
	if _, err := io.ReadFull(vnc, banner); err != nil || !strings.HasPrefix(string(banner), "RFB 003.") {
		t.Fatalf("vnc banner %q: %v", banner, err)
	}
	// What the running VM uses, sampled from its QEMU process.
	if st, err := c.VMStats(ctx, "life"); err != nil || st.CPUSeconds <= 0 || st.MemoryBytes < 10<<20 || st.VCPUs != 1 {
		t.Errorf("stats of a running vm: %+v %v", st, err)
	}
	// The VNC console is still open, and already in the audit log.
	recs, err := c.ListAudit(ctx, api.AuditQuery{Action: "vm.console", Resource: "vm/life"})
	if err != nil || len(recs) != 2 || recs[1].Status != 101 || recs[1].Outcome != api.AuditSuccess {
		t.Errorf("audit records of the two consoles: %+v %v", recs, err)
	}
	vnc.Close()

	// What the qemu driver cannot do is refused naming the capability.
	if _, err := c.CreateSnapshot(ctx, "life", api.SnapshotCreate{Name: "s1"}); client.HTTPStatus(err) != 422 || !strings.Contains(err.Error(), "snapshots") {
		t.Fatalf("snapshot of a qemu vm: %v, want 422 naming the capability", err)
	}

	// An action based on a stale version is a conflict.
	status, apiErr := rawRequestH(t, srv, "POST", "/v1/vms/life/pause", map[string]string{"If-Match": `"1"`})
	if status != 409 || !strings.Contains(apiErr.Message, "changed since version 1") {
		t.Fatalf("stale If-Match: %d %+v", status, apiErr)
	}

	// Pause: the guest stops printing. Resume: it goes on.
	waitOK(t, c, mustOp(t)(c.PauseVM(ctx, "life")))
	if vm, _ := c.GetVM(ctx, "life"); vm.Status.PowerState != api.PowerPaused {
		t.Fatalf("after pause: %s", vm.Status.PowerState)
	}
	n1 := tickCount(t, c, "life")
	time.Sleep(1500 * time.Millisecond)
	if n2 := tickCount(t, c, "life"); n2 != n1 {
		t.Fatalf("a paused guest printed %d tick lines", n2-n1)
	}
	waitOK(t, c, mustOp(t)(c.ResumeVM(ctx, "life")))
	eventually(t, 10*time.Second, "ticks resume", func() error {
		if tickCount(t, c, "life") > n1 {
			return nil
		}
		return errNotYet
	})

	// A graceful stop goes through the guest's ACPI path.
	pid := vm.Status.PID
	waitOK(t, c, mustOp(t)(c.StopVM(ctx, "life", &api.VMStop{TimeoutSeconds: 60})))
	vm, _ = c.GetVM(ctx, "life")
	if vm.Status.PowerState != api.PowerStopped {
		t.Fatalf("after stop: %s", vm.Status.PowerState)
	}
	waitConsole(t, c, "life", "acpi power button, powering off", 1)
	if alive(pid) {
		t.Fatalf("qemu %d still runs after stop", pid)
	}

	// Start again: a second boot, a new process.
	waitOK(t, c, mustOp(t)(c.StartVM(ctx, "life")))
	waitConsole(t, c, "life", marker, 2)
	vm, _ = c.GetVM(ctx, "life")
	if vm.Status.PID == 0 || vm.Status.PID == pid {
		t.Fatalf("after start: pid %d (was %d)", vm.Status.PID, pid)
	}

	// Restart: graceful stop then start, a third boot.
	waitOK(t, c, mustOp(t)(c.RestartVM(ctx, "life", nil)))
	waitConsole(t, c, "life", marker, 3)

	// Actions on one VM are serialized: a stop and a start sent back to
	// back run one after the other, the start waiting as pending.
	stopOp := mustOp(t)(c.StopVM(ctx, "life", nil))
	startOp := mustOp(t)(c.StartVM(ctx, "life"))
	if startOp.Status != api.OpPending {
		t.Fatalf("a start sent while a stop runs is %s, want pending", startOp.Status)
	}
	stopDone, startDone := waitOK(t, c, stopOp), waitOK(t, c, startOp)
	if startDone.StartedAt.Before(stopDone.FinishedAt) {
		t.Fatalf("start began at %s, before the stop ended at %s", startDone.StartedAt, stopDone.FinishedAt)
	}
	waitConsole(t, c, "life", marker, 4)

	// Metrics tell what happened.
	metrics := fetchMetrics(t, srv)
	for _, want := range []string{
		`polyvisor_api_requests_total{code="202",route="POST /v1/vms"} 1`,
		`polyvisor_operations_finished_total{kind="vm.create",status="succeeded"} 1`,
		`polyvisor_operations_finished_total{kind="vm.pause",status="succeeded"} 1`,
		`polyvisor_vms{state="running"} 1`,
		`polyvisor_host_cpus{host="local"}`,
		`polyvisor_host_allocated_memory_bytes{host="local"} 2.68435456e+08`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Delete: the VM and its files are gone.
	dir := srv.vmDir(vm.UID)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("vm dir: %v", err)
	}
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, "life", false)))
	if _, err := c.GetVM(ctx, "life"); !client.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("vm dir after delete: %v", err)
	}
	if pids := qemuPIDs(vm.UID); len(pids) != 0 {
		t.Fatalf("qemu processes left: %v", pids)
	}

	// The event stream saw the VM come and go and its operations finish.
	stopEvents()
	var created, deleted, createDone bool
	for _, ev := range <-seenEvents {
		switch {
		case ev.Type == api.EventVM && ev.Object.Name == "life" && ev.Action == "created":
			created = true
		case ev.Type == api.EventVM && ev.Object.Name == "life" && ev.Action == "deleted":
			deleted = true
		case ev.Type == api.EventOperation && ev.Operation.Kind == api.OpVMCreate && ev.Operation.Status == api.OpSucceeded:
			createDone = true
		}
	}
	if !created || !deleted || !createDone {
		t.Fatalf("events: vm created %v, deleted %v, create succeeded %v", created, deleted, createDone)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}

// mustOp turns an (op, err) pair into an op, failing the test on error.
func mustOp(t *testing.T) func(*api.Operation, error) *api.Operation {
	return func(op *api.Operation, err error) *api.Operation {
		t.Helper()
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		return op
	}
}
