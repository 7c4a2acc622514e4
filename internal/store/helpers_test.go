package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// testTimeout bounds every test's context.
const testTimeout = 60 * time.Second

func setVMVersion(v *api.VM, rev int64)     { v.Version = rev }
func setHostVersion(h *api.Host, rev int64) { h.Version = rev }

// testLogger logs into the test's output, and stops when the test ends
// (etcd may still log while it shuts down).
func testLogger(t testing.TB) *slog.Logger {
	w := &tlogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// testCtx is a context that ends with the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testStore is a started store with a vms and a hosts collection.
type testStore struct {
	*Store
	cfg   Config
	vms   *Collection[api.VM]
	hosts *Collection[api.Host]
}

// openStore opens cfg, registers the collections, runs setup (hooks) and
// starts the store; it is closed when the test ends.
func openStore(t testing.TB, cfg Config, setup ...func(*Store)) *testStore {
	t.Helper()
	ctx := testCtx(t)
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	ts := &testStore{
		Store: s,
		cfg:   cfg,
		vms:   NewCollection(s, "vms", setVMVersion),
		hosts: NewCollection(s, "hosts", setHostVersion),
	}
	for _, f := range setup {
		f(s)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start store: %v", err)
	}
	return ts
}

// rawClient is a second etcd client, independent of the store's.
func rawClient(t testing.TB, s *Store, cfg Config) *clientv3.Client {
	t.Helper()
	ccfg := clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if cfg.CAFile != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			t.Fatalf("client tls: %v", err)
		}
		ccfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		t.Fatalf("raw etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// newVM returns a VM whose JSON is about 1 KiB, like a real one.
func newVM(name string) *api.VM {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &api.VM{
		Meta: api.Meta{
			Name:      name,
			UID:       "3f1c2d9e-8b7a-4c5d-9e0f-" + fmt.Sprintf("%012x", len(name)),
			Labels:    map[string]string{"app": "web", "tier": "frontend", "env": "production"},
			CreatedAt: now,
			UpdatedAt: now,
		},
		Spec: api.VMSpec{
			Host:      "host-017",
			VCPUs:     4,
			MemoryMiB: 8192,
			Disks: []api.Disk{
				{Name: "root", Image: "debian-12-genericcloud-amd64", SizeMiB: 20480},
				{Name: "data", SizeMiB: 102400},
			},
			NICs:               []api.NIC{{Network: api.NetworkUser, MAC: "52:54:00:12:34:56"}},
			CloudInit:          &api.CloudInit{UserData: "#cloud-config\nhostname: " + name + "\npackages: [nginx]\n"},
			PowerState:         api.PowerRunning,
			StopTimeoutSeconds: 30,
		},
		Status: api.VMStatus{
			PowerState:         api.PowerRunning,
			ObservedGeneration: 1,
			PID:                41235,
			Console: api.Console{
				Serial: "/var/lib/polyvisor/vms/" + name + "/serial.sock",
				VNC:    "/var/lib/polyvisor/vms/" + name + "/vnc.sock",
			},
			IPs: []string{"10.0.2.15"},
			Disks: []api.DiskStatus{
				{Name: "root", Path: "/var/lib/polyvisor/vms/" + name + "/root.qcow2", Format: "qcow2", SizeMiB: 20480},
				{Name: "data", Path: "/var/lib/polyvisor/vms/" + name + "/data.qcow2", Format: "qcow2", SizeMiB: 102400},
			},
			Driver:    "qemu",
			StartedAt: now,
			UpdatedAt: now,
		},
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv takes n changes from ch.
func recv[T any](t testing.TB, ch <-chan Change[T], n int) []Change[T] {
	t.Helper()
	out := make([]Change[T], 0, n)
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed after %d of %d changes", len(out), n)
			}
			out = append(out, c)
		case <-timeout:
			t.Fatalf("got %d of %d changes", len(out), n)
		}
	}
	return out
}

// names returns the names of objects, in order.
func names(vms []*api.VM) []string {
	out := make([]string, len(vms))
	for i, v := range vms {
		out[i] = v.Name
	}
	return out
}
