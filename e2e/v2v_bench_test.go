package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestMigrationTimeToMarker measures, when POLYVISOR_BENCH_MIGRATION is
// set, the time from `migration run` to the guest's marker on the
// destination: one VM from an OVA uploaded by the CLI, and ten VMs of the
// real libvirtd in one migration run in waves of four (docs/BENCHMARKS.md).
func TestMigrationTimeToMarker(t *testing.T) {
	if os.Getenv("POLYVISOR_BENCH_MIGRATION") == "" {
		t.Skip("a measurement: set POLYVISOR_BENCH_MIGRATION=1")
	}
	requireQEMU(t)
	ctx := context.Background()
	dir := t.TempDir()
	// Ten 1-vCPU VMs on this 2-CPU host: more than the default 4 vCPUs
	// per CPU.
	s := startServer(t, t.TempDir(), "--cpu-overcommit", "8")
	c := s.adminClient(t)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--server", "unix://" + s.socket}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("polyvisor %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	markers := func(t0 time.Time, names []string) time.Duration {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Duration
		for _, n := range names {
			wg.Go(func() {
				deadline := time.Now().Add(10 * time.Minute)
				for time.Now().Before(deadline) {
					if b, _ := c.ConsoleLog(ctx, n, 1<<20); bytes.Contains(b, []byte(marker)) {
						mu.Lock()
						last = max(last, time.Since(t0))
						mu.Unlock()
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
				t.Errorf("no marker on %s", n)
			})
		}
		wg.Wait()
		return last
	}

	ova, _ := makeOVA(t, dir)
	t0 := time.Now()
	cli("migration", "run", "--name", "one", "--from-ova", ova, "--to-host", "local", "--network-map", "VM Network=user")
	ran := time.Since(t0)
	one := markers(t0, []string{"app-server"})
	t.Logf("1 VM from an OVA: run %v, marker after %v", ran.Round(time.Millisecond), one.Round(time.Millisecond))
	if _, err := c.DeleteVM(ctx, "app-server", false); err != nil {
		t.Fatal(err)
	}

	virsh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	pool := "bench-v2v-" + suffix
	poolDir := filepath.Join(dir, "pool")
	os.Mkdir(poolDir, 0o755)
	virsh("pool-create-as", pool, "dir", "--target", poolDir)
	t.Cleanup(func() { exec.Command("virsh", "-c", "qemu:///system", "pool-destroy", pool).Run() })
	req := api.VMMigrationCreate{Name: "ten", Host: "local", Parallel: 4, Start: true, NetworkMap: map[string]string{"*": "user"},
		Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider, Provider: "kvm1"}}
	var names []string
	for i := range 10 {
		vol := fmt.Sprintf("v%d.qcow2", i)
		if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", filepath.Join(guestDir, "boot.qcow2"), filepath.Join(poolDir, vol)).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		dom := fmt.Sprintf("bench-%s-%d", suffix, i)
		xml := `<domain type='qemu'><name>` + dom + `</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='` + pool + `' volume='` + vol + `'/><target dev='vda' bus='virtio'/></disk>
  <interface type='ethernet'><mac address='52:54:00:6e:00:` + fmt.Sprintf("%02x", i+1) + `'/><model type='virtio'/></interface></devices></domain>`
		file := filepath.Join(dir, dom+".xml")
		os.WriteFile(file, []byte(xml), 0o600)
		virsh("define", file)
		t.Cleanup(func() { exec.Command("virsh", "-c", "qemu:///system", "undefine", dom).Run() })
		out, _ := exec.Command("virsh", "-c", "qemu:///system", "domuuid", dom).Output()
		name := fmt.Sprintf("w%d", i)
		req.Source.VMs = append(req.Source.VMs, api.VMMigrationSourceVM{ID: strings.TrimSpace(string(out)), Name: name})
		names = append(names, name)
	}
	virsh("pool-refresh", pool)
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "kvm1", Type: "libvirt", URL: "qemu:///system"}); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := c.CreateVMMigration(ctx, req); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitVMMigration(ctx, "ten", 200*time.Millisecond, func(m *api.VMMigration) bool {
		return m.Status.State == api.VMMigrationSucceeded || m.Status.State == api.VMMigrationFailed
	}, nil)
	if err != nil || m.Status.State != api.VMMigrationSucceeded {
		t.Fatalf("ten: %+v %v", m, err)
	}
	ran = time.Since(t0)
	ten := markers(t0, names)
	t.Logf("10 VMs of libvirt, waves of 4: run %v, last marker after %v", ran.Round(time.Millisecond), ten.Round(time.Millisecond))
}
