package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestVMMigrationRecord: a member records a migration, its runner reports
// progress and learns of a cancel in the answer; a finished migration
// takes no more reports; bad input names its field; another project sees
// nothing; every change is in the audit log.
func TestVMMigrationRecord(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	req := api.VMMigrationCreate{Name: "wave1", Source: "ova", Host: "h1", VMs: []api.VMMigrationVM{
		{Name: "web", SourceName: "Web 01", VCPUs: 2, MemoryMiB: 256, Disks: 1, CopyBytes: 64 << 20},
		{Name: "db", SourceName: "DB", VCPUs: 1, MemoryMiB: 128, Disks: 1, CopyBytes: 32 << 20},
	}}
	m, err := member.CreateVMMigration(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status.State != api.VMMigrationPending || m.Spec.Parallel != 2 || len(m.Status.VMs) != 2 || m.Project != "pa" {
		t.Fatalf("created %+v", m)
	}
	for _, tc := range []struct {
		change func(*api.VMMigrationCreate)
		field  string
	}{
		{func(r *api.VMMigrationCreate) { r.Name = "Bad Name" }, "name"},
		{func(r *api.VMMigrationCreate) { r.Host = "ghost" }, "host"},
		{func(r *api.VMMigrationCreate) { r.VMs = nil }, "vms"},
		{func(r *api.VMMigrationCreate) { r.VMs = []api.VMMigrationVM{{Name: "a"}, {Name: "a"}} }, "vms[1].name"},
		{func(r *api.VMMigrationCreate) { r.Parallel = 99 }, "parallel"},
	} {
		bad := req
		bad.Name = "other"
		tc.change(&bad)
		_, err := member.CreateVMMigration(ctx, bad)
		if errField(err) != tc.field {
			t.Errorf("create with bad %s: %v", tc.field, err)
		}
	}
	if _, err := member.CreateVMMigration(ctx, req); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create: %v", err)
	}
	if _, err := e.as(api.RoleViewer, "pa").CreateVMMigration(ctx, api.VMMigrationCreate{Name: "v", Source: "ova", Host: "h1", VMs: req.VMs}); err == nil {
		t.Error("a viewer recorded a migration")
	}

	st := api.VMMigrationStatus{State: api.VMMigrationRunning, Runner: "root@test", VMs: []api.VMMigrationVMStatus{
		{Name: "web", State: api.VMMigrationRunning, Phase: "convert", Disk: "root", DoneBytes: 10, TotalBytes: 64 << 20, Rate: 1e6, ETASeconds: 60},
		{Name: "db", State: api.VMMigrationPending},
	}}
	if m, err = member.ReportVMMigration(ctx, "wave1", st); err != nil || m.Spec.Cancel || m.Status.VMs[0].Phase != "convert" {
		t.Fatalf("report: %+v %v", m, err)
	}
	short := st
	short.VMs = st.VMs[:1]
	if _, err := member.ReportVMMigration(ctx, "wave1", short); err == nil || !strings.Contains(err.Error(), "must report") {
		t.Errorf("short report: %v", err)
	}
	if m, err = member.CancelVMMigration(ctx, "wave1"); err != nil || !m.Spec.Cancel || m.Status.State != api.VMMigrationRunning {
		t.Fatalf("cancel: %+v %v", m, err)
	}
	if m, err = member.ReportVMMigration(ctx, "wave1", st); err != nil || !m.Spec.Cancel {
		t.Fatalf("the runner's next report does not say cancel: %+v %v", m, err)
	}
	st.State = api.VMMigrationCancelled
	if _, err = member.ReportVMMigration(ctx, "wave1", st); err != nil {
		t.Fatal(err)
	}
	if _, err = member.ReportVMMigration(ctx, "wave1", st); err == nil || !strings.Contains(err.Error(), "has cancelled") {
		t.Errorf("report after the end: %v", err)
	}
	if _, err = member.CancelVMMigration(ctx, "wave1"); err == nil {
		t.Error("cancelled an ended migration")
	}

	list, err := e.as(api.RoleViewer, "pa").ListVMMigrations(ctx, api.ListOptions{})
	if err != nil || len(list) != 1 || list[0].Name != "wave1" {
		t.Fatalf("viewer's list: %v %v", list, err)
	}
	if list, err := e.as("bob", "pb").ListVMMigrations(ctx, api.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("foreign list: %v %v", list, err)
	}
	if _, err := e.as("bob", "pb").GetVMMigration(ctx, "wave1"); err == nil {
		t.Error("another project reads the migration")
	}
	recs, _ := e.auditList(t, "superadmin", "resource=migration/wave1&all-projects=true")
	var actions []string
	for _, r := range recs {
		actions = append(actions, r.Action)
	}
	if len(actions) < 5 {
		t.Errorf("audit records of the migration: %v", actions)
	}
}

// TestVMMigrationRecordsEndWithTheirProject: a project holding migration
// records cannot be deleted (so that a new project of its name inherits
// none); a member deletes a record, a running one only once cancelled;
// a project keeps a bounded number of records.
func TestVMMigrationRecordsEndWithTheirProject(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "pc"}); err != nil {
		t.Fatal(err)
	}
	pc := e.super.WithProject("pc")
	vms := []api.VMMigrationVM{{Name: "web", SourceName: "Web 01"}}
	if _, err := pc.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "wave1", Source: "ova", Host: "h1", VMs: vms}); err != nil {
		t.Fatal(err)
	}
	st := api.VMMigrationStatus{State: api.VMMigrationRunning, Runner: "root@old", VMs: []api.VMMigrationVMStatus{{Name: "web", State: api.VMMigrationRunning}}}
	if _, err := pc.ReportVMMigration(ctx, "wave1", st); err != nil {
		t.Fatal(err)
	}
	if err := e.super.DeleteProject(ctx, "pc"); statusOfErr(err) != http.StatusConflict || !strings.Contains(err.Error(), "migrations") {
		t.Fatalf("deleting a project that holds a migration: %v, want 409 naming migrations", err)
	}
	if err := pc.DeleteVMMigration(ctx, "wave1"); statusOfErr(err) != http.StatusConflict {
		t.Fatalf("deleting a running migration: %v, want 409", err)
	}
	if err := e.as(api.RoleViewer, "pa").DeleteVMMigration(ctx, "wave1"); err == nil {
		t.Fatal("a viewer of another project deleted the migration")
	}
	if _, err := pc.CancelVMMigration(ctx, "wave1"); err != nil {
		t.Fatal(err)
	}
	if err := pc.DeleteVMMigration(ctx, "wave1"); err != nil {
		t.Fatalf("deleting a cancelled migration: %v", err)
	}
	if _, err := pc.GetVMMigration(ctx, "wave1"); statusOfErr(err) != http.StatusNotFound {
		t.Fatalf("the deleted migration: %v, want 404", err)
	}
	if err := e.super.DeleteProject(ctx, "pc"); err != nil {
		t.Fatalf("deleting the emptied project: %v", err)
	}
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "pc"}); err != nil {
		t.Fatal(err)
	}
	if list, err := pc.ListVMMigrations(ctx, api.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("a new project of the old name sees %v %v", list, err)
	}

	member := e.as(api.RoleMember, "pa")
	for i := range maxProjectMigrations {
		if _, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: fmt.Sprintf("m%d", i), Source: "ova", Host: "h1", VMs: vms}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	_, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "one-more", Source: "ova", Host: "h1", VMs: vms})
	if statusOfErr(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "delete finished ones") {
		t.Fatalf("a record over the bound: %v, want 422", err)
	}
	if err := member.DeleteVMMigration(ctx, "m0"); err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "one-more", Source: "ova", Host: "h1", VMs: vms}); err != nil {
		t.Fatalf("a record once one was deleted: %v", err)
	}
	recs, _ := e.auditList(t, "superadmin", "resource=migration/m0&all-projects=true")
	var deleted bool
	for _, r := range recs {
		deleted = deleted || strings.Contains(r.Action, "delete")
	}
	if !deleted {
		t.Errorf("no audit record of the delete: %+v", recs)
	}
}

// TestVMMigrationReportsOnlyFromItsRunner: only the user who recorded a
// migration reports to it, so another member cannot set its final state
// (they cancel it); the record names that user whatever a report says;
// the bounds a runner keeps to are the ones the server holds.
func TestVMMigrationReportsOnlyFromItsRunner(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	vms := []api.VMMigrationVM{{Name: "web", SourceName: "Web 01"}}
	m, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "wave1", Source: "ova", Host: "h1", VMs: vms})
	if err != nil {
		t.Fatal(err)
	}
	if m.Status.RunnerUser != userOf(api.RoleMember) {
		t.Fatalf("the record's runner user is %q, want %q", m.Status.RunnerUser, userOf(api.RoleMember))
	}
	st := api.VMMigrationStatus{State: api.VMMigrationSucceeded, RunnerUser: "someone", VMs: []api.VMMigrationVMStatus{{Name: "web", State: api.VMMigrationSucceeded}}}
	for _, who := range []string{api.RoleAdmin, "superadmin"} {
		if _, err := e.as(who, "pa").ReportVMMigration(ctx, "wave1", st); statusOfErr(err) != http.StatusConflict || !strings.Contains(err.Error(), "only its runner") {
			t.Errorf("%s setting the migration's final state: %v, want 409", who, err)
		}
	}
	st.State, st.VMs[0].State = api.VMMigrationRunning, api.VMMigrationRunning
	st.VMs[0].Error = strings.Repeat("x", api.MaxMigrationErrorBytes+1)
	if _, err := member.ReportVMMigration(ctx, "wave1", st); errField(err) != "vms[0].error" {
		t.Errorf("an error over %d bytes: %v, want refused naming vms[0].error", api.MaxMigrationErrorBytes, err)
	}
	st.VMs[0].Error = strings.Repeat("x", api.MaxMigrationErrorBytes)
	if m, err = member.ReportVMMigration(ctx, "wave1", st); err != nil || m.Status.RunnerUser != userOf(api.RoleMember) || m.Status.State != api.VMMigrationRunning {
		t.Fatalf("the runner's report: %+v %v", m, err)
	}
	if _, err := e.as(api.RoleAdmin, "pa").CancelVMMigration(ctx, "wave1"); err != nil {
		t.Errorf("another member cancelling: %v", err)
	}
	many := make([]api.VMMigrationVM, api.MaxMigrationVMs+1)
	for i := range many {
		many[i] = api.VMMigrationVM{Name: fmt.Sprintf("vm%d", i)}
	}
	if _, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "big", Source: "ova", Host: "h1", VMs: many}); errField(err) != "vms" {
		t.Errorf("%d VMs: %v, want refused naming vms", len(many), err)
	}
	if _, err := member.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "big", Source: "ova", Host: "h1", VMs: many[:api.MaxMigrationVMs]}); err != nil {
		t.Errorf("%d VMs: %v", api.MaxMigrationVMs, err)
	}
}
