package server

// Helpers of the controller tests (placer, locks, resize, liveness,
// leases). Their names start with "ctl" so that other test files of the
// package cannot clash with them.

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
)

// ctlEventually calls cond until it returns nil, failing the test with
// its last error after d.
func ctlEventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctlReopen closes the env's server and starts another over the same data
// dir, hence over the same embedded etcd data, as after a crash or an
// upgrade. It returns the env of the new server; tokens stay valid.
func (e *env) ctlReopen(cfg Config) *env {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("closing the server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := *e
	cfg.DataDir = e.dataDir
	cfg.Listen = "127.0.0.1:0"
	cfg.Socket = filepath.Join(e.dataDir, "polyvisor.sock")
	cfg.Logger = e.s.log
	if cfg.LeaseInterval == 0 {
		cfg.LeaseInterval = 200 * time.Millisecond
	}
	s, err := New(ctx, cfg)
	if err != nil {
		e.t.Fatalf("New after a restart: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		e.t.Fatalf("Start after a restart: %v", err)
	}
	e.t.Cleanup(func() { s.Close() })
	n.s = s
	n.url = "https://" + s.Addr().String()
	n.super = n.client(s.AdminToken(), "")
	return &n
}

// ctlHostStatus is what a small test host reports.
func ctlHostStatus(cpus int, memMiB int64) api.HostStatus {
	return api.HostStatus{State: api.HostReady, CPUs: cpus, MemoryMiB: memMiB, DiskTotalMiB: 1 << 20, DiskFreeMiB: 1 << 20,
		Accel: "tcg", Drivers: []string{"qemu"}}
}

// ctlJoin registers a host the test speaks for and returns its token. With
// beat, the host heartbeats until the server closes; without, it is silent
// after registering.
func (e *env) ctlJoin(ctx context.Context, name string, st api.HostStatus, beat bool) string {
	e.t.Helper()
	jt, err := e.s.MintJoinToken(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	creds, err := e.client("", "").Register(ctx, api.AgentRegister{JoinToken: jt, Host: name, Status: st})
	if err != nil {
		e.t.Fatalf("registering %s: %v", name, err)
	}
	if beat {
		e.ctlBeat(name, creds.Token, st)
	}
	return creds.Token
}

// ctlBeat heartbeats host to the env's server until the server closes.
func (e *env) ctlBeat(host, token string, st api.HostStatus) {
	c := e.client(token, "")
	life := e.s.life
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-life.Done():
				return
			case <-tick.C:
				_, _ = c.PutHostStatus(context.Background(), host, st)
			}
		}
	}()
}

// ctlCreate creates a VM of a size on a host in the client's project.
func ctlCreate(t *testing.T, c *client.Client, name, host string, vcpus int, memMiB int64) *api.Operation {
	t.Helper()
	op, err := c.CreateVM(context.Background(), api.VMCreate{Name: name, VCPUs: vcpus, MemoryMiB: memMiB, Host: host,
		PowerState: api.PowerStopped, Disks: []api.Disk{{SizeMiB: 1}}}, client.CreateOptions{})
	if err != nil {
		t.Fatalf("creating vm %s on %s: %v", name, host, err)
	}
	return op
}

// ctlObserved reports, as the VM's host would, that it carried out the
// VM's desired state, until no operation of the VM is left.
func (e *env) ctlObserved(t *testing.T, hostToken, key string) {
	t.Helper()
	host := e.client(hostToken, "")
	ctlEventually(t, 10*time.Second, "the operations of vm "+key+" finish", func() error {
		// The store, not the controller's queue: after a restart the
		// queue may not be rebuilt yet.
		ids := listAll(e.s.ops, func(op *api.Operation) bool { return ops.TargetKey(op.Target) == key && !op.Done() })
		if len(ids) == 0 {
			return nil
		}
		vm, ok := e.s.vms.Get(key)
		if !ok {
			return fmt.Errorf("vm %s not found", key)
		}
		if vm.Status.ObservedGeneration < vm.Generation {
			st := api.VMStatus{PowerState: vm.Spec.PowerState, ObservedGeneration: vm.Generation}
			if _, err := host.PutVMStatus(context.Background(), key, st); err != nil {
				return fmt.Errorf("reporting vm %s: %w", key, err)
			}
		}
		return fmt.Errorf("%d operations still active", len(ids))
	})
}

// ctlAllocated reads a host's allocation through the API.
func (e *env) ctlAllocated(t *testing.T, host string) api.Allocation {
	t.Helper()
	h, err := e.super.GetHost(context.Background(), host)
	if err != nil {
		t.Fatalf("reading host %s: %v", host, err)
	}
	return h.Status.Allocated
}
