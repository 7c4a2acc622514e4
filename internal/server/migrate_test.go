package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
)

// TestMigrateToProjects: a store written before projects (objects under
// their bare names, no project) is moved into the default project at
// start, keeping every object and its identity.
func TestMigrateToProjects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := Config{DataDir: dir, Socket: filepath.Join(dir, "s.sock"), Logger: slog.New(slog.DiscardHandler)}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	img := &api.Image{Meta: api.Meta{Name: "disk", UID: api.NewUID(), CreatedAt: now}, Kind: api.ImageDisk, State: api.ImageReady}
	vm := &api.VM{Meta: api.Meta{Name: "old", UID: api.NewUID(), Generation: 1, CreatedAt: now},
		Spec: api.VMSpec{Host: "h1", VCPUs: 1, MemoryMiB: 128, PowerState: api.PowerRunning,
			Disks: []api.Disk{{Name: "root", Image: "disk"}}, Boot: api.Boot{Kernel: "k"}}}
	op := ops.NewOperation(api.OpVMCreate, api.Ref{Kind: "vm", Name: "old", UID: vm.UID}, nil)
	op.Status = api.OpSucceeded
	if _, err := s.st.Txn(ctx, s.images.OpCreate("disk", img), s.vms.OpCreate("old", vm), s.ops.OpCreate(op.ID, op)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.vms.Get("old"); ok {
		t.Error("the vm is still under its bare name")
	}
	got, ok := s.vms.Get("default/old")
	if !ok || got.UID != vm.UID || got.Project != api.DefaultProject {
		t.Fatalf("vm after the move: %+v %v", got, ok)
	}
	if got.Spec.Disks[0].Image != "default/disk" || got.Spec.Boot.Kernel != "default/k" {
		t.Errorf("image references after the move: %+v %+v", got.Spec.Disks, got.Spec.Boot)
	}
	if im, ok := s.images.Get("default/disk"); !ok || im.UID != img.UID {
		t.Errorf("image after the move: %+v %v", im, ok)
	}
	if o, ok := s.ops.Get(op.ID); !ok || o.Target.Project != api.DefaultProject {
		t.Errorf("operation after the move: %+v", o)
	}
	// The (host-less) VM is in the default project's API view.
	vms := listAll(s.vms, func(v *api.VM) bool { return v.Project == api.DefaultProject })
	if len(vms) != 1 {
		t.Errorf("default project holds %d vms, want 1", len(vms))
	}
	// A second start finds nothing to move.
	s.Close()
	if s, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := s.vms.Len(); n != 1 {
		t.Errorf("%d vms after a second start, want 1", n)
	}
}
