package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// The fencing timings of the HA test's server: T_fence 3s, margin 1s.
const (
	haFence  = 3 * time.Second
	haMargin = time.Second
)

// haScript is the HA guest's boot script: it waits for its volume, then
// either finds the marker a previous boot wrote there or writes it, with
// an fsync: a write the guest did not flush may be lost with the QEMU the
// fencing kills, as with a power cut.
const haScript = `while [ ! -b /dev/vda ]; do sleep 0.1; done
m=$(head -c 6 /dev/vda)
if [ "$m" = HAMARK ]; then echo "ha-found-marker"; exit 0; fi
echo "ha-no-marker: $m"
printf HAMARK | dd of=/dev/vda conv=fsync 2>/dev/null && echo "ha-wrote-marker"
`

// diskHolders lists the QEMU processes holding path open, from their
// file descriptors (the agents pass QEMU an open file; its command line
// does not name the volume).
func diskHolders(path string) []int {
	var out []int
	for _, pid := range qemuPIDs("") {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == path {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// holderWatch checks, every 20ms until stopped, that at most one QEMU
// holds the disk and at most one QEMU runs the VM.
type holderWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  []string
	seen int
}

func watchHolders(path, uid string) *holderWatch {
	w := &holderWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			h, q := diskHolders(path), qemuPIDs(uid)
			w.mu.Lock()
			w.seen++
			if len(h) > 1 || len(q) > 1 {
				w.bad = append(w.bad, fmt.Sprintf("%s: holders of the disk %v, qemus of the vm %v", time.Now().Format("15:04:05.000"), h, q))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *holderWatch) end(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		t.Errorf("two QEMUs at once (%d of %d checks):\n%s", len(w.bad), w.seen, strings.Join(w.bad[:min(len(w.bad), 10)], "\n"))
	}
	t.Logf("disk holders checked %d times", w.seen)
}

// link sets a host's underlay link in its namespace up or down.
func (h *netHost) link(t *testing.T, state string) {
	t.Helper()
	sh(t, "ip", "-n", h.ns, "link", "set", "ul0", state)
}

// haWorld is two agent hosts in network namespaces, a shared pool both
// see, and an HA VM on hosta with its root volume there.
type haWorld struct {
	*netWorld
	vol *api.Volume
}

func newHAWorld(t *testing.T) *haWorld {
	w := &haWorld{netWorld: newNetWorld(t, "--heartbeat-timeout", "2s",
		"--ha-fence-timeout", haFence.String(), "--ha-fence-margin", haMargin.String(), "--ha-fence-on-timeout", "--ha-clock-skew", "200ms")}
	c, ctx := w.c, context.Background()
	importGuest(t, c)
	poolDir := filepath.Join(t.TempDir(), "shared")
	if _, err := c.CreatePool(ctx, api.PoolCreate{Name: "shared", Kind: api.PoolShared, Path: poolDir,
		Hosts: []string{"hosta", "hostb"}, Projects: []string{api.DefaultProject}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, api.VolumeCreate{Name: "hadisk", Pool: "shared", SizeMiB: 16}); err != nil {
		t.Fatal(err)
	}
	w.vol = waitVolume(t, c, "hadisk", api.VolumeReady)
	return w
}

// createHA makes the HA VM on host with the volume, and waits for the
// guest to use it.
func (w *haWorld) createHA(t *testing.T, host string) *api.VM {
	c, ctx := w.c, context.Background()
	req := api.VMCreate{Name: "havm", VCPUs: 1, MemoryMiB: 256, Host: host, HA: api.HARestart,
		Boot: api.Boot{Kernel: imgKernel, Initrd: imgInitrd, Cmdline: guest.RunCmdline(haScript)}}
	t0 := time.Now()
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	if _, err := c.AttachVolume(ctx, "hadisk", "havm"); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "havm", "ha-wrote-marker")
	t.Logf("the ha vm's first boot: create to its marker written %v", time.Since(t0))
	vm, err := c.GetVM(ctx, "havm")
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// cutAndRecover cuts from off its network and waits for the HA VM to run
// on the other host with its marker; it returns the time from the cut to
// the marker and the time from the cut to the old QEMU's end.
func (w *haWorld) cutAndRecover(t *testing.T, from, to *netHost, uid string) haTimes {
	t.Helper()
	return w.loseAndRecover(t, func() { from.link(t, "down") }, from, to, uid, true)
}

// loseAndRecover loses from (lose cuts its link, kills its agent...) and
// waits for the HA VM to run on the other host, and with needMarker for
// the guest to find its marker there.
func (w *haWorld) loseAndRecover(t *testing.T, lose func(), from, to *netHost, uid string, needMarker bool) haTimes {
	t.Helper()
	c, ctx := w.c, context.Background()
	oldPIDs := qemuPIDs(uid)
	if len(oldPIDs) != 1 {
		t.Fatalf("qemus of the ha vm before the cut: %v", oldPIDs)
	}
	t0 := time.Now()
	lose()
	var gone, booted time.Time
	// Generous: the guest boots under TCG on a machine that may be busy.
	eventually(t, 3*time.Minute, "the ha vm runs on "+to.name+" with its marker", func() error {
		if gone.IsZero() && !alive(oldPIDs[0]) {
			gone = time.Now()
		}
		vm, err := c.GetVM(ctx, "havm")
		if err != nil {
			return err
		}
		if vm.Spec.Host != to.name || vm.Status.PowerState != api.PowerRunning {
			return fmt.Errorf("on %s, %s", vm.Spec.Host, vm.Status.PowerState)
		}
		if !needMarker {
			return nil
		}
		b, err := c.ConsoleLog(ctx, "havm", 1<<20)
		if err != nil {
			return err
		}
		if booted.IsZero() && strings.Contains(string(b), marker) {
			booted = time.Now()
		}
		if !strings.Contains(string(b), "ha-found-marker") {
			if i := strings.Index(string(b), "ha-no-marker"); i >= 0 {
				t.Fatalf("the guest on %s did not find the marker on its volume: %s", to.name, strings.SplitN(string(b[i:]), "\n", 2)[0])
			}
			return fmt.Errorf("no marker yet on %s", to.name)
		}
		return nil
	})
	found := time.Since(t0)
	var running time.Duration
	if vm, err := c.GetVM(ctx, "havm"); err == nil && vm.Spec.HARestart != nil {
		h, _ := c.GetHost(ctx, from.name)
		op, _ := c.GetOperation(ctx, vm.Spec.HARestart.Operation)
		if h != nil && h.Fence != nil && op != nil {
			running = op.FinishedAt.Sub(t0)
			msg := fmt.Sprintf("lost at %s: last heartbeat %+v, fenced %+v, restart placed %+v, running %+v (operation done)",
				t0.Format("15:04:05.000"), h.Fence.LastHeartbeat.Sub(t0), h.Fence.FencedAt.Sub(t0), vm.Spec.HARestart.At.Sub(t0), op.FinishedAt.Sub(t0))
			if needMarker {
				msg += fmt.Sprintf(", guest booted %v, volume's marker found %v", booted.Sub(t0), found)
			}
			t.Log(msg)
		}
	}
	if gone.IsZero() {
		t.Fatalf("the old qemu %d still runs", oldPIDs[0])
	}
	return haTimes{killed: gone.Sub(t0), running: running, booted: booted.Sub(t0), marker: found}
}

// haTimes are the times from a cut to the old QEMU's end, to the VM
// reported running on the other host, to the guest's boot marker there
// and to the marker it finds on its volume.
type haTimes struct{ killed, running, booted, marker time.Duration }

// TestHARestart: an HA VM whose root volume is in a shared pool runs on
// hosta. A host only slow (its agent frozen for less than T_fence)
// triggers nothing. Cut off (its link down in its namespace), hosta's
// agent kills the HA VM within T_fence and leaves a VM without HA
// running; the leader fences hosta after T_fence and the margin and
// restarts the HA VM on hostb as an operation, where the guest finds the
// marker it wrote on hosta. At no moment do two QEMUs hold the disk.
// When hosta's link returns it starts nothing, and its killed copy goes.
func TestHARestart(t *testing.T) {
	w := newHAWorld(t)
	c, ctx := w.c, context.Background()
	hosta, hostb := w.hosts[0], w.hosts[1]

	// Refusals: a VM with a disk of its own, a dir pool's volume.
	bad := guestVM("local-disk")
	bad.HA = api.HARestart
	_, err := c.CreateVM(ctx, bad, client.CreateOptions{})
	wantAPIError(t, "ha restart for a vm with a disk of its own", err, 422, "shared pool")

	vm := w.createHA(t, "hosta")
	if vm.Spec.HA != api.HARestart {
		t.Fatalf("ha %q", vm.Spec.HA)
	}
	plain := api.VMCreate{Name: "plain", VCPUs: 1, MemoryMiB: 128, Host: "hosta",
		Boot: api.Boot{Kernel: imgKernel, Initrd: imgInitrd, Cmdline: guest.Cmdline}}
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, plain, client.CreateOptions{})))
	pv, err := c.GetVM(ctx, "plain")
	if err != nil {
		t.Fatal(err)
	}
	watch := watchHolders(w.vol.Status.Path, vm.UID)
	defer watch.end(t)

	// Slow: the agent frozen for 2s (heartbeats late, below T_fence).
	pid := vm.Status.PID
	if err := hosta.agent.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := hosta.agent.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(haFence + haMargin + time.Second)
	for time.Now().Before(deadline) {
		vm, err := c.GetVM(ctx, "havm")
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.GetHost(ctx, "hosta")
		if err != nil {
			t.Fatal(err)
		}
		if vm.Spec.Host != "hosta" || vm.Spec.HARestart != nil || h.Fence != nil || !alive(pid) {
			t.Fatalf("a slow host triggered something: vm on %s restart %+v, host fence %+v, qemu alive %v", vm.Spec.Host, vm.Spec.HARestart, h.Fence, alive(pid))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Cut.
	tm := w.cutAndRecover(t, hosta, hostb, vm.UID)
	t.Logf("cut → old qemu killed %v (T_fence %v); cut → marker on hostb %v", tm.killed, haFence, tm.marker)
	if !alive(pv.Status.PID) {
		t.Errorf("the vm without ha was killed by the fencing")
	}
	if !strings.Contains(hosta.agent.log.String(), "fencing: killed ha vm") {
		t.Errorf("hosta's agent did not log the fencing")
	}
	vm, err = c.GetVM(ctx, "havm")
	if err != nil {
		t.Fatal(err)
	}
	r := vm.Spec.HARestart
	if r == nil || r.From != "hosta" || r.To != "hostb" {
		t.Fatalf("ha restart record %+v", r)
	}
	if op := waitOK(t, c, &api.Operation{ID: r.Operation, Kind: api.OpVMHARestart}); op.Target.Name != "havm" {
		t.Errorf("operation %+v", op)
	}
	h, err := c.GetHost(ctx, "hosta")
	if err != nil {
		t.Fatal(err)
	}
	if h.Fence == nil || h.Fence.State != api.FenceFenced || !slices.Contains(h.Fence.VMs, vm.Key()) {
		t.Fatalf("hosta's fence %+v", h.Fence)
	}
	if lag := h.Fence.FencedAt.Sub(h.Fence.LastHeartbeat); lag < haFence+haMargin {
		t.Errorf("fenced %v after the last heartbeat, before T_fence + margin", lag)
	}

	// Return: hosta starts nothing, its copy goes.
	hosta.link(t, "up")
	eventually(t, 30*time.Second, "hosta returns", func() error {
		h, err := c.GetHost(ctx, "hosta")
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady || h.Fence == nil || h.Fence.State != api.FenceReturned {
			return fmt.Errorf("state %s fence %+v", h.Status.State, h.Fence)
		}
		if _, err := os.Stat(filepath.Join(hosta.dir, "vms", vm.UID)); !os.IsNotExist(err) {
			return fmt.Errorf("hosta still has the vm's directory: %v", err)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // a wrong restart would show by now
	if q := qemuPIDs(vm.UID); len(q) != 1 || q[0] != vm.Status.PID {
		t.Errorf("qemus of the ha vm after hosta returned: %v, want only %d on hostb", q, vm.Status.PID)
	}
	if !strings.Contains(hosta.agent.log.String(), "host is not fenced") {
		t.Errorf("hosta's agent did not log its return")
	}
	ops, err := c.ListOperations(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, op := range ops.Items {
		if op.Kind == api.OpVMHARestart {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ha restart operations, want 1", n)
	}

	// The agent killed where the VM now runs: its keeper kills the QEMU.
	w.agentKilled(t, hostb, hosta, vm.UID)
	// Its keeper killed on a host: no restart on its silence alone.
	w.keeperKilled(t, hosta, hostb)
}

// keeperPID is the pid of the keeper of an agent's state directory.
func keeperPID(dir string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "\x00keeper\x00") && strings.Contains(string(b), "\x00"+dir+"\x00") && alive(pid) {
			return pid
		}
	}
	return 0
}

// waitKeeper waits for a host to report its keeper armed, or not.
func (w *haWorld) waitKeeper(t *testing.T, h *netHost, armed bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s reports its keeper armed=%v", h.name, armed), func() error {
		hh, err := w.c.GetHost(context.Background(), h.name)
		if err != nil {
			return err
		}
		if k := hh.Status.Keeper; k == nil || k.Armed != armed {
			return fmt.Errorf("keeper %+v", k)
		}
		return nil
	})
}

// agentKilled: the agent of from, where the HA VM runs, is killed
// (SIGKILL), which kills nothing else. Its keeper kills the VM's QEMU
// T_fence after the last answered heartbeat, before the leader fences
// the host at T_fence + margin; the VM runs on to (the holder watch
// checks that two QEMUs never hold the disk; the cut above already
// showed the guest finds its marker after a restart). The
// agent started again adopts the keeper that kept running, and starts
// nothing.
func (w *haWorld) agentKilled(t *testing.T, from, to *netHost, uid string) {
	t.Helper()
	c, ctx := w.c, context.Background()
	w.waitKeeper(t, from, true)
	before, err := c.GetVM(ctx, "havm")
	if err != nil || before.Spec.Host != from.name {
		t.Fatalf("the ha vm before its agent is killed: %+v %v", before, err)
	}
	keeper := keeperPID(from.dir)
	tm := w.loseAndRecover(t, func() {
		if err := from.agent.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
	}, from, to, uid, false)
	t.Logf("%s's agent killed → old qemu killed %v (T_fence %v); → running on %s %v", from.name, tm.killed, haFence, to.name, tm.marker)
	if keeper == 0 || !alive(keeper) {
		t.Errorf("the keeper of %s (pid %d) did not outlive its agent", from.name, keeper)
	}
	rec, err := os.ReadFile(filepath.Join(from.dir, "keeper-fired.jsonl"))
	if err != nil {
		t.Fatalf("the keeper's record: %v", err)
	}
	var fired struct {
		At       time.Time
		SilentMS int64
		Killed   []string
	}
	lines := strings.Split(strings.TrimSpace(string(rec)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &fired); err != nil {
		t.Fatalf("the keeper's record %q: %v", rec, err)
	}
	h, err := c.GetHost(ctx, from.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(fired.Killed) != 1 || !strings.Contains(fired.Killed[0], "havm") || fired.SilentMS < haFence.Milliseconds() {
		t.Errorf("the keeper's firing %+v: want havm killed, no earlier than T_fence after the last answered heartbeat", fired)
	}
	if h.Fence == nil || h.Fence.State != api.FenceFenced || h.Fence.By != "timeout" || !fired.At.Before(h.Fence.FencedAt) {
		t.Errorf("%s's fence %+v: want fenced on timeout after the keeper fired at %s", from.name, h.Fence, fired.At)
	}
	if lag := h.Fence.FencedAt.Sub(h.Fence.LastHeartbeat); lag < haFence+haMargin {
		t.Errorf("fenced %v after the last heartbeat, before T_fence + margin", lag)
	}
	// Started again, the agent adopts the keeper and starts nothing.
	w.startAgent(from, false)
	eventually(t, 30*time.Second, from.name+" returns", func() error {
		h, err := c.GetHost(ctx, from.name)
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady || h.Fence == nil || h.Fence.State != api.FenceReturned {
			return fmt.Errorf("state %s fence %+v", h.Status.State, h.Fence)
		}
		return nil
	})
	w.waitKeeper(t, from, true)
	if !strings.Contains(from.agent.log.String(), "keeper connected") || strings.Contains(from.agent.log.String(), "started=true") {
		t.Errorf("%s's agent did not adopt the running keeper", from.name)
	}
	if k := keeperPID(from.dir); k != keeper {
		t.Errorf("%s's keeper is pid %d, want the one that kept running (%d)", from.name, k, keeper)
	}
}

// keeperKilled: the keeper of from, where the HA VM runs, is killed; the
// host then reports it unarmed, and once cut off it is marked unknown
// and its HA VM is not restarted elsewhere (other stays ready for it).
func (w *haWorld) keeperKilled(t *testing.T, from, other *netHost) {
	t.Helper()
	c, ctx := w.c, context.Background()
	w.waitKeeper(t, from, true)
	w.waitKeeper(t, other, true)
	k := keeperPID(from.dir)
	if k == 0 {
		t.Fatalf("no keeper runs for %s", from.name)
	}
	if err := syscall.Kill(k, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	w.waitKeeper(t, from, false)
	t.Logf("%s's keeper killed → the host reports it unarmed %v", from.name, time.Since(t0))
	if !strings.Contains(from.agent.log.String(), "lost the keeper") {
		t.Errorf("%s's agent did not log the keeper's loss", from.name)
	}
	from.link(t, "down")
	eventually(t, 30*time.Second, from.name+" is unknown", func() error {
		h, err := c.GetHost(ctx, from.name)
		if err != nil {
			return err
		}
		if h.Fence == nil || h.Fence.State != api.FenceUnknown {
			return fmt.Errorf("fence %+v", h.Fence)
		}
		return nil
	})
	time.Sleep(time.Second) // a wrong restart would show by now
	vm, err := c.GetVM(ctx, "havm")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.Host != from.name {
		t.Errorf("the ha vm of a host whose keeper was not armed was moved to %s", vm.Spec.Host)
	}
	ops, err := c.ListOperations(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, op := range ops.Items {
		if op.Kind == api.OpVMHARestart {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d ha restart operations, want 2", n)
	}
}

// TestHARestartBench measures, over POLYVISOR_HA_RUNS cuts (opt in), the
// time from a host's cut to the HA guest's marker on the other host. It
// asserts nothing about the times.
func TestHARestartBench(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("POLYVISOR_HA_RUNS"))
	if runs <= 0 {
		t.Skip("set POLYVISOR_HA_RUNS=5 to measure HA restarts")
	}
	w := newHAWorld(t)
	hosts := w.hosts
	vm := w.createHA(t, hosts[0].name)
	watch := watchHolders(w.vol.Status.Path, vm.UID)
	defer watch.end(t)
	var marks, kills, runnings []time.Duration
	for i := range runs {
		from, to := hosts[i%2], hosts[(i+1)%2]
		tm := w.cutAndRecover(t, from, to, vm.UID)
		marks, kills, runnings = append(marks, tm.marker), append(kills, tm.killed), append(runnings, tm.running)
		t.Logf("run %d: %s cut → old qemu killed %v, → running on %s %v, → guest booted %v, → volume's marker %v", i+1, from.name, tm.killed, to.name, tm.running, tm.booted, tm.marker)
		from.link(t, "up")
		eventually(t, 30*time.Second, from.name+" returns", func() error {
			h, err := w.c.GetHost(context.Background(), from.name)
			if err != nil {
				return err
			}
			if h.Status.State != api.HostReady || h.Fence == nil || h.Fence.State != api.FenceReturned {
				return fmt.Errorf("state %s fence %+v", h.Status.State, h.Fence)
			}
			return nil
		})
		time.Sleep(time.Second) // the returned agent's watch resyncs
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	t.Logf("HA restart over %d runs, T_fence %v, margin %v: cut → marker p50 %v p99 %v (max); cut → running elsewhere p50 %v p99 %v; cut → old qemu killed p50 %v p99 %v",
		runs, haFence, haMargin, pct(marks, 0.5), pct(marks, 0.99), pct(runnings, 0.5), pct(runnings, 0.99), pct(kills, 0.5), pct(kills, 0.99))
}
