package network

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// TestVMPorts: a VM's NICs on networks get ports made with the VM, named
// back from its NICs; an existing port can be attached; the VM's removal
// deletes the ports it made and releases the others.
func TestVMPorts(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.host("h1", "192.0.2.1")
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	e.mustNetwork("pa", "db", "10.1.0.0/24")
	if _, err := e.m.CreateSecurityGroup(ctx, "pa", api.SecurityGroupCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	own, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "keep", PortSpec: api.PortSpec{Network: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := e.vm("pa", "v1", "h1",
		api.NIC{Network: api.NetworkUser, MAC: "52:54:00:aa:bb:cc"},
		api.NIC{Network: "web", IP: "10.0.0.5", SecurityGroups: []string{"web", "default"}},
		api.NIC{Port: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	nics := vm.Spec.NICs
	if !reflect.DeepEqual(nics[0], api.NIC{Network: api.NetworkUser, MAC: "52:54:00:aa:bb:cc"}) {
		t.Errorf("the user-mode NIC changed: %+v", nics[0])
	}
	if nics[1].Port != "v1-nic1" || nics[1].IP != "10.0.0.5" || nics[1].Network != "web" || strings.Join(nics[1].SecurityGroups, ",") != "web,default" {
		t.Errorf("NIC 1: %+v", nics[1])
	}
	if nics[2].Port != "keep" || nics[2].Network != "db" || nics[2].MAC != own.Spec.MAC || nics[2].IP != own.Spec.FixedIPs[0].IP {
		t.Errorf("NIC 2 on an existing port: %+v (port %+v)", nics[2], own.Spec)
	}
	made := mustGet(t, e.ports, "pa/v1-nic1")
	if made.Spec.VM != "pa/v1" || made.Spec.NIC != 1 || !made.Spec.DeleteWithVM || made.Spec.MAC != nics[1].MAC {
		t.Errorf("the VM's port: %+v", made.Spec)
	}
	if kept := mustGet(t, e.ports, "pa/keep"); kept.Spec.VM != "pa/v1" || kept.Spec.NIC != 2 || kept.Spec.DeleteWithVM {
		t.Errorf("the attached port: %+v", kept.Spec)
	}
	if ips := e.m.IPsOf(mustGet(t, e.vms, "pa/v1")); strings.Join(ips, ",") != "10.0.0.5,"+own.Spec.FixedIPs[0].IP {
		t.Errorf("the VM's IPs: %v", ips)
	}
	if p := e.m.PortView(made); p.Status.Host != "h1" {
		t.Errorf("the port's host: %q", p.Status.Host)
	}
	// A port in use is not deleted, nor attached again.
	if err := e.m.DeletePort(ctx, "pa", "keep"); err == nil || apiErr(t, err).Code != api.CodeConflict {
		t.Errorf("deleting a port in use: %v", err)
	}
	_, err = e.vm("pa", "v2", "h1", api.NIC{Port: "keep"})
	wantErr(t, "a port another VM uses", err, api.CodeConflict, "nics[0].port")

	// Bad NICs are refused naming the NIC's field; nothing is made.
	before := len(e.m.claimed(""))
	for _, tc := range []struct {
		what        string
		nic         api.NIC
		code, field string
	}{
		{"an address taken", api.NIC{Network: "web", IP: "10.0.0.5"}, api.CodeConflict, "nics[0].ip"},
		{"an address outside", api.NIC{Network: "web", IP: "10.9.0.5"}, api.CodeInvalid, "nics[0].ip"},
		{"a network of another project", api.NIC{Network: "ghost"}, api.CodeInvalid, "nics[0].network"},
		{"a group of another project", api.NIC{Network: "web", SecurityGroups: []string{"pb/default"}}, api.CodeInvalid, "nics[0].securityGroups[0]"},
		{"a missing port", api.NIC{Port: "ghost"}, api.CodeInvalid, "nics[0].port"},
	} {
		_, err := e.vm("pa", "v3", "h1", tc.nic)
		wantErr(t, tc.what, err, tc.code, tc.field)
	}
	if _, ok := e.vms.Get("pa/v3"); ok {
		t.Fatal("a refused VM was made")
	}
	if got := len(e.m.claimed("")); got != before {
		t.Fatalf("refused VMs left %d claims", got-before)
	}

	// The VM's removal: its own port and address gone, the other released.
	e.removeVM("pa", "v1")
	if _, ok := e.ports.Get("pa/v1-nic1"); ok {
		t.Error("the VM's port outlived it")
	}
	if kept := mustGet(t, e.ports, "pa/keep"); kept.Spec.VM != "" {
		t.Errorf("the attached port still names the VM: %+v", kept.Spec)
	}
	if _, err := e.vm("pa", "v4", "h1", api.NIC{Network: "web", IP: "10.0.0.5"}); err != nil {
		t.Errorf("the freed address: %v", err)
	}
}

// TestNICRemove: removing a NIC frees its port and renumbers the ports
// after it.
func TestNICRemove(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.host("h1", "192.0.2.1")
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	vm, err := e.vm("pa", "v1", "h1", api.NIC{Network: "web"}, api.NIC{Network: "web"}, api.NIC{Network: "web"})
	if err != nil {
		t.Fatal(err)
	}
	nv := store.Clone(vm)
	nv.Spec.NICs = append(nv.Spec.NICs[:1], nv.Spec.NICs[2:]...)
	if _, err := e.st.Txn(ctx, append([]store.Op{e.vms.OpUpdate(vm.Key(), nv, vm.Version)}, e.m.RemoveNICOps(mustGet(t, e.vms, vm.Key()), 1)...)...); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.ports.Get("pa/v1-nic1"); ok {
		t.Error("the removed NIC's port is left")
	}
	if p := mustGet(t, e.ports, "pa/v1-nic2"); p.Spec.NIC != 1 {
		t.Errorf("the last port is NIC %d, want 1", p.Spec.NIC)
	}
	if p := mustGet(t, e.ports, "pa/v1-nic2"); e.m.hostOf(p) != "h1" {
		t.Error("the renumbered port lost its VM")
	}
}

// TestPortQuota: a project's port quota counts the ports of VMs too.
func TestPortQuota(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	p := mustGet(t, e.projects, "pa")
	q := store.Clone(p)
	two := int64(2)
	q.Spec.Quota.Ports = &two
	if _, err := e.projects.Update(ctx, "pa", q, p.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "p1", PortSpec: api.PortSpec{Network: "web"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.vm("pa", "v1", "", api.NIC{Network: "web"}, api.NIC{Network: "web"})
	if err == nil || apiErr(t, err).Code != api.CodeUnprocessable || apiErr(t, err).Details["quota"] != "ports" {
		t.Fatalf("two ports over a quota of two with one used: %v", err)
	}
	if _, err := e.vm("pa", "v1", "", api.NIC{Network: "web"}); err != nil {
		t.Fatalf("one port within the quota: %v", err)
	}
}

// TestFloatingIPs: one floating IP per port, moved between ports, freed
// from a port deleted; floating IPs come from external networks only.
func TestFloatingIPs(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := e.m.CreateNetwork(ctx, "default", api.NetworkCreate{Name: "ext", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext", External: true}}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSubnet(ctx, "default", api.SubnetCreate{Name: "ext-v4", SubnetSpec: api.SubnetSpec{Network: "ext", CIDR: "203.0.113.0/29"}}); err != nil {
		t.Fatal(err)
	}
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	for _, n := range []string{"p1", "p2"} {
		if _, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: n, PortSpec: api.PortSpec{Network: "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f0", FloatingIPSpec: api.FloatingIPSpec{Network: "web"}})
	wantErr(t, "a floating IP of a project network", err, api.CodeInvalid, "network")
	_, err = e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f0", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Address: "198.51.100.1"}})
	wantErr(t, "an address outside the external network", err, api.CodeInvalid, "address")
	f1, err := e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Port: "p1"}})
	if err != nil {
		t.Fatal(err)
	}
	if f1.Spec.Network != "default/ext" || !strings.HasPrefix(f1.Spec.Address, "203.0.113.") {
		t.Errorf("f1: %+v", f1.Spec)
	}
	_, err = e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f2", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Port: "p1"}})
	wantErr(t, "a second floating IP on one port", err, api.CodeConflict, "port")
	if _, ok := e.fips.Get("pa/f2"); ok {
		t.Fatal("the refused floating IP was made")
	}
	// Another project uses the shared external network too.
	if _, err := e.m.CreateFloatingIP(ctx, "pb", api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "ext"}}); err != nil {
		t.Fatalf("a floating IP of another project on the shared network: %v", err)
	}
	// Moved to p2, then p1 takes another.
	if _, err := e.m.AssociateFloatingIP(ctx, "pa", "f1", "p2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f2", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Port: "p1"}}); err != nil {
		t.Fatalf("p1 after its floating IP moved: %v", err)
	}
	if v := e.m.FloatingIPView(mustGet(t, e.fips, "pa/f1")); v.Status.FixedIP != mustGet(t, e.ports, "pa/p2").Spec.FixedIPs[0].IP {
		t.Errorf("f1 maps to %q", v.Status.FixedIP)
	}
	// p2 deleted: f1 is unmapped with it.
	if err := e.m.DeletePort(ctx, "pa", "p2"); err != nil {
		t.Fatal(err)
	}
	if f := mustGet(t, e.fips, "pa/f1"); f.Spec.Port != "" {
		t.Errorf("f1 still maps to %q", f.Spec.Port)
	}
	// The external network is in use while its addresses are held.
	if err := e.m.DeleteNetwork(ctx, "default", "ext"); err == nil {
		t.Error("an external network with floating IPs was deleted")
	}
	for _, f := range []struct{ project, name string }{{"pa", "f1"}, {"pa", "f2"}, {"pb", "f1"}} {
		if err := e.m.DeleteFloatingIP(ctx, f.project, f.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.DeleteNetwork(ctx, "default", "ext"); err != nil {
		t.Errorf("deleting the emptied external network: %v", err)
	}
}

// TestNetworkConfig: the cloud-init network-config of a VM's NICs.
func TestNetworkConfig(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.mustNetwork("pa", "web", "")
	if _, err := e.m.CreateSubnet(ctx, "pa", api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/24",
		DNSServers: []string{"10.0.0.2"}, Routes: []api.Route{{Destination: "192.168.0.0/16", NextHop: "10.0.0.254"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSubnet(ctx, "pa", api.SubnetCreate{Name: "web-v6", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "fd00::/64"}}); err != nil {
		t.Fatal(err)
	}
	plan, err := e.m.PlanVM("pa", "pa/v1", []api.NIC{{Network: "web", MAC: "52:54:00:00:00:01", IP: "10.0.0.5"}, {Network: api.NetworkUser, MAC: "52:54:00:00:00:02"}}, 0, nicField, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Done()
	want := `version: 2
ethernets:
  nic0:
    match:
      macaddress: "52:54:00:00:00:01"
    dhcp4: false
    dhcp6: false
    mtu: 1450
    addresses:
      - 10.0.0.5/24
    gateway4: 10.0.0.1
    routes:
      - to: 192.168.0.0/16
        via: 10.0.0.254
    nameservers:
      addresses:
        - 10.0.0.2
  nic1:
    match:
      macaddress: "52:54:00:00:00:02"
    dhcp4: true
    dhcp4-overrides:
      use-routes: false
`
	if got := e.m.NetworkConfig("pa", plan.NICs, plan.Ports); got != want {
		t.Errorf("network-config:\n%s\nwant\n%s", got, want)
	}
}

// TestJanitorFreesLeftPorts: a VM removed without its ports (by a path that
// did not free them) leaves them to the janitor, which the leader runs
// through its fenced writer: the port made for the VM is deleted with its
// address, the port it attached is released, and a floating IP mapped to
// the deleted port is unmapped.
func TestJanitorFreesLeftPorts(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := e.m.CreateNetwork(ctx, "default", api.NetworkCreate{Name: "ext", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext", External: true}}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSubnet(ctx, "default", api.SubnetCreate{Name: "ext-v4", SubnetSpec: api.SubnetSpec{Network: "ext", CIDR: "203.0.113.0/29"}}); err != nil {
		t.Fatal(err)
	}
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	if _, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "keep", PortSpec: api.PortSpec{Network: "web"}}); err != nil {
		t.Fatal(err)
	}
	vm, err := e.vm("pa", "v1", "", api.NIC{Network: "web", IP: "10.0.0.9"}, api.NIC{Port: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "default/ext", Port: vm.Spec.NICs[0].Port}}); err != nil {
		t.Fatal(err)
	}
	if err := e.vms.Delete(ctx, vm.Key(), 0); err != nil {
		t.Fatal(err)
	}
	// Within the grace nothing is touched: the VM's own write may be on
	// its way.
	made := mustGet(t, e.ports, "pa/"+vm.Spec.NICs[0].Port)
	cutoff := made.UpdatedAt
	if kept := mustGet(t, e.ports, "pa/keep"); kept.UpdatedAt.Before(cutoff) {
		t.Fatalf("attaching port keep to the VM did not restart its grace: updated %v, before the VM's own port %v", kept.UpdatedAt, cutoff)
	}
	e.m.sweep(ctx, e.st, cutoff)
	if p := mustGet(t, e.ports, "pa/keep"); p.Spec.VM == "" {
		t.Fatal("the janitor released a port within the grace")
	}
	mustGet(t, e.ports, made.Key())
	e.m.sweep(ctx, e.st, time.Now().Add(time.Hour))
	if _, ok := e.ports.Get("pa/" + vm.Spec.NICs[0].Port); ok {
		t.Error("the port made for the removed VM is still there")
	}
	if p := mustGet(t, e.ports, "pa/keep"); p.Spec.VM != "" {
		t.Errorf("the attached port still names the removed VM: %+v", p.Spec)
	}
	if got := e.m.claimed(ipPrefix(mustGet(t, e.networks, "pa/web").UID)); len(got) != 1 {
		t.Errorf("%d address claims on web, want only the kept port's", len(got))
	}
	// The floating IP's port is gone now: the next sweep unmaps it.
	e.m.sweep(ctx, e.st, time.Now().Add(time.Hour))
	if f := mustGet(t, e.fips, "pa/f1"); f.Spec.Port != "" {
		t.Errorf("the floating IP still maps to the deleted port %q", f.Spec.Port)
	}
	if got := e.m.claimed("fip/"); len(got) != 0 {
		t.Errorf("floating IP claims left: %d", len(got))
	}
}
