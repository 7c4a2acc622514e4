package server

import (
	"context"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestVMMigrationEvents: a migration's changes are on the event stream
// (type migration, the record in the event) for those who may read the
// migration, and not for another project's members.
func TestVMMigrationEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.super.SetMember(ctx, "pb", "bob", api.RoleMember); err != nil {
		t.Fatal(err)
	}
	pa, pb := e.as(api.RoleMember, "pa"), e.client(e.tokens["bob"], "pb")
	evA, errA := pa.Events(ctx, api.EventMigration)
	evB, errB := pb.Events(ctx, api.EventMigration)
	time.Sleep(200 * time.Millisecond) // the streams are open
	if _, err := pa.CreateVMMigration(ctx, ovaUpload("wave1", 1<<20)); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, evA, errA)
	if ev.Type != api.EventMigration || ev.Action != "created" || ev.Migration == nil || ev.Migration.Name != "wave1" ||
		ev.Object.Kind != "migration" || ev.Object.Project != "pa" || ev.Migration.Status.State != api.VMMigrationUploading {
		t.Fatalf("event %+v", ev)
	}
	if _, err := pa.CancelVMMigration(ctx, "wave1"); err != nil {
		t.Fatal(err)
	}
	for {
		ev = nextEvent(t, evA, errA)
		if ev.Action != "updated" || ev.Migration == nil {
			t.Fatalf("event %+v, want wave1 updated", ev)
		}
		if ev.Migration.Status.State == api.VMMigrationCancelled {
			break
		}
	}
	if err := pa.DeleteVMMigration(ctx, "wave1"); err != nil {
		t.Fatal(err)
	}
	if ev = nextEvent(t, evA, errA); ev.Action != "deleted" || ev.Object.Name != "wave1" {
		t.Fatalf("event %+v, want wave1 deleted", ev)
	}
	// pb's first event is its own migration: none of pa's reached it.
	if _, err := pb.CreateVMMigration(ctx, ovaUpload("wave2", 1<<20)); err != nil {
		t.Fatal(err)
	}
	if ev = nextEvent(t, evB, errB); ev.Object.Name != "wave2" || ev.Object.Project != "pb" {
		t.Fatalf("pb's first event %+v, want its own wave2", ev)
	}
}
