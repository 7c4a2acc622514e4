package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Tests in this file use libvirt's test driver (test:///default) inside
// the real libvirtd: no QEMU, fast, and the driver's state is shared by
// every connection to it while one is open.

const testURI = "test:///default"

func testDomainXML(name string) string {
	return fmt.Sprintf(`<domain type='test'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>`+
		`<os><type>hvm</type></os></domain>`, name)
}

// TestTestDriverInventoryAtScale defines 500 domains through the API and
// checks a full Inventory of them. How long it takes is logged here and
// measured by BenchmarkTestDriverInventory, not bounded.
func TestTestDriverInventoryAtScale(t *testing.T) {
	requireDaemon(t)
	const n = 500
	raw := rawConn(t, testURI)
	p := connect(t, testURI)
	prefix := uniqueName("pv-scale")
	defineTestDomains(t, raw, prefix, n)

	ctx := context.Background()
	start := time.Now()
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inventory of %d vms, %d datastores, %d networks took %s", len(inv.VMs), len(inv.Datastores), len(inv.Networks), time.Since(start))
	found := 0
	for _, vm := range inv.VMs {
		if len(vm.Name) > len(prefix) && vm.Name[:len(prefix)] == prefix {
			found++
			if vm.PowerState != provider.PowerStopped || vm.MemoryMiB != 128 || vm.VCPUs != 1 ||
				vm.Host != inv.Hosts[0].ID || vm.Path != testURI+"/"+vm.Name {
				t.Fatalf("vm %+v", vm)
			}
		}
	}
	if found != n {
		t.Fatalf("inventory holds %d of the %d domains", found, n)
	}
	if len(inv.Hosts) != 1 || inv.Hosts[0].CPUs == 0 || inv.Hosts[0].State != provider.HostConnected {
		t.Errorf("hosts %+v", inv.Hosts)
	}
}

// BenchmarkTestDriverInventory times a full Inventory of 500 test-driver
// domains:
//
//	go test -run '^$' -bench BenchmarkTestDriverInventory ./internal/provider/libvirt/
func BenchmarkTestDriverInventory(b *testing.B) {
	requireDaemon(b)
	const n = 500
	raw := rawConn(b, testURI)
	p := connect(b, testURI)
	defineTestDomains(b, raw, uniqueName("pv-bench"), n)
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.Inventory(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// defineTestDomains defines n test-driver domains named prefix-NNN, 16 at
// a time, removed when the test ends.
func defineTestDomains(tb testing.TB, raw *golibvirt.Libvirt, prefix string, n int) {
	tb.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	names := make(chan string)
	for range 16 {
		wg.Go(func() {
			for name := range names {
				if _, err := raw.DomainDefineXML(testDomainXML(name)); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		names <- fmt.Sprintf("%s-%03d", prefix, i)
	}
	close(names)
	wg.Wait()
	close(errs)
	tb.Cleanup(func() {
		doms, _, _ := raw.ConnectListAllDomains(1, 0)
		for _, d := range doms {
			if len(d.Name) > len(prefix) && d.Name[:len(prefix)] == prefix {
				raw.DomainDestroy(d)
				raw.DomainUndefine(d)
			}
		}
	})
	for err := range errs {
		tb.Fatalf("define: %v", err)
	}
	tb.Logf("defined %d domains in %s", n, time.Since(start))
}

// TestTestDriverLifecycle drives one test-driver domain through the
// provider, watching the events it causes.
func TestTestDriverLifecycle(t *testing.T) {
	requireDaemon(t)
	raw := rawConn(t, testURI)
	p := connect(t, testURI)
	rec := watch(t, p)
	rec.sync(t, raw, "test")
	ctx := context.Background()
	name := uniqueName("pv-life")

	mark := rec.mark()
	dom, err := raw.DomainDefineXML(testDomainXML(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.DomainDestroy(dom); raw.DomainUndefine(dom) })
	id := uuidString(dom.UUID)
	rec.wait(t, mark, 5*time.Second, "defined", vmIs(id, provider.PowerStopped))

	steps := []struct {
		name  string
		do    func() error
		power string
	}{
		{"power on", func() error { return p.PowerOn(ctx, id) }, provider.PowerRunning},
		{"suspend", func() error { return p.Suspend(ctx, id) }, provider.PowerPaused},
		{"resume", func() error { return p.Resume(ctx, id) }, provider.PowerRunning},
		{"power off", func() error { return p.PowerOff(ctx, id) }, provider.PowerStopped},
	}
	for _, s := range steps {
		mark := rec.mark()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		rec.wait(t, mark, 5*time.Second, s.name, vmIs(id, s.power))
	}
	if err := p.Suspend(ctx, id); !errors.Is(err, provider.ErrBadState) {
		t.Errorf("suspend a stopped vm: %v, want ErrBadState", err)
	}
	if err := p.PowerOff(ctx, id); err != nil {
		t.Errorf("power off a stopped vm: %v", err)
	}

	if err := p.Reconfigure(ctx, id, 3, 256); err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if vm := findVM(inv, id); vm == nil || vm.VCPUs != 3 || vm.MemoryMiB != 256 {
		t.Fatalf("after reconfigure: %+v", vm)
	}

	if err := p.CreateSnapshot(ctx, id, "s1", "first"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSnapshot(ctx, id, "s1", "again"); !errors.Is(err, provider.ErrExists) {
		t.Errorf("snapshot name clash: %v, want ErrExists", err)
	}
	snaps, err := p.Snapshots(ctx, id)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" || snaps[0].Description != "first" || !snaps[0].Current {
		t.Fatalf("snapshots %+v, %v", snaps, err)
	}
	if err := p.DeleteSnapshot(ctx, id, "s1"); err != nil {
		t.Fatal(err)
	}

	mark = rec.mark()
	if err := p.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, mark, 5*time.Second, "deleted", func(c provider.Change) bool { return c.DeletedVM == id })
	if err := p.PowerOn(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("power on a deleted vm: %v, want ErrNotFound", err)
	}
	if _, err := raw.DomainLookupByUUID(dom.UUID); !isCode(err, golibvirt.ErrNoDomain) {
		t.Errorf("domain still there: %v", err)
	}
}
