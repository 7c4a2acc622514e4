package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// ovaUpload is a migration of an uploaded OVA: it waits for its file, so
// that no controller acts on it.
func ovaUpload(name string, size int64) api.VMMigrationCreate {
	return api.VMMigrationCreate{Name: name, Host: "h1", Source: api.VMMigrationSource{
		Kind: api.MigrationSourceUpload, Format: api.MigrationFormatOVA, Files: []api.VMMigrationFile{{Name: "web.ova", SizeBytes: size}}}}
}

// TestVMMigrationRecord: a member makes a migration, which waits for its
// upload; bad input names its field; a provider not bound to the project
// is refused; start is remembered, cancel ends it at once; another
// project sees nothing; every change is in the audit log.
func TestVMMigrationRecord(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	req := ovaUpload("wave1", 1<<20)
	m, err := member.CreateVMMigration(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status.State != api.VMMigrationUploading || m.Spec.Parallel != 2 || m.Spec.SourceDisposition != api.DispositionKeep ||
		m.Project != "pa" || m.Status.CreatedBy != userOf(api.RoleMember) {
		t.Fatalf("created %+v", m)
	}
	for _, tc := range []struct {
		change func(*api.VMMigrationCreate)
		field  string
	}{
		{func(r *api.VMMigrationCreate) { r.Name = "Bad Name" }, "name"},
		{func(r *api.VMMigrationCreate) { r.Host = "ghost" }, "host"},
		{func(r *api.VMMigrationCreate) { r.Parallel = 99 }, "parallel"},
		{func(r *api.VMMigrationCreate) { r.Source.Kind = "tape" }, "source.kind"},
		{func(r *api.VMMigrationCreate) { r.Source.Files = nil }, "source.files"},
		{func(r *api.VMMigrationCreate) { r.Source.Files[0].Name = "../../etc/passwd" }, "source.files[0].name"},
		{func(r *api.VMMigrationCreate) { r.Source.Files[0].SizeBytes = 0 }, "source.files[0].sizeBytes"},
		{func(r *api.VMMigrationCreate) { r.Source.Format = api.MigrationFormatDisk }, "source.hardware"},
		{func(r *api.VMMigrationCreate) { r.SourceDisposition = api.DispositionDelete }, "sourceDisposition"},
		{func(r *api.VMMigrationCreate) { r.SourceDisposition = "shred" }, "sourceDisposition"},
		{func(r *api.VMMigrationCreate) { r.Cutover = "never" }, "cutover"},
		{func(r *api.VMMigrationCreate) { r.NetworkMap = map[string]string{"VM Network": "Bad Net"} }, "networkMap.VM Network"},
		{func(r *api.VMMigrationCreate) {
			r.Source = api.VMMigrationSource{Kind: api.MigrationSourceURL, URL: "ftp://example.com/web.ova"}
		}, "source.url"},
		{func(r *api.VMMigrationCreate) {
			r.Source = api.VMMigrationSource{Kind: api.MigrationSourceProvider, Provider: "vc1", VMs: []api.VMMigrationSourceVM{{ID: "vm-1"}}}
		}, "source.provider"},
	} {
		bad := ovaUpload("other", 1<<20)
		tc.change(&bad)
		_, err := member.CreateVMMigration(ctx, bad)
		if errField(err) != tc.field {
			t.Errorf("create with bad %s: %v", tc.field, err)
		}
	}
	if _, err := member.CreateVMMigration(ctx, req); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create: %v", err)
	}
	if _, err := e.as(api.RoleViewer, "pa").CreateVMMigration(ctx, ovaUpload("v", 1)); err == nil {
		t.Error("a viewer made a migration")
	}
	if m, err = member.StartVMMigration(ctx, "wave1"); err != nil || !m.Spec.Start || m.Status.State != api.VMMigrationUploading {
		t.Fatalf("start while uploading: %+v %v", m, err)
	}
	if m, err = e.as(api.RoleAdmin, "pa").CancelVMMigration(ctx, "wave1"); err != nil || !m.Spec.Cancel || m.Status.State != api.VMMigrationCancelled {
		t.Fatalf("cancel: %+v %v", m, err)
	}
	if _, err = member.CancelVMMigration(ctx, "wave1"); statusOfErr(err) != http.StatusConflict {
		t.Errorf("cancelled an ended migration: %v", err)
	}
	if _, err = member.StartVMMigration(ctx, "wave1"); statusOfErr(err) != http.StatusConflict {
		t.Errorf("started a cancelled migration: %v", err)
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
	if len(actions) < 4 {
		t.Errorf("audit records of the migration: %v", actions)
	}
}

// TestVMMigrationUpload: a file is taken only at its declared length,
// only once, only if the migration lists it, inside the migration's
// directory; the last one moves the migration on to its plan.
func TestVMMigrationUpload(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	req := ovaUpload("up", 4096)
	req.Source.Files = append(req.Source.Files, api.VMMigrationFile{Name: "second.ova", SizeBytes: 10})
	req.Source.Format = api.MigrationFormatDisk
	req.Source.Hardware = &api.VMMigrationHardware{VCPUs: 1, MemoryMiB: 128}
	m, err := member.CreateVMMigration(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte{7}, 4096)
	if _, err := member.UploadVMMigrationFile(ctx, "up", "web.ova", bytes.NewReader(body[:100]), 100, nil); errField(err) != "Content-Length" {
		t.Errorf("a short upload: %v, want refused naming Content-Length", err)
	}
	if _, err := member.UploadVMMigrationFile(ctx, "up", "ghost.ova", bytes.NewReader(body), 4096, nil); statusOfErr(err) != http.StatusNotFound {
		t.Errorf("a file not listed: %v, want 404", err)
	}
	if _, err := e.as(api.RoleViewer, "pa").UploadVMMigrationFile(ctx, "up", "web.ova", bytes.NewReader(body), 4096, nil); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("a viewer's upload: %v, want 403", err)
	}
	if m, err = member.UploadVMMigrationFile(ctx, "up", "web.ova", bytes.NewReader(body), 4096, nil); err != nil ||
		!m.Spec.Source.Files[0].Uploaded || m.Status.State != api.VMMigrationUploading {
		t.Fatalf("upload: %+v %v", m, err)
	}
	got, err := os.ReadFile(filepath.Join(MigrationFilesDir(e.dataDir, m.UID), "web.ova"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the uploaded file: %d bytes, %v", len(got), err)
	}
	if _, err := member.UploadVMMigrationFile(ctx, "up", "web.ova", bytes.NewReader(body), 4096, nil); statusOfErr(err) != http.StatusConflict {
		t.Errorf("a second upload of a file: %v, want 409", err)
	}
	if m, err = member.UploadVMMigrationFile(ctx, "up", "second.ova", bytes.NewReader(body[:10]), 10, nil); err != nil || m.Status.State == api.VMMigrationUploading {
		t.Fatalf("the last upload: %+v %v", m, err)
	}
	if m.Status.Server == "" {
		t.Errorf("the migration names no server: %+v", m.Status)
	}
}

// TestVMMigrationRecordsEndWithTheirProject: a project holding migrations
// cannot be deleted (so that a new project of its name inherits none); a
// member deletes one; a project keeps a bounded number.
func TestVMMigrationRecordsEndWithTheirProject(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "pc"}); err != nil {
		t.Fatal(err)
	}
	pc := e.super.WithProject("pc")
	if _, err := pc.CreateVMMigration(ctx, ovaUpload("wave1", 10)); err != nil {
		t.Fatal(err)
	}
	if err := e.super.DeleteProject(ctx, "pc"); statusOfErr(err) != http.StatusConflict || !strings.Contains(err.Error(), "migrations") {
		t.Fatalf("deleting a project that holds a migration: %v, want 409 naming migrations", err)
	}
	if err := e.as(api.RoleViewer, "pa").DeleteVMMigration(ctx, "wave1"); err == nil {
		t.Fatal("a viewer of another project deleted the migration")
	}
	if err := pc.DeleteVMMigration(ctx, "wave1"); err != nil {
		t.Fatalf("deleting a migration: %v", err)
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
		if _, err := member.CreateVMMigration(ctx, ovaUpload(fmt.Sprintf("m%d", i), 10)); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	_, err := member.CreateVMMigration(ctx, ovaUpload("one-more", 10))
	if statusOfErr(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "delete finished ones") {
		t.Fatalf("a record over the bound: %v, want 422", err)
	}
	if err := member.DeleteVMMigration(ctx, "m0"); err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateVMMigration(ctx, ovaUpload("one-more", 10)); err != nil {
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
