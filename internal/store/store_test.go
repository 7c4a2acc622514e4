package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func embeddedConfig(t *testing.T) Config {
	return Config{DataDir: t.TempDir(), Logger: testLogger(t)}
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	runSuite(t, embeddedConfig)
}

func TestEmbeddedEndpoint(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cfg := embeddedConfig(t)
	s := openStore(t, cfg)
	ep := s.Endpoints()
	if len(ep) != 1 || ep[0] != "unix://"+filepath.Join(cfg.DataDir, "etcd.sock") {
		t.Errorf("endpoints = %v, want the unix socket in the data dir", ep)
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, "etcd")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("etcd data dir: %v %v", fi, err)
	}
	if _, err := s.Client().Get(ctx, "x"); err != nil {
		t.Errorf("escape-hatch client: %v", err)
	}

	// A second store on the same data dir is refused, and leaves the first
	// one working.
	if s2, err := Open(ctx, Config{DataDir: cfg.DataDir, Logger: testLogger(t)}); err == nil {
		s2.Close()
		t.Error("second store on the same data dir opened")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second store on the same data dir: %v", err)
	}
	if _, err := s.vms.Create(ctx, "still-works", newVM("still-works")); err != nil {
		t.Errorf("create after the refused open: %v", err)
	}

	// A data dir too deep for a unix socket gets one in a private run dir,
	// never an unauthenticated TCP port.
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 40))
	s2 := openStore(t, Config{DataDir: deep, Logger: testLogger(t)})
	ep = s2.Endpoints()
	if len(ep) != 1 || !strings.HasPrefix(ep[0], "unix://") {
		t.Fatalf("endpoints with a long data dir = %v, want a unix socket", ep)
	}
	if fi, err := os.Stat(filepath.Dir(strings.TrimPrefix(ep[0], "unix://"))); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: %v %v, want mode 0700", fi, err)
	}
	if _, err := s2.vms.Create(ctx, "x", newVM("x")); err != nil {
		t.Errorf("create over the socket: %v", err)
	}
}

func TestLifecycleErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, err := Open(ctx, embeddedConfig(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	vms := NewCollection(s, "vms", setVMVersion)
	if _, err := vms.Create(ctx, "a", newVM("a")); !errors.Is(err, ErrNotStarted) {
		t.Errorf("create before start: %v, want ErrNotStarted", err)
	}
	if _, err := s.Client().Get(ctx, vms.Key("a")); err != nil {
		t.Fatal(err)
	}
	mustPanic(t, "duplicate kind", func() { NewCollection(s, "vms", setVMVersion) })
	mustPanic(t, "kind with a slash", func() { NewCollection[api.VM](s, "a/b", nil) })
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Errorf("second start: %v", err)
	}
	mustPanic(t, "register after start", func() { NewCollection(s, "hosts", setHostVersion) })
	if vms.Len() != 0 {
		t.Error("the refused create was written")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := vms.Create(ctx, "a", newVM("a")); !errors.Is(err, ErrClosed) {
		t.Errorf("create after close: %v, want ErrClosed", err)
	}
	if _, err := s.GetKey(ctx, "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("get key after close: %v, want ErrClosed", err)
	}
	if _, ok := <-vms.Subscribe(ctx); ok {
		t.Error("subscription after close delivered a change")
	}
	if err := s.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: %v, want ErrClosed", err)
	}
	if _, err := Open(ctx, Config{}); err == nil {
		t.Error("open without data dir or endpoints succeeded")
	}
	if _, err := Open(ctx, Config{DataDir: t.TempDir(), Prefix: "/no-slash"}); err == nil {
		t.Error("open with a prefix without a trailing slash succeeded")
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}
