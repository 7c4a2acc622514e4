package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

const (
	vcUser = "administrator@vsphere.local"
	vcPass = "Vcsim-Secret-9f2e!"
)

// vcsim is VMware's vCenter simulator, in this test process, with a real
// SOAP endpoint over TLS that the Polyvisor server (another process) uses.
type vcsim struct {
	model  *simulator.Model
	server *simulator.Server
	host   string // 127.0.0.1:port
	url    string
	ca     string
	gc     *govmomi.Client
}

func startVcsim(t *testing.T) *vcsim {
	t.Helper()
	m := simulator.VPX()
	m.Datacenter, m.Cluster, m.ClusterHost, m.Host, m.Machine = 2, 2, 2, 1, 2
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	v := &vcsim{model: m}
	v.serve(t, "127.0.0.1:0")
	t.Cleanup(func() {
		v.server.Close()
		m.Remove()
	})
	return v
}

// serve (re)starts the simulator's endpoint on addr.
func (v *vcsim) serve(t *testing.T, addr string) {
	t.Helper()
	v.model.Service.TLS = new(tls.Config)
	if v.server != nil {
		// A restarted endpoint needs a fresh mux: the simulator registers
		// its SDK paths only the first time.
		svc := v.model.Service
		mux := http.NewServeMux()
		mux.HandleFunc(svc.Context.Map.Path, svc.ServeSDK)
		mux.HandleFunc(svc.Context.Map.Path+"/vimService", svc.ServeSDK)
		svc.ServeMux = mux
	}
	v.model.Service.Listen = &url.URL{Host: addr, User: url.UserPassword(vcUser, vcPass)}
	v.server = v.model.Service.NewServer()
	v.host = v.server.URL.Host
	u := *v.server.URL
	u.User = nil
	v.url = u.String()
	v.ca = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: v.server.Certificate().Raw}))
	gc, err := govmomi.NewClient(context.Background(), v.server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	v.gc = gc
}

func (v *vcsim) finder(t *testing.T) *find.Finder {
	f := find.NewFinder(v.gc.Client, true)
	dc, err := f.DatacenterList(context.Background(), "*")
	if err != nil || len(dc) == 0 {
		t.Fatalf("datacenters: %v", err)
	}
	f.SetDatacenter(dc[0])
	return f
}

func (v *vcsim) vm(t *testing.T, name string) *object.VirtualMachine {
	t.Helper()
	vm, err := v.finder(t).VirtualMachine(context.Background(), name)
	if err != nil {
		t.Fatalf("finding vm %s in vcsim: %v", name, err)
	}
	return vm
}

func (v *vcsim) props(t *testing.T, vm *object.VirtualMachine) mo.VirtualMachine {
	t.Helper()
	var out mo.VirtualMachine
	if err := vm.Properties(context.Background(), vm.Reference(), []string{"name", "runtime.powerState", "config.hardware", "snapshot"}, &out); err != nil {
		t.Fatalf("reading vm: %v", err)
	}
	return out
}

func task(t *testing.T) func(*object.Task, error) {
	return func(tk *object.Task, err error) {
		t.Helper()
		if err == nil {
			err = tk.Wait(context.Background())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// polyVM finds the Polyvisor VM mirroring a vcsim VM.
func polyVM(t *testing.T, c *client.Client, nativeID string) (*api.VM, error) {
	t.Helper()
	vms, err := c.ListAllVMs(context.Background(), api.ListOptions{Provider: "vc1"})
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if vm.Spec.Provider != nil && vm.Spec.Provider.ID == nativeID {
			return &vm, nil
		}
	}
	return nil, fmt.Errorf("%w for %s", errNoPolyVM, nativeID)
}

// errNoPolyVM is polyVM's answer when the list holds no such VM.
var errNoPolyVM = errors.New("no polyvisor vm")

func countProviderObjects(t *testing.T, c *client.Client, provider string) (hosts, vms int) {
	t.Helper()
	h, err := c.ListAllHosts(context.Background(), api.ListOptions{Provider: provider})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.ListAllVMs(context.Background(), api.ListOptions{Provider: provider})
	if err != nil {
		t.Fatal(err)
	}
	return len(h), len(v)
}

// TestVSphereProvider connects a vcsim vCenter and drives it through the
// Polyvisor API; changes made behind Polyvisor's back through govmomi show
// up within 5 s.
func TestVSphereProvider(t *testing.T) {
	sim := startVcsim(t)
	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()

	// Bad input: each a clear error, nothing stored.
	closed := freePort(t)
	for _, bad := range []struct {
		name  string
		req   api.ProviderCreate
		field string
	}{
		{"wrong password", api.ProviderCreate{Name: "bad", Type: "vsphere", URL: sim.url, Username: vcUser, Password: "nope", CACert: sim.ca}, "password"},
		{"unreachable", api.ProviderCreate{Name: "bad", Type: "vsphere", URL: fmt.Sprintf("https://127.0.0.1:%d/sdk", closed), Username: vcUser, Password: vcPass, Insecure: true}, "url"},
		{"untrusted certificate", api.ProviderCreate{Name: "bad", Type: "vsphere", URL: sim.url, Username: vcUser, Password: vcPass}, "caCert"},
		{"unknown type", api.ProviderCreate{Name: "bad", Type: "hyperv", URL: sim.url}, "type"},
		{"password in the URL", api.ProviderCreate{Name: "bad", Type: "vsphere", URL: strings.Replace(sim.url, "https://", "https://u:"+vcPass+"@", 1), Username: vcUser, Insecure: true}, "url"},
	} {
		_, err := c.CreateProvider(ctx, bad.req)
		var ae *api.Error
		if client.HTTPStatus(err) != 400 || !asAPIError(err, &ae) || ae.Field != bad.field {
			t.Fatalf("%s: %v, want 400 naming %s", bad.name, err, bad.field)
		}
	}
	if ps, _ := c.ListAllProviders(ctx, api.ListOptions{}); len(ps) != 0 {
		t.Fatalf("a refused provider was stored: %v", ps)
	}

	// Two templates, made before Polyvisor connects (vcsim does not report
	// a VM turned template as a change): one to clone, and one whose name
	// a create will clash with on the vSphere side.
	tmpl := sim.vm(t, "DC0_C0_RP0_VM1")
	task(t)(tmpl.PowerOff(ctx))
	if err := tmpl.MarkAsTemplate(ctx); err != nil {
		t.Fatal(err)
	}
	clash := sim.vm(t, "DC0_C1_RP0_VM1")
	task(t)(clash.PowerOff(ctx))
	task(t)(clash.Rename(ctx, "clash-1"))
	if err := clash.MarkAsTemplate(ctx); err != nil {
		t.Fatal(err)
	}

	p, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "vc1", Type: "vsphere", URL: sim.url, Username: vcUser, Password: vcPass, CACert: sim.ca})
	if err != nil {
		t.Fatalf("adding the provider: %v", err)
	}
	raw, _ := json.Marshal(p)
	if strings.Contains(string(raw), vcPass) {
		t.Fatal("the API returned the password")
	}
	// Per datacenter: 2 clusters of 2 hosts + 1 host; 2 VMs per pool; less
	// the two templates.
	wantHosts, wantVMs := 2*(2*2+1), 2*(2+1)*2-2
	eventually(t, 20*time.Second, "the inventory is mirrored", func() error {
		p, err := c.GetProvider(ctx, "vc1")
		if err != nil {
			return err
		}
		h, v := countProviderObjects(t, c, "vc1")
		if p.Status.State != api.ProviderConnected || h != wantHosts || v != wantVMs {
			return fmt.Errorf("state %s, %d hosts, %d vms", p.Status.State, h, v)
		}
		return nil
	})
	inv, err := c.ProviderInventory(ctx, "vc1")
	if err != nil || len(inv.Datacenters) != 2 || len(inv.Clusters) != 4 || len(inv.Datastores) == 0 || len(inv.Networks) == 0 {
		t.Fatalf("inventory: %+v %v", inv, err)
	}

	// Out of band: power off a VM through govmomi.
	target := sim.vm(t, "DC0_C0_RP0_VM0")
	id := target.Reference().Value
	task(t)(target.PowerOff(ctx))
	start := time.Now()
	eventually(t, 5*time.Second, "an out-of-band power off shows", func() error {
		vm, err := polyVM(t, c, id)
		if err != nil {
			return err
		}
		if vm.Status.PowerState != api.PowerStopped || vm.Spec.PowerState != api.PowerStopped {
			return fmt.Errorf("status %s spec %s", vm.Status.PowerState, vm.Spec.PowerState)
		}
		return nil
	})
	t.Logf("out-of-band power off visible after %s", time.Since(start))
	pv, _ := polyVM(t, c, id)
	name := pv.Name

	// Lifecycle through Polyvisor, checked through govmomi.
	waitOK(t, c, mustOp(t)(c.StartVM(ctx, name)))
	if st := sim.props(t, target).Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("after start vcsim says %s", st)
	}
	waitOK(t, c, mustOp(t)(c.PauseVM(ctx, name)))
	if st := sim.props(t, target).Runtime.PowerState; st != types.VirtualMachinePowerStateSuspended {
		t.Fatalf("after pause vcsim says %s", st)
	}
	waitOK(t, c, mustOp(t)(c.ResumeVM(ctx, name)))
	waitOK(t, c, mustOp(t)(c.StopVM(ctx, name, &api.VMStop{TimeoutSeconds: 5})))
	if st := sim.props(t, target).Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("after stop vcsim says %s", st)
	}
	waitOK(t, c, mustOp(t)(c.ReconfigureVM(ctx, name, api.VMReconfigure{VCPUs: 2, MemoryMiB: 512}, client.VMActionOptions{})))
	if hw := sim.props(t, target).Config.Hardware; hw.NumCPU != 2 || hw.MemoryMB != 512 {
		t.Fatalf("after reconfigure vcsim has %d cpus, %d MB", hw.NumCPU, hw.MemoryMB)
	}
	waitOK(t, c, mustOp(t)(c.CreateSnapshot(ctx, name, api.SnapshotCreate{Name: "before-upgrade"})))
	snaps, err := c.ListSnapshots(ctx, name)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "before-upgrade" {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	if sim.props(t, target).Snapshot == nil {
		t.Fatal("vcsim has no snapshot")
	}
	waitOK(t, c, mustOp(t)(c.RevertSnapshot(ctx, name, "before-upgrade")))
	waitOK(t, c, mustOp(t)(c.DeleteSnapshot(ctx, name, "before-upgrade")))
	if sim.props(t, target).Snapshot != nil {
		t.Fatal("vcsim still has the snapshot")
	}

	// Create from a template, and delete.
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, api.VMCreate{Name: "web-new", Provider: "vc1", Template: "DC0_C0_RP0_VM1", VCPUs: 1, MemoryMiB: 128}, client.CreateOptions{})))
	made := sim.vm(t, "web-new")
	if pr := sim.props(t, made); pr.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || pr.Config.Hardware.MemoryMB != 128 {
		t.Fatalf("clone in vcsim: %s, %d MB", pr.Runtime.PowerState, pr.Config.Hardware.MemoryMB)
	}
	if vm, err := c.GetVM(ctx, "web-new"); err != nil || vm.Spec.Provider == nil || vm.Spec.Provider.ID != made.Reference().Value {
		t.Fatalf("polyvisor vm web-new: %+v %v", vm, err)
	}
	if _, v := countProviderObjects(t, c, "vc1"); v != wantVMs+1 {
		t.Fatalf("%d vms after create, want %d", v, wantVMs+1)
	}
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, "web-new", false)))
	var notFound *find.NotFoundError
	if _, err := sim.finder(t).VirtualMachine(ctx, "web-new"); !errors.As(err, &notFound) {
		t.Fatalf("vcsim still has web-new: %v, want not found", err)
	}

	// An unknown template fails the create and leaves nothing, on either side.
	op := mustOp(t)(c.CreateVM(ctx, api.VMCreate{Name: "ghost", Provider: "vc1", Template: "no-such-template", VCPUs: 1, MemoryMiB: 64}, client.CreateOptions{}))
	done, _ := c.WaitOperation(ctx, op.ID, nil)
	if done.Status != api.OpFailed || !strings.Contains(done.Error.Message, "no-such-template") {
		t.Fatalf("create from an unknown template: %+v", done)
	}
	eventually(t, 10*time.Second, "the failed create is rolled back", func() error {
		if _, err := c.GetVM(ctx, "ghost"); !client.IsNotFound(err) {
			return fmt.Errorf("ghost: %v", err)
		}
		return nil
	})

	// A name clash on the vSphere side: a template (templates are not
	// Polyvisor VMs) holds the name. The create fails, nothing is left.
	op = mustOp(t)(c.CreateVM(ctx, api.VMCreate{Name: "clash-1", Provider: "vc1", Template: "DC0_C0_RP0_VM1", VCPUs: 1, MemoryMiB: 64}, client.CreateOptions{}))
	done, _ = c.WaitOperation(ctx, op.ID, nil)
	if done.Status != api.OpFailed || done.Error == nil || !strings.Contains(done.Error.Message, "clash-1") {
		t.Fatalf("create clashing with a vSphere name: %+v", done)
	}
	eventually(t, 10*time.Second, "the clashing create is rolled back", func() error {
		if _, err := c.GetVM(ctx, "clash-1"); !client.IsNotFound(err) {
			return fmt.Errorf("clash-1: %v", err)
		}
		return nil
	})
	if vms, _ := sim.finder(t).VirtualMachineList(ctx, "clash-1*"); len(vms) != 1 {
		t.Fatalf("vcsim has %d vms named clash-1*, want only the template", len(vms))
	}

	// Capabilities: vcsim offers no WebMKS ticket; the API says so with 422.
	running, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "vc1", State: api.PowerRunning})
	if len(running) == 0 {
		t.Fatal("no running vcsim vm")
	}
	if _, err := c.ConsoleTicket(ctx, running[0].Name); client.HTTPStatus(err) != 422 {
		t.Fatalf("console ticket from vcsim: %v, want 422", err)
	}

	// Out of band: destroy a VM; it leaves Polyvisor.
	gone := sim.vm(t, "DC0_C1_RP0_VM0")
	task(t)(gone.PowerOff(ctx))
	task(t)(gone.Destroy(ctx))
	eventually(t, 5*time.Second, "an out-of-band destroy shows", func() error {
		_, err := polyVM(t, c, gone.Reference().Value)
		switch {
		case err == nil:
			return fmt.Errorf("still listed")
		case !errors.Is(err, errNoPolyVM):
			return err // the list failed: that proves nothing
		}
		return nil
	})

	// The password is nowhere in clear: not in API output, logs or the store.
	pout, _ := c.GetProvider(ctx, "vc1")
	raw, _ = json.Marshal(pout)
	if strings.Contains(string(raw), vcPass) || strings.Contains(srv.log.String(), vcPass) {
		t.Fatal("the password shows in API output or the server log")
	}
	filepath.Walk(srv.dataDir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || info.Mode()&os.ModeType != 0 {
			return nil
		}
		if b, _ := os.ReadFile(path); strings.Contains(string(b), vcPass) {
			t.Errorf("the password is in clear in %s", path)
		}
		return nil
	})

	// Connection loss: the provider is marked disconnected and its
	// inventory stale but kept; on return it resyncs without duplicates.
	_, before := countProviderObjects(t, c, "vc1")
	bl, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "vc1"})
	beforeNames := names(bl)
	addr := sim.host
	sim.server.Close()
	eventually(t, 30*time.Second, "the provider is marked disconnected", func() error {
		p, err := c.GetProvider(ctx, "vc1")
		if err != nil {
			return err
		}
		if p.Status.State != api.ProviderDisconnected || !p.Status.Stale {
			return fmt.Errorf("state %s stale %v", p.Status.State, p.Status.Stale)
		}
		return nil
	})
	if _, n := countProviderObjects(t, c, "vc1"); n != before {
		t.Fatalf("%d vms while disconnected, had %d", n, before)
	}
	sim.serve(t, addr)
	eventually(t, 60*time.Second, "the provider reconnects and resyncs", func() error {
		p, err := c.GetProvider(ctx, "vc1")
		if err != nil {
			return err
		}
		if p.Status.State != api.ProviderConnected || p.Status.Stale {
			return fmt.Errorf("state %s stale %v", p.Status.State, p.Status.Stale)
		}
		return nil
	})
	if _, n := countProviderObjects(t, c, "vc1"); n != before {
		after, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "vc1"})
		t.Fatalf("%d vms after reconnecting, had %d: %v (before: %v)", n, before, names(after), beforeNames)
	}

	// Removing the provider removes its inventory from Polyvisor only.
	if _, err := c.DeleteProvider(ctx, "vc1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the inventory leaves with the provider", func() error {
		if h, v := countProviderObjects(t, c, "vc1"); h+v != 0 {
			return fmt.Errorf("%d hosts, %d vms left", h, v)
		}
		return nil
	})
	sim.vm(t, "DC0_C0_RP0_VM0") // still in vcsim
}

func asAPIError(err error, target **api.Error) bool {
	return err != nil && errors.As(err, target)
}
