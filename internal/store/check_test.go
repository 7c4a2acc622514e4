package store

import (
	"errors"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestCheckOps: OpCheck and OpNoneUnder are preconditions that write
// nothing; a transaction whose precondition fails writes nothing either,
// and its error names the object that made it fail.
func TestCheckOps(t *testing.T) { testCheckOps(t, embeddedConfig(t)) }

// TestCheckOpsExternal runs the same against etcd 3.4 (Debian's), as a
// fleet may use: range comparisons are older than that.
func TestCheckOpsExternal(t *testing.T) {
	cfg := startExternalEtcd(t, false)
	cfg.Prefix = "/check/"
	cfg.Logger = testLogger(t)
	testCheckOps(t, cfg)
}

func testCheckOps(t *testing.T, cfg Config) {
	ctx := testCtx(t)
	s := openStore(t, cfg)

	if _, err := s.vms.Create(ctx, "net-a/ip/10.0.0.5", newVM("a5")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.hosts.Create(ctx, "parent", &api.Host{Meta: api.Meta{Name: "parent"}}); err != nil {
		t.Fatal(err)
	}
	parent, _ := s.hosts.Get("parent")

	// A check of the current version passes and writes only the other ops.
	if _, err := s.Txn(ctx, s.hosts.OpCheck("parent", parent.Version), s.vms.OpCreate("net-b/ip/10.0.0.6", newVM("b6"))); err != nil {
		t.Fatalf("check of the current version: %v", err)
	}
	if p, _ := s.hosts.Get("parent"); p.Version != parent.Version {
		t.Errorf("a check changed the object's version: %d, was %d", p.Version, parent.Version)
	}

	// A stale version is a conflict; a missing object not found.
	_, err := s.Txn(ctx, s.hosts.OpCheck("parent", parent.Version-1), s.vms.OpCreate("x", newVM("x")))
	var kerr *KeyError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &kerr) || kerr.Name != "parent" {
		t.Errorf("check of a stale version: %v, want a conflict naming parent", err)
	}
	if _, err := s.Txn(ctx, s.hosts.OpCheck("ghost", parent.Version), s.vms.OpCreate("x", newVM("x"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("check of a missing object: %v, want not found", err)
	}
	if _, ok := s.vms.Get("x"); ok {
		t.Error("a transaction whose check failed wrote its other ops")
	}

	// None under a prefix: an object there fails it, naming the object.
	_, err = s.Txn(ctx, s.hosts.OpDelete("parent", 0), s.vms.OpNoneUnder("net-a/"))
	if !errors.Is(err, ErrExists) || !errors.As(err, &kerr) || kerr.Name != "net-a/ip/10.0.0.5" || kerr.Kind != "vms" {
		t.Errorf("none under a prefix holding an object: %v, want exists naming net-a/ip/10.0.0.5", err)
	}
	if _, ok := s.hosts.Get("parent"); !ok {
		t.Error("the delete of a failed transaction happened")
	}
	// A prefix that only begins another object's name holds nothing.
	if _, err := s.Txn(ctx, s.vms.OpNoneUnder("net-a/ip/10.0.0.50"), s.vms.OpNoneUnder("net-c/")); err != nil {
		t.Errorf("none under empty prefixes: %v", err)
	}
	// Once the object is gone, the prefix is empty.
	if err := s.vms.Delete(ctx, "net-a/ip/10.0.0.5", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, s.hosts.OpDelete("parent", 0), s.vms.OpNoneUnder("net-a/")); err != nil {
		t.Errorf("none under an emptied prefix: %v", err)
	}
	if _, ok := s.hosts.Get("parent"); ok {
		t.Error("the delete did not happen")
	}
}
