package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestRootVolumeRules holds a create's root-volume fields: the refusals
// (each leaving no VM and no volume), a volume made with the VM in one
// write and counted against volumeMiB, the VM placed on the pool's host,
// its detach refused, and an existing volume attached with the boot flag.
// The hosts are the test's (no QEMU).
func TestRootVolumeRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	for _, p := range []api.PoolCreate{
		{Name: "h2dir", Kind: api.PoolDir, Path: "/srv/h2", Hosts: []string{"h2"}, Projects: []string{"pa"}},
		{Name: "closed", Kind: api.PoolDir, Path: "/srv/closed", Hosts: []string{"h1"}},
	} {
		if _, err := e.super.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	m := e.as(api.RoleMember, "pa")
	base := func(name string) api.VMCreate {
		return api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 128, Disks: []api.Disk{{Name: "root", Image: "img"}}}
	}
	long := strings.Repeat("x", 60)
	for _, c := range []struct {
		what   string
		change func(*api.VMCreate)
		status int
		text   string
	}{
		{"both fields", func(r *api.VMCreate) { r.RootVolume, r.RootPool = "v", "h2dir" }, 400, "rootVolume"},
		{"delete flag alone", func(r *api.VMCreate) { r.DeleteRootVolume = true }, 400, "deleteRootVolume"},
		{"delete flag with an existing volume", func(r *api.VMCreate) { r.Disks, r.RootVolume, r.DeleteRootVolume = nil, "v", true }, 400, "deleteRootVolume"},
		{"a missing volume", func(r *api.VMCreate) { r.Disks, r.RootVolume = nil, "ghost" }, 422, `volume "ghost"`},
		{"a pool without an image", func(r *api.VMCreate) { r.Disks, r.RootPool = nil, "h2dir" }, 400, "disks"},
		{"a pool not granted", func(r *api.VMCreate) { r.RootPool = "closed" }, 422, "not granted"},
		{"a name too long for its volume", func(r *api.VMCreate) { r.Name, r.RootPool = long, "h2dir" }, 400, "too long"},
		{"ha restart on a dir pool", func(r *api.VMCreate) { r.RootPool, r.HA = "h2dir", api.HARestart }, 422, "not shared"},
	} {
		req := base("rv")
		c.change(&req)
		_, err := m.CreateVM(ctx, req, client.CreateOptions{})
		wantStatus(t, c.what, err, c.status, c.text)
	}
	q := int64(0)
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VolumeMiB: &q}); err != nil {
		t.Fatal(err)
	}
	req := base("rv")
	req.RootPool = "h2dir"
	_, err := m.CreateVM(ctx, req, client.CreateOptions{})
	wantStatus(t, "a root volume over the quota", err, 422, "volumeMiB")
	if l, _ := m.ListVolumes(ctx, api.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("volumes after refused creates: %+v", l.Items)
	}
	if _, err := m.GetVM(ctx, "rv"); client.HTTPStatus(err) != 404 {
		t.Fatalf("vm after refused creates: %v", err)
	}
	q = 100
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VolumeMiB: &q}); err != nil {
		t.Fatal(err)
	}
	req.DeleteRootVolume = true
	if _, err := m.CreateVM(ctx, req, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vm, err := m.GetVM(ctx, "rv")
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.GetVolume(ctx, "rv-root")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.Host != "h2" || len(vm.Spec.Disks) != 0 || len(vm.Spec.Volumes) != 1 {
		t.Fatalf("vm booting from a volume: host %s, disks %+v, volumes %+v", vm.Spec.Host, vm.Spec.Disks, vm.Spec.Volumes)
	}
	if a := vm.Spec.Volumes[0]; a.Volume != "rv-root" || !a.Boot || !a.DeleteWithVM || a.Path != v.Spec.Path {
		t.Fatalf("root attachment %+v, volume path %s", a, v.Spec.Path)
	}
	if v.Spec.AttachedTo != "rv" || v.Spec.Host != "h2" || v.Spec.Source == nil || v.Spec.Source.Image != "pa/img" || v.Spec.SizeMiB != 1 {
		t.Fatalf("root volume spec %+v", v.Spec)
	}
	_, err = m.DetachVolume(ctx, "rv-root", "")
	wantStatus(t, "detaching the root volume", err, 422, "root disk")
	again := base("rv2")
	again.RootPool = "h2dir"
	again.Name = "rv"
	_, err = m.CreateVM(ctx, again, client.CreateOptions{})
	wantStatus(t, "a vm that exists", err, 409, "")

	// An existing volume: ready, unattached; it is attached with the
	// boot flag and no delete flag.
	if _, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "boot1", Pool: "h2dir", SizeMiB: 8}); err != nil {
		t.Fatal(err)
	}
	ex := base("rv3")
	ex.Disks, ex.RootVolume = nil, "boot1"
	_, err = m.CreateVM(ctx, ex, client.CreateOptions{})
	wantStatus(t, "booting from a pending volume", err, 409, "pending")
	readyVolume(t, e, "h2", "pa/boot1", 1)
	if _, err := m.CreateVM(ctx, ex, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vm, err = m.GetVM(ctx, "rv3")
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.Spec.Volumes) != 1 || !vm.Spec.Volumes[0].Boot || vm.Spec.Volumes[0].DeleteWithVM || vm.Spec.Host != "h2" {
		t.Fatalf("vm booting from boot1: host %s volumes %+v", vm.Spec.Host, vm.Spec.Volumes)
	}
	ex.Name = "rv4"
	_, err = m.CreateVM(ctx, ex, client.CreateOptions{})
	wantStatus(t, "booting from an attached volume", err, 409, `attached to vm "rv3"`)
}

// TestNBDPoolRules holds an nbd pool's address and its volumes' export
// and host.
func TestNBDPoolRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	for _, c := range []struct {
		req  api.PoolCreate
		text string
	}{
		{api.PoolCreate{Name: "n", Kind: api.PoolNBD, Path: "/srv/n", Hosts: []string{"h1", "h2"}}, "address"},
		{api.PoolCreate{Name: "n", Kind: api.PoolNBD, Path: "/srv/n", Hosts: []string{"h1"}, Address: "storage:10809"}, "address"},
		{api.PoolCreate{Name: "n", Kind: api.PoolNBD, Path: "/srv/n", Hosts: []string{"h1"}, Address: "0.0.0.0:10809"}, "address"},
		{api.PoolCreate{Name: "n", Kind: api.PoolShared, Path: "/srv/n", Hosts: []string{"h1"}, Address: "10.0.0.1:10809"}, "nbd pools only"},
		{api.PoolCreate{Name: "n", Kind: "iscsi", Path: "/srv/n", Hosts: []string{"h1"}}, "kind"},
	} {
		_, err := e.super.CreatePool(ctx, c.req)
		wantStatus(t, "pool "+c.text, err, 400, c.text)
	}
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "n", Kind: api.PoolNBD, Path: "/srv/n", Hosts: []string{"h1", "h2"},
		Address: "10.0.0.1:10809", Projects: []string{"pa"}}); err != nil {
		t.Fatal(err)
	}
	m := e.as(api.RoleMember, "pa")
	_, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "nv", Pool: "n", SizeMiB: 8, Host: "h2"})
	wantStatus(t, "an nbd volume made off its serving host", err, 400, "serving host")
	v, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "nv", Pool: "n", SizeMiB: 8})
	if err != nil {
		t.Fatal(err)
	}
	if v.Spec.Host != "h1" || v.Spec.Export != "nbd://10.0.0.1:10809/"+v.UID {
		t.Fatalf("nbd volume host %s export %q", v.Spec.Host, v.Spec.Export)
	}

	// An image store: shared pools only, and such a pool is not
	// deleted until it is turned off.
	_, err = e.super.CreatePool(ctx, api.PoolCreate{Name: "d", Kind: api.PoolDir, Path: "/srv/d", Hosts: []string{"h1"}, Images: true})
	wantStatus(t, "images in a dir pool", err, 400, "images")
	_, err = e.super.UpdatePool(ctx, "n", api.PoolUpdate{Images: ptr(true)})
	wantStatus(t, "images in an nbd pool", err, 400, "images")
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "s", Kind: api.PoolShared, Path: "/srv/s", Hosts: []string{"h1", "h2"}, Images: true}); err != nil {
		t.Fatal(err)
	}
	err = e.super.DeletePool(ctx, "s")
	wantStatus(t, "deleting an image store", err, 409, "images off")
	if p, err := e.super.UpdatePool(ctx, "s", api.PoolUpdate{Images: ptr(false)}); err != nil || p.Spec.Images {
		t.Fatalf("turning images off: %+v %v", p, err)
	}
	if err := e.super.DeletePool(ctx, "s"); err != nil {
		t.Fatal(err)
	}
}

// TestGuestsDeniedNBDAddresses: every host's watch begins with the
// addresses of all nbd pools, which no guest may reach (their exports
// carry no authentication), and is told again when they change: a host
// outside the pool too, since its guests may route to the address.
func TestGuestsDeniedNBDAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "n1", Kind: api.PoolNBD, Path: "/srv/n1", Hosts: []string{"h1"}, Address: "10.0.0.1:10809"}); err != nil {
		t.Fatal(err)
	}
	deny := func(msgs <-chan api.AgentMessage) []string {
		t.Helper()
		for m := range msgs {
			if m.Type == api.AgentMsgGuestDeny {
				return m.GuestDeny
			}
		}
		t.Fatal("the watch ended without a guest-deny message")
		return nil
	}
	h2 := e.client(e.tokens["h2"], "")
	msgs, _ := h2.WatchHost(ctx, "h2")
	if got := deny(msgs); !slices.Equal(got, []string{"10.0.0.1:10809"}) {
		t.Fatalf("h2, outside the pool, is told to deny %v", got)
	}
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "n2", Kind: api.PoolNBD, Path: "/srv/n2", Hosts: []string{"h1"}, Address: "10.0.0.2:10809"}); err != nil {
		t.Fatal(err)
	}
	if got := deny(msgs); !slices.Equal(got, []string{"10.0.0.1:10809", "10.0.0.2:10809"}) {
		t.Fatalf("after a second nbd pool h2 is told to deny %v", got)
	}
	if err := e.super.DeletePool(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if got := deny(msgs); !slices.Equal(got, []string{"10.0.0.2:10809"}) {
		t.Fatalf("after a pool's removal h2 is told to deny %v", got)
	}
}
