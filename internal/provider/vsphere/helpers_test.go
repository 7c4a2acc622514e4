package vsphere

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log/slog"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// The simulator accepts only these credentials.
const (
	simUser = "administrator@vsphere.local"
	simPass = "Secret-pa55!"
)

// simEnv is an in-process vcsim (VMware's vCenter simulator) with a real
// SOAP endpoint over TLS, and a plain govmomi client to it for changes
// made behind the provider's back and for checking what it did.
type simEnv struct {
	model  *simulator.Model
	server *simulator.Server
	url    string // https://127.0.0.1:port/sdk, no credentials
	ca     []byte // PEM of the server's certificate
	c      *vim25.Client
}

// testModel is a vCenter with two datacenters (one inside a folder), two
// clusters of two hosts and a standalone host in each, and two VMs per
// resource pool: 4 clusters, 10 hosts and 12 VMs in all.
func testModel() *simulator.Model {
	m := simulator.VPX()
	m.Datacenter = 2
	m.Folder = 1
	m.Cluster = 2
	m.ClusterHost = 2
	m.Host = 1
	m.Machine = 2
	return m
}

func newSim(t testing.TB, m *simulator.Model) *simEnv {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatalf("create vcsim model: %v", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword(simUser, simPass)}
	s := m.Service.NewServer()
	t.Cleanup(func() {
		s.Close()
		m.Remove()
	})
	u := *s.URL
	u.User = nil
	ctx := context.Background()
	gc, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatalf("govmomi client: %v", err)
	}
	t.Cleanup(func() { _ = gc.Logout(context.Background()) })
	return &simEnv{
		model:  m,
		server: s,
		url:    u.String(),
		ca:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}),
		c:      gc.Client,
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *simEnv) config() provider.Config {
	return provider.Config{Name: "vcsim", URL: e.url, Username: simUser, Password: simPass, CACert: e.ca}
}

// connect returns a provider connected to the simulator.
func (e *simEnv) connect(t testing.TB) *Provider {
	t.Helper()
	p := New(e.config(), testLogger())
	if err := p.Connect(testCtx(t)); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// vms lists every VM (templates too) as govmomi sees them.
func (e *simEnv) vms(t testing.TB, ps ...string) []mo.VirtualMachine {
	t.Helper()
	ctx := context.Background()
	v, err := view.NewManager(e.c).CreateContainerView(ctx, e.c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v.Destroy(ctx) }()
	if len(ps) == 0 {
		ps = []string{"name"}
	}
	var out []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, ps, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// vmByName returns the VM named name.
func (e *simEnv) vmByName(t testing.TB, name string) *object.VirtualMachine {
	t.Helper()
	for _, vm := range e.vms(t) {
		if vm.Name == name {
			return object.NewVirtualMachine(e.c, vm.Self)
		}
	}
	t.Fatalf("no vm named %q", name)
	return nil
}

// vm reads a VM's properties through govmomi.
func (e *simEnv) vm(t testing.TB, id string, ps ...string) mo.VirtualMachine {
	t.Helper()
	var vm mo.VirtualMachine
	err := property.DefaultCollector(e.c).RetrieveOne(context.Background(), vmRef(id), ps, &vm)
	if err != nil {
		t.Fatalf("read vm %s: %v", id, err)
	}
	return vm
}

func (e *simEnv) power(t testing.TB, id string) types.VirtualMachinePowerState {
	t.Helper()
	return e.vm(t, id, "runtime.powerState").Runtime.PowerState
}

// path is the inventory path govmomi gives ref.
func (e *simEnv) path(t testing.TB, ref types.ManagedObjectReference) string {
	t.Helper()
	p, err := find.InventoryPath(context.Background(), e.c, ref)
	if err != nil {
		t.Fatalf("inventory path of %s: %v", ref, err)
	}
	return p
}

// setTools says VMware Tools run (or not) in a VM's guest, as vcsim's VMs
// have none.
func (e *simEnv) setTools(t testing.TB, id string, running bool) {
	t.Helper()
	status := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	if running {
		status = types.VirtualMachineToolsRunningStatusGuestToolsRunning
	}
	ctx := e.model.Service.Context
	obj := ctx.Map.Get(vmRef(id))
	ctx.Map.AtomicUpdate(ctx, obj, []types.PropertyChange{{Name: "guest.toolsRunningStatus", Val: string(status)}})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// done returns a function that waits for a govmomi task:
// done(t)(vm.PowerOff(ctx)).
func done(t testing.TB) func(*object.Task, error) {
	return func(task *object.Task, err error) {
		t.Helper()
		must(t, err)
		must(t, task.Wait(context.Background()))
	}
}
