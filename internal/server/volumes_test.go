package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// wantStatus fails unless err is an answer of that status whose message
// holds text.
func wantStatus(t *testing.T, what string, err error, status int, text string) {
	t.Helper()
	if client.HTTPStatus(err) != status || err == nil || !strings.Contains(err.Error(), text) {
		t.Errorf("%s: %v, want %d saying %q", what, err, status, text)
	}
}

func TestPoolValidationAndVisibility(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	bad := []struct {
		req    api.PoolCreate
		status int
		text   string
	}{
		{api.PoolCreate{Name: "p", Kind: "nfs", Path: "/srv/p", Hosts: []string{"h1"}}, 400, "kind"},
		{api.PoolCreate{Name: "p", Kind: api.PoolDir, Path: "srv/p", Hosts: []string{"h1"}}, 400, "path"},
		{api.PoolCreate{Name: "p", Kind: api.PoolDir, Path: "/srv/../p", Hosts: []string{"h1"}}, 400, "path"},
		{api.PoolCreate{Name: "p", Kind: api.PoolDir, Path: "/srv/p", Hosts: []string{"h1", "h2"}}, 400, "exactly one host"},
		{api.PoolCreate{Name: "p", Kind: api.PoolShared, Path: "/srv/p", Hosts: []string{"h1", "ghost"}}, 400, `host "ghost"`},
		{api.PoolCreate{Name: "p", Kind: api.PoolShared, Path: "/srv/p", Hosts: []string{"h1", "h1"}}, 400, "twice"},
		{api.PoolCreate{Name: "p", Kind: api.PoolShared, Path: "/srv/p", Hosts: []string{"h1"}, Projects: []string{"nope"}}, 400, "projects"},
		{api.PoolCreate{Name: "P!", Kind: api.PoolDir, Path: "/srv/p", Hosts: []string{"h1"}}, 400, "name"},
	}
	for _, b := range bad {
		_, err := e.super.CreatePool(ctx, b.req)
		wantStatus(t, "create pool "+b.text, err, b.status, b.text)
	}
	if l, _ := e.super.ListPools(ctx); len(l) != 0 {
		t.Fatalf("refused creates left pools: %+v", l)
	}
	_, err := e.as(api.RoleAdmin, "pa").CreatePool(ctx, api.PoolCreate{Name: "p", Kind: api.PoolDir, Path: "/srv/p", Hosts: []string{"h1"}})
	wantStatus(t, "a project admin defining a pool", err, 403, "")
	for _, p := range []api.PoolCreate{
		{Name: "pa-pool", Kind: api.PoolDir, Path: "/srv/pa", Hosts: []string{"h1"}, Projects: []string{"pa"}},
		{Name: "pb-pool", Kind: api.PoolShared, Path: "/srv/pb", Hosts: []string{"h1", "h2"}, Projects: []string{"pb"}},
	} {
		if _, err := e.super.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.super.CreatePool(ctx, api.PoolCreate{Name: "pa-pool", Kind: api.PoolDir, Path: "/srv/x", Hosts: []string{"h1"}})
	wantStatus(t, "a second pool of one name", err, 409, "already exists")
	l, err := e.as(api.RoleViewer, "pa").ListPools(ctx)
	if err != nil || len(l) != 1 || l[0].Name != "pa-pool" {
		t.Fatalf("a viewer of pa lists %+v, %v; want pa-pool only", l, err)
	}
	_, err = e.as(api.RoleViewer, "pa").GetPool(ctx, "pb-pool")
	wantStatus(t, "a viewer of pa reading pb's pool", err, 404, "pool")
}

// readyVolume reports the volume made, as its host would.
func readyVolume(t *testing.T, e *env, host, key string, gen int64) {
	t.Helper()
	hc := e.client(e.tokens[host], "")
	if err := hc.PutVolumeStatus(context.Background(), host, key, api.VolumeStatus{State: api.VolumeReady, ObservedGeneration: gen, SizeMiB: 64}); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeRules holds the API's refusals and the attach's effect on the
// VM's spec, with hosts the test speaks for (no QEMU).
func TestVolumeRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	vm, err := e.super.WithProject("pa").GetVM(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"h1": "h2", "h2": "h1"}[vm.Spec.Host]
	for _, p := range []api.PoolCreate{
		{Name: "here", Kind: api.PoolDir, Path: "/srv/here", Hosts: []string{vm.Spec.Host}, Projects: []string{"pa"}},
		{Name: "there", Kind: api.PoolDir, Path: "/srv/there", Hosts: []string{other}, Projects: []string{"pa"}},
	} {
		if _, err := e.super.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	e.ctlObserved(t, e.tokens[vm.Spec.Host], "pa/vm1")
	m := e.as(api.RoleMember, "pa")
	_, err = e.as(api.RoleOperator, "pa").CreateVolume(ctx, api.VolumeCreate{Name: "v1", Pool: "here", SizeMiB: 64})
	wantStatus(t, "an operator creating a volume", err, 403, "")
	for _, c := range []struct {
		req    api.VolumeCreate
		status int
		text   string
	}{
		{api.VolumeCreate{Name: "v1", Pool: "nope", SizeMiB: 64}, 422, "not granted"},
		{api.VolumeCreate{Name: "v1", Pool: "here"}, 400, "sizeMiB"},
		{api.VolumeCreate{Name: "v1", Pool: "here", SizeMiB: -1}, 400, "sizeMiB"},
		{api.VolumeCreate{Name: "v1", Pool: "here", SizeMiB: 64, Limits: api.VolumeLimits{IOPS: -1}}, 400, "limits"},
		{api.VolumeCreate{Name: "v1", Pool: "here", Source: &api.VolumeSource{Image: "ghost"}}, 422, `image "ghost"`},
		{api.VolumeCreate{Name: "v1", Pool: "here", Source: &api.VolumeSource{Volume: "ghost"}}, 422, "ghost"},
		{api.VolumeCreate{Name: "v1", Pool: "here", Source: &api.VolumeSource{Snapshot: "s"}}, 400, "source.volume"},
		{api.VolumeCreate{Name: "v1", Pool: "here", Host: other, SizeMiB: 64}, 400, "host"},
	} {
		_, err := m.CreateVolume(ctx, c.req)
		wantStatus(t, "create "+c.text, err, c.status, c.text)
	}
	v, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "v1", Pool: "here", SizeMiB: 64, Limits: api.VolumeLimits{IOPS: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Status.State != api.VolumePending || v.Spec.Host != vm.Spec.Host || !strings.HasPrefix(v.Spec.Path, "/srv/here/pa/") {
		t.Fatalf("new volume %+v", v)
	}
	_, err = m.AttachVolume(ctx, "v1", "vm1")
	wantStatus(t, "attaching a pending volume", err, 409, "pending")
	// Only the volume's host reports on it.
	err = e.client(e.tokens[other], "").PutVolumeStatus(ctx, other, "pa/v1", api.VolumeStatus{State: api.VolumeReady, ObservedGeneration: 1})
	wantStatus(t, "another host reporting the volume", err, 404, "")
	readyVolume(t, e, vm.Spec.Host, "pa/v1", v.Generation)

	_, err = e.as("bob", "pb").AttachVolume(ctx, "v1", "vm1")
	wantStatus(t, "attaching a volume of another project", err, 404, "volume")
	_, err = m.AttachVolume(ctx, "v1", "ghost")
	wantStatus(t, "attaching to a missing vm", err, 404, "vm")
	v, err = m.AttachVolume(ctx, "v1", "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status.State != api.VolumeAttached || v.Spec.AttachedTo != "vm1" {
		t.Fatalf("attached volume %+v", v)
	}
	after, _ := e.super.WithProject("pa").GetVM(ctx, "vm1")
	if after.Generation != vm.Generation+1 || len(after.Spec.Volumes) != 1 || after.Spec.Volumes[0] !=
		(api.VolumeAttachment{Volume: "v1", Path: v.Spec.Path, SizeMiB: 64, Limits: api.VolumeLimits{IOPS: 100}}) {
		t.Fatalf("vm after attach: generation %d (was %d), volumes %+v", after.Generation, vm.Generation, after.Spec.Volumes)
	}
	_, err = m.AttachVolume(ctx, "v1", "vm1")
	wantStatus(t, "attaching twice", err, 409, "already attached")
	// A dir pool's volume cannot follow the VM to another host.
	_, err = e.super.WithProject("pa").MigrateVM(ctx, "vm1", api.VMMigrate{Host: other})
	wantStatus(t, "migrating a vm with a dir pool's volume", err, 422, `volume "v1" in dir pool "here"`)
	_, err = m.DeleteVolume(ctx, "v1")
	wantStatus(t, "deleting an attached volume", err, 409, "detach it first")
	_, err = m.DetachVolume(ctx, "disk0", "vm1")
	wantStatus(t, "detaching the root disk", err, 422, "own disk")
	if _, err := m.GrowVolume(ctx, "v1", 128); err != nil {
		t.Fatal(err)
	}
	if g, _ := e.super.WithProject("pa").GetVM(ctx, "vm1"); g.Spec.Volumes[0].SizeMiB != 128 {
		t.Fatalf("grown volume in the vm's spec: %+v", g.Spec.Volumes)
	}
	if _, err := m.SetVolumeLimits(ctx, "v1", api.VolumeLimits{BPS: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if g, _ := e.super.WithProject("pa").GetVM(ctx, "vm1"); g.Spec.Volumes[0].Limits != (api.VolumeLimits{BPS: 1 << 20}) {
		t.Fatalf("limits in the vm's spec: %+v", g.Spec.Volumes)
	}

	// A volume in a pool the VM's host does not see.
	w, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "v2", Pool: "there", SizeMiB: 8})
	if err != nil {
		t.Fatal(err)
	}
	readyVolume(t, e, other, "pa/v2", w.Generation)
	_, err = m.AttachVolume(ctx, "v2", "vm1")
	wantStatus(t, "attaching across hosts", err, 422, "does not see")

	if v, err = m.DetachVolume(ctx, "v1", ""); err != nil || v.Spec.AttachedTo != "" {
		t.Fatalf("detach: %+v, %v", v, err)
	}
	if g, _ := e.super.WithProject("pa").GetVM(ctx, "vm1"); len(g.Spec.Volumes) != 0 {
		t.Fatalf("vm after detach: %+v", g.Spec.Volumes)
	}
	_, err = m.DetachVolume(ctx, "v1", "")
	wantStatus(t, "detaching a detached volume", err, 409, "not attached")
	err = e.super.DeletePool(ctx, "here")
	wantStatus(t, "deleting a pool with volumes", err, 409, "holds 1 volumes")
	if v, err = m.DeleteVolume(ctx, "v1"); err != nil || v.Status.State != api.VolumeDeleting {
		t.Fatalf("delete: %+v, %v", v, err)
	}
	if err := e.client(e.tokens[vm.Spec.Host], "").VolumeRemoved(ctx, vm.Spec.Host, "pa/v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetVolume(ctx, "v1"); client.HTTPStatus(err) != 404 {
		t.Fatalf("removed volume: %v", err)
	}
	if err := e.super.DeletePool(ctx, "here"); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeQuota: volumes count against the project's volumeMiB quota,
// at create and at grow.
func TestVolumeQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "p", Kind: api.PoolShared, Path: "/srv/p", Hosts: []string{"h1", "h2"}, Projects: []string{"pa"}}); err != nil {
		t.Fatal(err)
	}
	limit := int64(100)
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VolumeMiB: &limit}); err != nil {
		t.Fatal(err)
	}
	m := e.as(api.RoleMember, "pa")
	if _, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "a", Pool: "p", SizeMiB: 60}); err != nil {
		t.Fatal(err)
	}
	_, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "b", Pool: "p", SizeMiB: 41})
	wantStatus(t, "a volume over the quota", err, 422, "volumeMiB")
	_, err = m.GrowVolume(ctx, "a", 101)
	wantStatus(t, "a grow over the quota", err, 422, "volumeMiB")
	if _, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "b", Pool: "p", SizeMiB: 40}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.super.GetQuota(ctx, "pa")
	if err != nil || rep.Usage.VolumeMiB != 100 {
		t.Fatalf("quota report %+v, %v; want 100 MiB of volumes in use", rep, err)
	}
}

// TestDeletePoolWhileHostsReport: a pool whose hosts keep reporting its
// capacity is still deleted.
func TestDeletePoolWhileHostsReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "p", Kind: api.PoolDir, Path: "/srv/p", Hosts: []string{"h1"}}); err != nil {
		t.Fatal(err)
	}
	hc := e.client(e.tokens["h1"], "")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = hc.PutPoolStatus(ctx, "h1", "p", api.PoolHostStatus{TotalMiB: 1000, FreeMiB: 1000 - i%100})
		}
	}()
	time.Sleep(200 * time.Millisecond)
	err := e.super.DeletePool(ctx, "p")
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("deleting a pool its host reports on: %v", err)
	}
}
