package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestHostCordon: a cordoned host gets no new VM, pinned or not, and the
// VMs it runs stay; uncordoned, it takes VMs again.
func TestHostCordon(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	pa := e.super.WithProject("pa")
	h, err := e.super.CordonHost(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Spec.Unschedulable {
		t.Fatalf("cordoned host: %+v", h.Spec)
	}
	_, err = pa.CreateVM(ctx, api.VMCreate{Name: "pinned", VCPUs: 1, MemoryMiB: 128, Host: "h2", Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
	if statusOfErr(err) != 422 || !strings.Contains(err.Error(), "unschedulable") {
		t.Errorf("a VM pinned to a cordoned host: %v, want 422 naming it unschedulable", err)
	}
	for i := range 3 {
		op, err := pa.CreateVM(ctx, api.VMCreate{Name: "free" + string(rune('a'+i)), VCPUs: 1, MemoryMiB: 128, Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vm, err := pa.GetVM(ctx, op.Target.Name)
		if err != nil {
			t.Fatal(err)
		}
		if vm.Spec.Host != "h1" {
			t.Errorf("VM %s placed on %s while h2 is cordoned", vm.Name, vm.Spec.Host)
		}
	}
	if _, err := e.super.CordonHost(ctx, "ghost"); statusOfErr(err) != 404 {
		t.Errorf("cordoning a host that does not exist: %v, want 404", err)
	}
	if _, err := e.as(api.RoleAdmin, "pa").CordonHost(ctx, "h1"); statusOfErr(err) != 403 {
		t.Errorf("a project admin cordoning a host: %v, want 403", err)
	}
	if h, err = e.super.UncordonHost(ctx, "h2"); err != nil || h.Spec.Unschedulable {
		t.Fatalf("uncordon: %+v %v", h, err)
	}
	if _, err := pa.CreateVM(ctx, api.VMCreate{Name: "pinned", VCPUs: 1, MemoryMiB: 128, Host: "h2", Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{}); err != nil {
		t.Errorf("a VM pinned to an uncordoned host: %v", err)
	}
	e.audited(t, "host.cordon", "h2")
	e.audited(t, "host.uncordon", "h2")
}

// audited checks the audit log holds a successful record of action on host.
func (e *env) audited(t *testing.T, action, host string) {
	t.Helper()
	found := false
	if err := e.s.audit.Query(context.Background(), api.AuditQuery{Action: action}, func(r *api.AuditRecord) bool {
		if r.Resource.Name == host && r.Outcome == api.AuditSuccess {
			found = true
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Errorf("no audit record of %s on host %s", action, host)
	}
}

// TestHostDelete: a host is deleted only once no VM is placed on it (the
// refusal names them, and leaves the host as it was); a deleted host's
// token is dead.
func TestHostDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	err := e.super.DeleteHost(ctx, "h1")
	if statusOfErr(err) != 409 || !strings.Contains(err.Error(), "pa/vm1") || !strings.Contains(err.Error(), "pb/vm1") {
		t.Fatalf("deleting a host with VMs: %v, want 409 naming pa/vm1 and pb/vm1", err)
	}
	if h, err := e.super.GetHost(ctx, "h1"); err != nil || h.Spec.Unschedulable {
		t.Errorf("a refused delete left the host %+v (%v), want it schedulable as before", h, err)
	}

	// A VM being deleted still holds its host, until its agent removes it.
	pa := e.super.WithProject("pa")
	h2 := e.client(e.tokens["h2"], "")
	op, err := pa.CreateVM(ctx, api.VMCreate{Name: "on-h2", VCPUs: 1, MemoryMiB: 128, Host: "h2", Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := pa.GetVM(ctx, "on-h2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.PutVMStatus(ctx, vm.Key(), api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: vm.Generation}); err != nil {
		t.Fatal(err)
	}
	if op, err = e.super.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("create on h2: %+v %v", op, err)
	}
	if _, err := pa.DeleteVM(ctx, "on-h2", false); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		vm, err = pa.GetVM(ctx, "on-h2")
		if err == nil && vm.Spec.Deletion != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VM's deletion never started: %+v %v", vm, err)
		}
	}
	err = e.super.DeleteHost(ctx, "h2")
	if statusOfErr(err) != 409 || !strings.Contains(err.Error(), "pa/on-h2 (being deleted)") {
		t.Fatalf("deleting a host whose VM is being deleted: %v, want 409 naming it", err)
	}
	if err := h2.VMRemoved(ctx, vm.Key()); err != nil {
		t.Fatal(err)
	}
	if err := e.super.DeleteHost(ctx, "h2"); err != nil {
		t.Fatalf("deleting an empty host: %v", err)
	}
	if _, err := e.super.GetHost(ctx, "h2"); statusOfErr(err) != 404 {
		t.Errorf("the deleted host: %v, want 404", err)
	}
	if _, err := h2.PutHostStatus(ctx, "h2", api.HostStatus{CPUs: 1, MemoryMiB: 1}); statusOfErr(err) != 401 {
		t.Errorf("the deleted host's token: %v, want 401", err)
	}
	e.audited(t, "host.delete", "h2")

	// A provider's hosts are its provider's to manage.
	now := time.Now().UTC()
	ph := &api.Host{Meta: api.Meta{Name: "esx1", UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		Provider: &api.ProviderRef{Name: "vc1", ID: "host-1"}}
	if _, err := e.s.hosts.Create(ctx, ph.Name, ph); err != nil {
		t.Fatal(err)
	}
	if err := e.super.DeleteHost(ctx, "esx1"); statusOfErr(err) != 409 || !strings.Contains(err.Error(), "provider") {
		t.Errorf("deleting a provider's host: %v, want 409 naming its provider", err)
	}
	if _, err := e.super.RevokeHost(ctx, "esx1"); statusOfErr(err) != 409 {
		t.Errorf("revoking a provider's host: %v, want 409", err)
	}
}
