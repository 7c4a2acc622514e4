package e2e

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/api"
	vcsimtest "github.com/polyvisor/polyvisor/internal/testutil/vcsim"
)

// TestMigrationFromVSphereResumes moves a running VM of vcsim into the
// server's host through the server: the test guest's disk is imported
// into vcsim as a VM (ImportVApp and its lease) and powered on; the
// migration, started with the vSphere provider of the project, copies it
// from a snapshot through the NFC export lease while it runs. The server
// is killed (SIGKILL) halfway through the copy and started again: the
// copy resumes from its checkpoint (resumedBytes), then at cutover the
// source is powered off and, vcsim having no changed-block tracking (the
// record says so), copied again cold. The VM boots (marker), its vCPUs,
// memory and MAC are the source's, its image is the guest's disk
// (qemu-img compare), and the source is left powered off.
func TestMigrationFromVSphereResumes(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	dir := t.TempDir()
	sim := startSingleVcsim(t)
	vmdk := filepath.Join(dir, "disk1.vmdk")
	boot := filepath.Join(guestDir, "boot.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", boot, vmdk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	const mac = "00:50:56:aa:bb:cc"
	src := vcsimtest.ImportVM(t, ctx, sim.gc.Client, ovaEnvelope("guest-vm", "disk1.vmdk", 64<<20, mac), vmdk)
	if err := powerOn(ctx, src); err != nil {
		t.Fatal(err)
	}
	var hw mo.VirtualMachine
	if err := src.Properties(ctx, src.Reference(), []string{"config.hardware.device"}, &hw); err != nil {
		t.Fatal(err)
	}
	nics := object.VirtualDeviceList(hw.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 1 {
		t.Fatalf("the source has %d NICs", len(nics))
	}
	srcMAC := nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress

	data := t.TempDir()
	s := startServer(t, data, "--migration-checkpoint-bytes", "1048576")
	c := s.adminClient(t)
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "vc1", Type: "vsphere", URL: sim.url, Username: vcUser, Password: vcPass, CACert: sim.ca}); err != nil {
		t.Fatalf("adding the provider: %v", err)
	}
	sim.slow.Store(true) // about 2 MiB/s, until the copy is seen resumed
	m, err := c.CreateVMMigration(ctx, api.VMMigrationCreate{Name: "vs1", Host: "local", Start: true,
		NetworkMap: map[string]string{"VM Network": "user"}, SourceDisposition: api.DispositionPowerOff,
		Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider, Provider: "vc1",
			VMs: []api.VMMigrationSourceVM{{ID: src.Reference().Value, Name: "vsmoved"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	eventually(t, 60*time.Second, "the copy passes 3 MiB", func() error {
		m, err = c.GetVMMigration(ctx, "vs1")
		if err != nil {
			return err
		}
		if final := m.Status.State == api.VMMigrationFailed || m.Status.State == api.VMMigrationSucceeded; final {
			t.Fatalf("migration %+v", m.Status)
		}
		if len(m.Status.VMs) == 0 {
			return fmt.Errorf("%s", m.Status.State)
		}
		if v := m.Status.VMs[0]; v.Phase != "stream" || v.DoneBytes < 3<<20 {
			return fmt.Errorf("at %s %d bytes", v.Phase, v.DoneBytes)
		}
		return nil
	})
	if p := m.Status.VMs[0].Plan; p == nil || !p.Running || p.VCPUs != 1 || p.MemoryMiB != 256 {
		t.Fatalf("the plan of the running source: %+v", p)
	}
	s.kill9()
	s.start()
	c = s.adminClient(t)
	eventually(t, 60*time.Second, "the restarted server resumes the copy from its checkpoint", func() error {
		m, err = c.GetVMMigration(ctx, "vs1")
		if err != nil {
			return err
		}
		if v := m.Status.VMs[0]; v.Phase != "stream" || v.ResumedBytes < 1<<20 {
			if m.Status.State != api.VMMigrationRunning {
				t.Fatalf("migration after the restart: %+v", m.Status)
			}
			return fmt.Errorf("at %s, resumed at %d", v.Phase, v.ResumedBytes)
		}
		return nil
	})
	sim.slow.Store(false)
	m, err = c.WaitVMMigration(ctx, "vs1", 200*time.Millisecond, func(m *api.VMMigration) bool {
		return m.Status.State != api.VMMigrationRunning && m.Status.State != api.VMMigrationPending
	}, nil)
	if err != nil || m.Status.State != api.VMMigrationSucceeded {
		t.Fatalf("migration: %+v %v", m, err)
	}
	notes := strings.Join(m.Status.VMs[0].Notes, "\n")
	if !strings.Contains(notes, "no changed-block tracking") || !strings.Contains(notes, "powered off") {
		t.Errorf("the VM's notes say nothing of the cutover:\n%s", notes)
	}
	waitConsole(t, c, "vsmoved", marker, 1)
	t.Logf("from the migration's start to the guest's marker (a restart included): %v", time.Since(t0).Round(time.Millisecond))
	vm, err := c.GetVM(ctx, "vsmoved")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.VCPUs != 1 || vm.Spec.MemoryMiB != 256 || len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].MAC != srcMAC {
		t.Fatalf("VM spec %+v, want the source's MAC %s", vm.Spec, srcMAC)
	}
	if st, _ := src.PowerState(ctx); st != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("the source is %s after its migration", st)
	}
	body, _, err := c.ImageContent(ctx, "vsmoved-root")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "image.qcow2")
	fh, _ := os.Create(img)
	io.Copy(fh, body)
	body.Close()
	fh.Close()
	if out, err := exec.Command("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", img, boot).CombinedOutput(); err != nil {
		t.Fatalf("the migrated image differs from the guest's disk: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(data, "migrations", m.UID)); !os.IsNotExist(err) {
		t.Errorf("the job directory of the finished migration: %v", err)
	}
}

// singleVcsim is vcsim with one datacenter and one cluster, whose NFC
// downloads can be slowed.
type singleVcsim struct {
	url, ca string
	gc      *govmomi.Client
	slow    atomic.Bool
}

func startSingleVcsim(t *testing.T) *singleVcsim {
	t.Helper()
	m := simulator.VPX()
	m.Host = 0 // the cluster alone: one resource pool
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	v := &singleVcsim{}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(vcUser, vcPass)}
	srv := m.Service.NewServer()
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
	inner := srv.Config.Handler
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v.slow.Load() && strings.HasPrefix(r.URL.Path, "/nfc/") {
			w = &slowWriter{ResponseWriter: w, slow: &v.slow}
		}
		inner.ServeHTTP(w, r)
	})
	u := *srv.URL
	u.User = nil
	v.url = u.String()
	v.ca = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	gc, err := govmomi.NewClient(context.Background(), srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	v.gc = gc
	return v
}

// slowWriter sends about 2 MiB a second while slow holds.
type slowWriter struct {
	http.ResponseWriter
	slow *atomic.Bool
}

func (w *slowWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), 64<<10)
		m, err := w.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
		if w.slow.Load() {
			time.Sleep(30 * time.Millisecond)
		}
	}
	return n, nil
}

func powerOn(ctx context.Context, vm *object.VirtualMachine) error {
	task, err := vm.PowerOn(ctx)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
