package store

import (
	"errors"
	"testing"
)

// A read-only store refuses writes, but those made with UseReserve's
// context: revocations and deletions go through on a full disk.
func TestReadOnlyTakesReserveWrites(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, embeddedConfig(t))
	if _, err := s.vms.Create(ctx, "a", newVM("a")); err != nil {
		t.Fatal(err)
	}
	s.SetReadOnly(errors.New("the disk is full"))
	if _, err := s.vms.Create(ctx, "b", newVM("b")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("a write while read-only: %v, want ErrReadOnly", err)
	}
	if err := s.vms.Delete(ctx, "a", 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("a deletion without the reserve while read-only: %v, want ErrReadOnly", err)
	}
	if err := s.vms.Delete(UseReserve(ctx), "a", 0); err != nil {
		t.Errorf("a deletion with the reserve while read-only: %v", err)
	}
	if _, ok := s.vms.Get("a"); ok {
		t.Errorf("vm a is still there")
	}
	s.SetReadOnly(nil)
	if _, err := s.vms.Create(ctx, "b", newVM("b")); err != nil {
		t.Errorf("a write once writable: %v", err)
	}
}
