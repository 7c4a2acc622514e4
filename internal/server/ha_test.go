package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/store"
)

// haHost joins a host whose heartbeats (every 100ms) the test turns off
// and on.
func (e *env) haHost(ctx context.Context, name string, alive *atomic.Bool) string {
	jt, err := e.s.MintJoinToken(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	// Its keeper armed: fencing on timeout applies to it.
	st := api.HostStatus{State: api.HostReady, CPUs: 8, MemoryMiB: 8 << 10, Accel: "tcg", Drivers: []string{"qemu"},
		Keeper: &api.HostKeeper{Armed: true, Message: "armed"}}
	creds, err := e.client("", "").Register(ctx, api.AgentRegister{JoinToken: jt, Host: name, Status: st})
	if err != nil {
		e.t.Fatalf("registering %s: %v", name, err)
	}
	alive.Store(true)
	e.tokens[name] = creds.Token
	go func() {
		c := e.client(creds.Token, "")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-e.s.life.Done():
				return
			case <-tick.C:
				if alive.Load() {
					_, _ = c.PutHostStatus(context.Background(), name, st)
				}
			}
		}
	}()
	return creds.Token
}

// TestHAPolicyAndFencing holds the HA policy's refusals and defaults,
// and the leader's fencing of a silent host with hosts the test speaks
// for (no QEMU): the HA VM moves to the one other host that sees its
// pool, as a vm.ha.restart operation, no earlier than T_fence + margin
// after the last heartbeat; a VM without HA stays; the host returns.
func TestHAPolicyAndFencing(t *testing.T) {
	e := newEnv(t, Config{HA: HAConfig{FenceTimeout: 1500 * time.Millisecond, Margin: 1200 * time.Millisecond, FenceOnTimeout: true, ClockSkew: 100 * time.Millisecond}, HeartbeatTimeout: 3 * time.Second})
	ctx := context.Background()
	var aliveA, aliveB atomic.Bool
	tokA := e.haHost(ctx, "ha-a", &aliveA)
	tokB := e.haHost(ctx, "ha-b", &aliveB)
	m := e.as(api.RoleMember, "pa")

	// Refusals, each a 422 naming ha.
	_, err := m.SetVMHA(ctx, "vm1", api.HARestart)
	wantStatus(t, "ha restart for a vm with a disk of its own", err, 422, "disks of its own")
	_, err = m.CreateVM(ctx, api.VMCreate{Name: "d", VCPUs: 1, MemoryMiB: 64, HA: api.HARestart, Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
	wantStatus(t, "creating an ha vm with a disk", err, 422, "shared pool")
	_, err = m.SetVMHA(ctx, "vm1", "always")
	wantStatus(t, "an unknown policy", err, 400, "ha")
	_, err = m.CreateVM(ctx, api.VMCreate{Name: "d", VCPUs: 1, MemoryMiB: 64, HA: "always"}, client.CreateOptions{})
	wantStatus(t, "creating with an unknown policy", err, 400, "ha")

	for _, p := range []api.PoolCreate{
		{Name: "sh", Kind: api.PoolShared, Path: "/srv/sh", Hosts: []string{"ha-a", "ha-b"}, Projects: []string{"pa"}},
		{Name: "local-a", Kind: api.PoolDir, Path: "/srv/la", Hosts: []string{"ha-a"}, Projects: []string{"pa"}},
	} {
		if _, err := e.super.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []api.VolumeCreate{{Name: "shv", Pool: "sh", Host: "ha-a", SizeMiB: 16}, {Name: "lv", Pool: "local-a", SizeMiB: 16}} {
		nv, err := m.CreateVolume(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		readyVolume(t, e, "ha-a", "pa/"+v.Name, nv.Generation)
	}
	// The project's default applies to a vm without disks only.
	def := api.HARestart
	if _, err := e.super.UpdateProject(ctx, "pa", api.ProjectUpdate{HADefault: &def}); err != nil {
		t.Fatal(err)
	}
	bad := "sometimes"
	_, err = e.super.UpdateProject(ctx, "pa", api.ProjectUpdate{HADefault: &bad})
	wantStatus(t, "an unknown project default", err, 400, "haDefault")
	raw := make([]byte, 4096)
	op, err := e.super.WithProject("pa").UploadImage(ctx, "kern", api.ImageKernel, bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if op, err = e.super.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("importing a kernel: %+v %v", op, err)
	}
	for _, name := range []string{"hav", "plain"} {
		if _, err := m.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 64, Host: "ha-a", Boot: api.Boot{Kernel: "kern"}}, client.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.ctlObserved(t, tokA, "pa/"+name)
	}
	if _, err := m.SetVMHA(ctx, "plain", api.HANone); err != nil {
		t.Fatal(err)
	}
	// unconfirmed is HA (the project's default) but ha-a never reports
	// it: its agent may not know to stop it when cut off, so a fencing on
	// timeout alone must leave it where it is.
	if _, err := m.CreateVM(ctx, api.VMCreate{Name: "unconfirmed", VCPUs: 1, MemoryMiB: 64, Host: "ha-a", Boot: api.Boot{Kernel: "kern"}}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if vm, err := m.GetVM(ctx, "unconfirmed"); err != nil || vm.Spec.HA != api.HARestart || vm.Spec.HASince != vm.Generation {
		t.Fatalf("unconfirmed: ha %q since %d at generation %d (%v)", vm.Spec.HA, vm.Spec.HASince, vm.Generation, err)
	}
	if _, err := m.CreateVM(ctx, api.VMCreate{Name: "withdisk", VCPUs: 1, MemoryMiB: 64, Host: "ha-a", Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"hav": api.HARestart, "plain": api.HANone, "withdisk": ""} {
		if vm, err := m.GetVM(ctx, name); err != nil || vm.Spec.HA != want {
			t.Errorf("vm %s: ha %q (%v), want %q", name, vm.Spec.HA, err, want)
		}
	}
	_, err = m.AttachVolume(ctx, "lv", "hav")
	wantStatus(t, "a dir pool's volume on an ha vm", err, 422, "not shared")
	if _, err := m.AttachVolume(ctx, "shv", "hav"); err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, tokA, "pa/hav")

	// ha-a goes silent.
	aliveA.Store(false)
	cut := time.Now()
	var moved *api.VM
	ctlEventually(t, 15*time.Second, "hav restarts on ha-b", func() error {
		vm, err := m.GetVM(ctx, "hav")
		if err != nil {
			return err
		}
		if vm.Spec.Host != "ha-b" || vm.Spec.HARestart == nil {
			return fmt.Errorf("on %s", vm.Spec.Host)
		}
		moved = vm
		return nil
	})
	h, err := e.super.GetHost(ctx, "ha-a")
	if err != nil {
		t.Fatal(err)
	}
	if h.Fence == nil || h.Fence.State != api.FenceFenced || h.Fence.By != "timeout" || len(h.Fence.VMs) != 1 || h.Fence.VMs[0] != "pa/hav" {
		t.Fatalf("ha-a's fence %+v", h.Fence)
	}
	if lag := h.Fence.FencedAt.Sub(h.Fence.LastHeartbeat); lag < 2700*time.Millisecond {
		t.Errorf("fenced %v after the last heartbeat, before T_fence + margin (2.7s)", lag)
	}
	if h.FenceTimeoutMS != 1500 {
		t.Errorf("fenceTimeoutMS %d", h.FenceTimeoutMS)
	}
	t.Logf("silent → restart placed %v", moved.Spec.HARestart.At.Sub(cut))
	op, err = m.GetOperation(ctx, moved.Spec.HARestart.Operation)
	if err != nil || op.Kind != api.OpVMHARestart || op.Status != api.OpRunning || op.TargetGeneration != moved.Generation {
		t.Fatalf("restart operation %+v, %v", op, err)
	}
	if vm, _ := m.GetVM(ctx, "plain"); vm.Spec.Host != "ha-a" {
		t.Errorf("the vm without ha moved to %s", vm.Spec.Host)
	}
	if vm, _ := m.GetVM(ctx, "unconfirmed"); vm.Spec.Host != "ha-a" || vm.Spec.HARestart != nil {
		t.Errorf("the vm whose host never reported its policy moved to %s", vm.Spec.Host)
	}
	recs, err := e.super.ListAudit(ctx, api.AuditQuery{Action: api.OpVMHARestart, Outcome: api.AuditFailure})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Resource.Name != "unconfirmed" || !strings.Contains(recs[0].Message, "never reported generation") {
		t.Errorf("audit of the vm not restarted: %+v", recs)
	}
	// ha-b reports it running: the operation succeeds.
	e.ctlObserved(t, tokB, "pa/hav")
	// ha-a returns: fenced becomes returned, nothing moves back.
	aliveA.Store(true)
	ctlEventually(t, 5*time.Second, "ha-a returns", func() error {
		h, err := e.super.GetHost(ctx, "ha-a")
		if err != nil {
			return err
		}
		if h.Fence == nil || h.Fence.State != api.FenceReturned || h.Fence.ReturnedAt.IsZero() {
			return fmt.Errorf("fence %+v", h.Fence)
		}
		return nil
	})
	if vm, _ := m.GetVM(ctx, "hav"); vm.Spec.Host != "ha-b" {
		t.Errorf("hav on %s after ha-a returned", vm.Spec.Host)
	}
}

// TestHAFenceHook: with a fence hook that succeeds, a silent host is
// fenced as soon as the hook ran (T_fence after its last heartbeat), long
// before T_fence + margin, and the hook was given the host's name.
func TestHAFenceHook(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hook.out")
	e := newEnv(t, Config{HA: HAConfig{FenceTimeout: time.Second, Margin: time.Minute,
		Hook: []string{"sh", "-c", `echo "powering off $0 at $POLYVISOR_HOST_ADDRESS" >>` + out}}})
	ctx := context.Background()
	var alive, aliveB atomic.Bool
	tok := e.haHost(ctx, "ha-a", &alive)
	e.haHost(ctx, "ha-b", &aliveB)
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "sh", Kind: api.PoolShared, Path: "/srv/sh", Hosts: []string{"ha-a", "ha-b"}, Projects: []string{"pa"}}); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4096)
	op, err := e.super.WithProject("pa").UploadImage(ctx, "kern", api.ImageKernel, bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if op, err = e.super.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("importing a kernel: %+v %v", op, err)
	}
	m := e.as(api.RoleMember, "pa")
	if _, err := m.CreateVM(ctx, api.VMCreate{Name: "hav", VCPUs: 1, MemoryMiB: 64, Host: "ha-a", HA: api.HARestart, Boot: api.Boot{Kernel: "kern"}}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, tok, "pa/hav")
	alive.Store(false)
	ctlEventually(t, 20*time.Second, "ha-a fenced by the hook", func() error {
		h, err := e.super.GetHost(ctx, "ha-a")
		if err != nil {
			return err
		}
		if h.Fence == nil || h.Fence.State != api.FenceFenced {
			return fmt.Errorf("fence %+v", h.Fence)
		}
		if h.Fence.By != "hook" || !strings.Contains(h.Fence.Hook, "powered off") {
			t.Fatalf("fenced %+v, want by the hook", h.Fence)
		}
		if lag := h.Fence.FencedAt.Sub(h.Fence.LastHeartbeat); lag < time.Second || lag > 30*time.Second {
			t.Fatalf("fenced %v after the last heartbeat, want from T_fence (1s) and well before the margin (1m)", lag)
		}
		return nil
	})
	b, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(b), "powering off ha-a") {
		t.Errorf("the hook's output %q, %v", b, err)
	}
	ctlEventually(t, 10*time.Second, "hav restarts on ha-b", func() error {
		vm, err := m.GetVM(ctx, "hav")
		if err != nil {
			return err
		}
		if vm.Spec.Host != "ha-b" {
			return fmt.Errorf("hav on %s", vm.Spec.Host)
		}
		return nil
	})
	// The hook's output and the VMs restarted of other projects are not
	// shown to users: a member of pb sees neither, one of pa its VM.
	ctlEventually(t, 5*time.Second, "ha-a lists hav as restarted", func() error {
		if h, err := e.super.GetHost(ctx, "ha-a"); err != nil || h.Fence == nil || len(h.Fence.VMs) != 1 || h.Fence.Hook == "" {
			return fmt.Errorf("superadmin sees %+v (%v)", h.Fence, err)
		}
		return nil
	})
	for who, want := range map[*client.Client]int{e.as("bob", "pb"): 0, m: 1} {
		h, err := who.GetHost(ctx, "ha-a")
		if err != nil {
			t.Fatal(err)
		}
		if h.Fence == nil || h.Fence.Hook != "" || len(h.Fence.VMs) != want {
			t.Errorf("a member of %s sees the fence %+v, want no hook output and %d vms", who.Project(), h.Fence, want)
		}
		hs, err := who.ListHosts(ctx, api.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs.Items {
			if h.Fence != nil && (h.Fence.Hook != "" || len(h.Fence.VMs) != want) {
				t.Errorf("listing, a member of %s sees the fence %+v", who.Project(), h.Fence)
			}
		}
	}
}

// TestHAHeartbeatNeedsTheStore: with HA on, a server that cannot reach
// the store does not answer a heartbeat from its index, which would renew
// the agent's contact (and keep it from fencing itself) while the leader
// fences the host: the heartbeat gets a 503.
func TestHAHeartbeatNeedsTheStore(t *testing.T) {
	e := newEnv(t, Config{HA: HAConfig{FenceTimeout: 20 * time.Second}})
	ctx := context.Background()
	var alive atomic.Bool
	tok := e.haHost(ctx, "ha-q", &alive)
	alive.Store(false)
	c := e.client(tok, "")
	st := api.HostStatus{State: api.HostReady, CPUs: 8, MemoryMiB: 8 << 10, Accel: "tcg", Drivers: []string{"qemu"}}
	h, err := c.PutHostStatus(ctx, "ha-q", st)
	if err != nil {
		t.Fatalf("heartbeat with the store: %v", err)
	}
	if h.Fence != nil {
		t.Fatalf("a heartbeating host has a fence record: %+v", h.Fence)
	}
	// Cut the server off its store: the index still holds the host.
	if err := e.s.st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.s.hosts.Get("ha-q"); !ok {
		t.Fatal("the index lost the host")
	}
	_, err = c.PutHostStatus(ctx, "ha-q", st)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable {
		t.Fatalf("heartbeat without the store: %v, want a 503 unavailable", err)
	}
}

// TestHAConfigMargin: the fence margin must exceed the heartbeat share
// period plus the clock skew allowed; unset, it is derived above it.
func TestHAConfigMargin(t *testing.T) {
	c := HAConfig{Margin: 5 * time.Second}
	err := c.defaults(15 * time.Second) // share 5s + skew 1s
	if err == nil || !strings.Contains(err.Error(), "--ha-fence-margin") {
		t.Fatalf("margin 5s, heartbeat timeout 15s: %v, want a refusal naming --ha-fence-margin", err)
	}
	c = HAConfig{}
	if err := c.defaults(15 * time.Second); err != nil || c.Margin != 7*time.Second {
		t.Fatalf("unset margin: %v, %s, want 7s", err, c.Margin)
	}
	c = HAConfig{Margin: 500 * time.Millisecond, ClockSkew: 100 * time.Millisecond}
	if err := c.defaults(time.Second); err != nil {
		t.Fatalf("margin 500ms, share 333ms, skew 100ms: %v", err)
	}
	c = HAConfig{FenceTimeout: -1, Margin: time.Millisecond}
	if err := c.defaults(15 * time.Second); err != nil {
		t.Fatalf("HA off: %v", err)
	}
}

// TestHASetRestartNeedsReadyHost: ha restart cannot be set on a VM whose
// host is silent (its agent would never learn it, so would not kill the
// VM when cut off, while the leader restarted it elsewhere); setting it
// on a ready host bumps the VM's generation, so that its agent learns it.
func TestHASetRestartNeedsReadyHost(t *testing.T) {
	e := newEnv(t, Config{HA: HAConfig{FenceTimeout: 20 * time.Second}})
	ctx := context.Background()
	var alive atomic.Bool
	tok := e.haHost(ctx, "ha-a", &alive)
	raw := make([]byte, 4096)
	op, err := e.super.WithProject("pa").UploadImage(ctx, "kern", api.ImageKernel, bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if op, err = e.super.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("importing a kernel: %+v %v", op, err)
	}
	m := e.as(api.RoleMember, "pa")
	_, err = m.CreateVM(ctx, api.VMCreate{Name: "v", VCPUs: 1, MemoryMiB: 64, Host: "ha-a", HA: api.HANone, Boot: api.Boot{Kernel: "kern"}}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, tok, "pa/v")
	vm, err := m.GetVM(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.SetVMHA(ctx, "v", api.HARestart)
	if err != nil {
		t.Fatal(err)
	}
	if got.Generation <= vm.Generation {
		t.Errorf("setting ha restart left the generation at %d (was %d): the agent would not learn it", got.Generation, vm.Generation)
	}
	if _, err := m.SetVMHA(ctx, "v", api.HANone); err != nil {
		t.Fatal(err)
	}
	// The host stops heartbeating and is marked not ready.
	alive.Store(false)
	cur, _ := e.s.hosts.Get("ha-a")
	next := store.Clone(cur)
	next.Status.State = api.HostNotReady
	if _, err := e.s.hosts.Update(ctx, "ha-a", next, cur.Version); err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 5*time.Second, "ha-a not ready in the index", func() error {
		if h, _ := e.s.hosts.Get("ha-a"); h.Status.State != api.HostNotReady {
			return fmt.Errorf("ha-a %s", h.Status.State)
		}
		return nil
	})
	_, err = m.SetVMHA(ctx, "v", api.HARestart)
	wantStatus(t, "ha restart on a not-ready host", err, 409, "not ready")
	if vm, _ := m.GetVM(ctx, "v"); vm.Spec.HA == api.HARestart {
		t.Error("ha restart was set on a vm whose host is not ready")
	}
}
