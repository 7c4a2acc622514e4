package network

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/controller/quota"
	"github.com/polyvisor/polyvisor/internal/store"
)

// env is a Manager over a real store (an embedded etcd), with the
// collections the server registers and two projects, pa and pb.
type env struct {
	t        testing.TB
	st       *store.Store
	m        *Manager
	networks *store.Collection[api.Network]
	subnets  *store.Collection[api.Subnet]
	ports    *store.Collection[api.Port]
	groups   *store.Collection[api.SecurityGroup]
	fips     *store.Collection[api.FloatingIP]
	claims   *store.Collection[Claim]
	vms      *store.Collection[api.VM]
	hosts    *store.Collection[api.Host]
	projects *store.Collection[api.Project]
	// gate is the server's quota gate: it admits network objects too.
	gate *quota.Gate
}

// sizes is the operation queue as the quota gate sees it: no resizes
// queued.
type sizes struct{}

func (sizes) PendingSize(vm *api.VM) api.Usage {
	return api.Usage{VCPUs: int64(vm.Spec.VCPUs), MemoryMiB: vm.Spec.MemoryMiB}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newEnv opens a store in a fresh directory, or on endpoints of an etcd
// another env embeds (a second server of the same installation).
func newEnv(t testing.TB, endpoints ...string) *env {
	t.Helper()
	ctx := testCtx(t)
	cfg := store.Config{DataDir: t.TempDir(), Endpoints: endpoints, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st}
	e.vms = store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev })
	e.hosts = store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev })
	e.projects = store.NewCollection(st, "projects", func(p *api.Project, rev int64) { p.Version = rev })
	e.networks = store.NewCollection(st, "networks", func(n *api.Network, rev int64) { n.Version = rev })
	e.subnets = store.NewCollection(st, "subnets", func(s *api.Subnet, rev int64) { s.Version = rev })
	e.ports = store.NewCollection(st, "ports", func(p *api.Port, rev int64) { p.Version = rev })
	e.groups = store.NewCollection(st, "securitygroups", func(g *api.SecurityGroup, rev int64) { g.Version = rev })
	e.fips = store.NewCollection(st, "floatingips", func(f *api.FloatingIP, rev int64) { f.Version = rev })
	e.claims = store.NewCollection(st, "netclaims", SetClaimVersion)
	images := store.NewCollection(st, "images", func(i *api.Image, rev int64) { i.Version = rev })
	records := admission.New(st, admission.NewCollection(st))
	if err := st.Start(ctx); err != nil {
		t.Fatalf("starting the store: %v", err)
	}
	e.m = New(Config{Store: st, Networks: e.networks, Subnets: e.subnets, Ports: e.ports, SecurityGroups: e.groups,
		FloatingIPs: e.fips, Claims: e.claims, VMs: e.vms, Hosts: e.hosts, Projects: e.projects,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Settle: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond,
		Admit: func(ctx context.Context, project string, delta api.Usage) ([]store.Op, error) {
			return e.gate.Admit(ctx, project, delta)
		}})
	e.gate = quota.New(quota.Config{Projects: e.projects, VMs: e.vms, Images: images, Queue: sizes{}, Records: records, Counted: e.m.Counted})
	if len(endpoints) == 0 {
		for _, p := range []string{api.DefaultProject, "pa", "pb"} {
			if _, err := st.Txn(ctx, e.projects.OpCreate(p, &api.Project{Meta: api.Meta{Name: p, UID: api.NewUID()}}), e.m.DefaultGroupOp(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return e
}

// mustNetwork makes an overlay network with one subnet.
func (e *env) mustNetwork(project, name, cidr string) *api.Network {
	e.t.Helper()
	ctx := testCtx(e.t)
	n, err := e.m.CreateNetwork(ctx, project, api.NetworkCreate{Name: name}, false)
	if err != nil {
		e.t.Fatalf("creating network %s/%s: %v", project, name, err)
	}
	if cidr != "" {
		if _, err := e.m.CreateSubnet(ctx, project, api.SubnetCreate{Name: name + "-v4", SubnetSpec: api.SubnetSpec{Network: name, CIDR: cidr}}); err != nil {
			e.t.Fatalf("creating subnet %s of %s/%s: %v", cidr, project, name, err)
		}
	}
	return n
}

// host registers an agent host with an underlay address.
func (e *env) host(name, addr string) {
	e.t.Helper()
	if _, err := e.hosts.Create(testCtx(e.t), name, &api.Host{Meta: api.Meta{Name: name, UID: api.NewUID()}, Status: api.HostStatus{Address: addr, State: api.HostReady}}); err != nil {
		e.t.Fatal(err)
	}
}

// vm makes a VM on host with NICs as a create does: the VM and its ports
// in one transaction, with the admission of its ports.
func (e *env) vm(project, name, host string, nics ...api.NIC) (*api.VM, error) {
	ctx := testCtx(e.t)
	key := api.Key(project, name)
	var plan *VMPlan
	for attempt := 0; ; attempt++ {
		var err error
		plan, err = e.m.PlanVM(project, key, nics, 0, nicField, plan)
		if err != nil {
			return nil, err
		}
		conds, err := e.gate.Admit(ctx, project, api.Usage{VMs: 1, Ports: PortsMade(nics, 0)})
		if err != nil {
			plan.Done()
			return nil, err
		}
		vm := &api.VM{Meta: api.Meta{Name: name, Project: project, UID: api.NewUID()}, Spec: api.VMSpec{Host: host, NICs: plan.NICs}}
		_, err = e.st.Txn(ctx, append(append([]store.Op{e.vms.OpCreate(key, vm)}, plan.Ops...), conds...)...)
		plan.Done()
		if err == nil {
			return vm, nil
		}
		retry, aerr := plan.Failed(err)
		if aerr != nil {
			return nil, aerr
		}
		if !retry || attempt > 20 {
			return nil, err
		}
	}
}

func nicField(i int) string { return "nics[" + string(rune('0'+i)) + "]." }

// removeVM deletes a VM with its ports, as its host's removal report does.
func (e *env) removeVM(project, name string) {
	e.t.Helper()
	vm, ok := e.vms.Get(api.Key(project, name))
	if !ok {
		e.t.Fatalf("no vm %s/%s", project, name)
	}
	if _, err := e.st.Txn(testCtx(e.t), append([]store.Op{e.vms.OpDelete(vm.Key(), vm.Version)}, e.m.ReleaseVMOps(vm)...)...); err != nil {
		e.t.Fatal(err)
	}
}

// apiErr returns the API error in err, failing the test without one.
func apiErr(t testing.TB, err error) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an API error", err)
	}
	return ae
}

// wantErr checks err is an API error of code naming field.
func wantErr(t testing.TB, what string, err error, code, field string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %s naming %q", what, code, field)
		return
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Errorf("%s: %v, want an API error %s naming %q", what, err, code, field)
		return
	}
	if ae.Code != code || ae.Field != field {
		t.Errorf("%s: %s %q (%s), want %s naming %q", what, ae.Code, ae.Field, ae.Message, code, field)
	}
}

// mustGet returns an object of the index, failing the test without it.
func mustGet[T any](t testing.TB, c *store.Collection[T], name string) *T {
	t.Helper()
	v, ok := c.Get(name)
	if !ok {
		t.Fatalf("no %s %q", c.Kind(), name)
	}
	return v
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
