package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestLeaseExpiry: a VM with a short lease, in a project with a short
// grace period, is stopped at expiry and deleted after the grace period;
// both steps are operations with audit records, and the countdown shows
// in the VM.
func TestLeaseExpiry(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir(), "--lease-interval", "250ms")
	ctx := context.Background()
	if _, err := srv.c.CreateProject(ctx, api.ProjectCreate{Name: "lab", MaxLeaseSeconds: 3600, LeaseGraceSeconds: 4}); err != nil {
		t.Fatal(err)
	}
	c := srv.c.WithProject("lab")
	importGuest(t, c)

	// Over the project's maximum is refused, naming the field.
	req := guestVM("short")
	req.LeaseSeconds = 7200
	if _, err := c.CreateVM(ctx, req, client.CreateOptions{}); err == nil || !isInvalid(err, "leaseSeconds") {
		t.Fatalf("lease over the maximum: %v, want 400 naming leaseSeconds", err)
	}
	req.LeaseSeconds = 12
	op, err := c.CreateVM(ctx, req, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	vm, err := c.GetVM(ctx, "short")
	if err != nil {
		t.Fatal(err)
	}
	l := vm.Spec.Lease
	if l == nil || time.Until(l.ExpiresAt) > 13*time.Second || l.DeleteAt.Sub(l.ExpiresAt) != 4*time.Second {
		t.Fatalf("lease %+v, want expiry within 12s and deletion 4s later", l)
	}
	// A VM created without asking gets the project's maximum.
	other := guestVM("long")
	other.PowerState = api.PowerStopped
	if op, err = c.CreateVM(ctx, other, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	if long, _ := c.GetVM(ctx, "long"); long.Spec.Lease == nil || time.Until(long.Spec.Lease.ExpiresAt) < 59*time.Minute {
		t.Errorf("vm created without a lease in a project with a maximum: %+v", long.Spec.Lease)
	}

	// The stop comes first; on a slow machine the grace period may end
	// before a poll sees the stopped VM, so its deletion also ends this
	// wait: the audit records below show both steps were taken, in order.
	eventually(t, 60*time.Second, "the expired vm is stopped", func() error {
		vm, err := c.GetVM(ctx, "short")
		var se *client.StatusError
		if errors.As(err, &se) && se.Status == 404 {
			return nil
		}
		if err != nil {
			return err
		}
		if vm.Status.PowerState != api.PowerStopped || vm.Spec.Lease.StoppedAt.IsZero() {
			return fmt.Errorf("vm is %s (lease %+v)", vm.Status.PowerState, vm.Spec.Lease)
		}
		return nil
	})
	eventually(t, 60*time.Second, "the vm is deleted after the grace period", func() error {
		_, err := c.GetVM(ctx, "short")
		var se *client.StatusError
		if errors.As(err, &se) && se.Status == 404 {
			return nil
		}
		return fmt.Errorf("vm still there (%v)", err)
	})

	// Both steps left an operation and an audit record by the lease.
	recs, err := srv.c.ListAudit(ctx, api.AuditQuery{Project: "lab", Action: "vm.lease."})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	at := map[string]time.Time{}
	for _, r := range recs {
		if r.Resource.Name != "short" || r.Actor.Kind != "system" || r.Outcome != api.AuditSuccess || r.OperationID == "" {
			t.Errorf("lease record %+v", r)
			continue
		}
		got[r.Action] = r.OperationID
		at[r.Action] = r.Time
	}
	if !at["vm.lease.stop"].Before(at["vm.lease.delete"]) {
		t.Errorf("lease stop recorded at %v, delete at %v: want the stop first", at["vm.lease.stop"], at["vm.lease.delete"])
	}
	for action, kind := range map[string]string{"vm.lease.stop": api.OpVMStop, "vm.lease.delete": api.OpVMDelete} {
		id, ok := got[action]
		if !ok {
			t.Errorf("no %s audit record (have %v)", action, got)
			continue
		}
		// The VM disappears a moment before its delete operation is marked
		// done, so wait for the operation to end rather than read it once.
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		op, err := c.WaitOperation(wctx, id, nil)
		cancel()
		if err != nil || op.Kind != kind || op.Status != api.OpSucceeded {
			t.Errorf("%s operation %+v %v, want a succeeded %s", action, op, err, kind)
		}
	}
	// The other VM, whose lease runs on, is untouched.
	if long, err := c.GetVM(ctx, "long"); err != nil || long.Spec.Deletion != nil {
		t.Errorf("vm with a running lease: %+v %v", long, err)
	}
}

func isInvalid(err error, field string) bool {
	var se *client.StatusError
	return errors.As(err, &se) && se.Status == 400 && se.Err != nil && se.Err.Field == field
}
