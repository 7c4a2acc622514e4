package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/secrets"
)

// second starts another server over the env's etcd, as a second server
// of one control plane, with cfg's settings; it returns a superadmin
// client of it.
func (e *env) second(t *testing.T, cfg Config) (*Server, *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	// What a join hands over: the servers' CA and secrets key.
	caCert, caKey, err := pki.ReadCA(filepath.Join(e.dataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.InstallCA(filepath.Join(dir, "pki"), caCert, caKey); err != nil {
		t.Fatal(err)
	}
	key, err := secrets.ReadKey(filepath.Join(e.dataDir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets.InstallKey(filepath.Join(dir, "secret.key"), key); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	cfg.EtcdEndpoints = e.s.st.Endpoints()
	cfg.Listen = "127.0.0.1:0"
	cfg.Socket = filepath.Join(dir, "polyvisor.sock")
	cfg.Logger = e.s.log.With("server", "second")
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("a second server: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("starting a second server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.New(client.Config{URL: "https://" + s.Addr().String(), Token: e.s.AdminToken(), CAFile: s.CAFile()})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// createMany creates n VMs at once, half through each client, each with
// the request req gives it; it returns how many were created and the
// errors of the others.
func createMany(n int, clients []*client.Client, req func(i int) api.VMCreate) (int, []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	created := 0
	var errs []error
	start := make(chan struct{})
	for i := range n {
		c := clients[i%len(clients)]
		wg.Go(func() {
			<-start
			_, err := c.CreateVM(context.Background(), req(i), client.CreateOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				created++
			} else {
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return created, errs
}

// TestQuotaAcrossServers: two servers over one etcd, 30 creates at once
// split between them, in a project whose quota has room for 7 VMs:
// exactly 7 are created, both servers see the same 7, and every other
// create is refused for the quota.
func TestQuotaAcrossServers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Name: "one"})
	_, other := e.second(t, Config{Name: "two"})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "seven", Quota: api.Quota{VMs: ptr[int64](7)}}); err != nil {
		t.Fatal(err)
	}
	clients := []*client.Client{e.super.WithProject("seven"), other.WithProject("seven")}
	created, errs := createMany(30, clients, func(i int) api.VMCreate {
		return api.VMCreate{Name: fmt.Sprintf("q%d", i), VCPUs: 1, MemoryMiB: 64, Host: "h1",
			PowerState: api.PowerStopped, Disks: []api.Disk{{SizeMiB: 1}}}
	})
	if created != 7 {
		t.Errorf("created %d vms against a quota of 7", created)
	}
	for _, err := range errs {
		var se *client.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Err.Details["quota"] != "vms" {
			t.Errorf("a refused create: %v, want 422 over the vms quota", err)
		}
	}
	for i, c := range clients {
		vms, err := c.ListAllVMs(ctx, api.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(vms) != 7 {
			t.Errorf("server %d lists %d vms in the project, want 7", i+1, len(vms))
		}
	}
	if q, err := other.GetQuota(ctx, "seven"); err != nil || q.Usage.VMs != 7 {
		t.Errorf("usage through the second server: %+v %v, want 7 vms", q, err)
	}
}

// TestHostCapacityAcrossServers: two servers over one etcd, 30 creates at
// once split between them, pinned to a host with room for 7 VMs of their
// size: exactly 7 are placed there, and every other create is refused for
// the host's room.
func TestHostCapacityAcrossServers(t *testing.T) {
	t.Parallel()
	sched := scheduler.Config{CPUOvercommit: 1, ReservedMemoryMiB: -1}
	e := newEnv(t, Config{Name: "one", Scheduler: sched})
	_, other := e.second(t, Config{Name: "two", Scheduler: sched})
	ctx := context.Background()
	e.ctlJoin(ctx, "small", ctlHostStatus(7, 64<<10), true) // 7 vcpus, overcommit 1
	clients := []*client.Client{e.super.WithProject("pa"), other.WithProject("pb")}
	created, errs := createMany(30, clients, func(i int) api.VMCreate {
		return api.VMCreate{Name: fmt.Sprintf("c%d", i), VCPUs: 1, MemoryMiB: 64, Host: "small",
			PowerState: api.PowerStopped, Disks: []api.Disk{{SizeMiB: 1}}}
	})
	if created != 7 {
		t.Errorf("placed %d vms of 1 vcpu on a host with 7 vcpus and no overcommit", created)
	}
	for _, err := range errs {
		if statusOfErr(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "small") {
			t.Errorf("a refused create: %v, want 422 naming the host's room", err)
		}
	}
	h, err := other.GetHost(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	if want := (api.Allocation{VCPUs: 7, MemoryMiB: 7 * 64, VMs: 7}); h.Status.Allocated != want {
		t.Errorf("host small through the second server: %+v allocated, want %+v", h.Status.Allocated, want)
	}
}
