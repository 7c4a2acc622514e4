package server

import (
	"context"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestLeaseActsOnce: while the stop and then the delete of an expired
// lease wait behind the VM's other operations, many rounds of the lease
// loop issue each of them once: one operation and one audit record per
// lease action.
func TestLeaseActsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "lab", MaxLeaseSeconds: 3600, LeaseGraceSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	e.importImage(ctx, "lab", "img")
	lab := e.super.WithProject("lab")
	// The host never reports: the create stays running and whatever the
	// lease asks waits behind it.
	op, err := lab.CreateVM(ctx, api.VMCreate{Name: "short", VCPUs: 1, MemoryMiB: 64, Host: "h1",
		Disks: []api.Disk{{Image: "img"}}, LeaseSeconds: 600}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := e.s.vms.Get("lab/short")
	lease := *vm.Spec.Lease
	// The lease loop runs every 200 ms on the real clock; these rounds
	// run on a clock past the expiry, then past the grace period.
	for range 10 {
		e.s.ctl.Leases.Expire(ctx, lease.ExpiresAt.Add(time.Second))
	}
	for range 10 {
		e.s.ctl.Leases.Expire(ctx, lease.DeleteAt.Add(time.Second))
	}
	ops, err := lab.ListAllOperations(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, o := range ops {
		if o.Target.Name == "short" {
			count[o.Kind]++
		}
	}
	if count[api.OpVMCreate] != 1 || count[api.OpVMStop] != 1 || count[api.OpVMDelete] != 1 {
		t.Errorf("operations on the vm: %v, want one create, one stop and one delete", count)
	}
	if q := e.s.ctl.Ops.ActiveOf("lab/short"); len(q) != 3 || q[0] != op.ID {
		t.Errorf("queue of the vm: %v, want the create %s, then the stop and the delete", q, op.ID)
	}
	recs, err := e.super.ListAudit(ctx, api.AuditQuery{Project: "lab", Action: "vm.lease."})
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	for _, r := range recs {
		audited[r.Action]++
	}
	if audited["vm.lease.stop"] != 1 || audited["vm.lease.delete"] != 1 || len(recs) != 2 {
		t.Errorf("audit records of the lease: %v, want one stop and one delete", audited)
	}
}
