package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// netField is the field an API error names, and its status.
func netField(err error) (int, string) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return statusOfErr(err), ""
	}
	return statusOfErr(err), ae.Field
}

// wantRefused checks err is a refusal of status naming field.
func wantRefused(t *testing.T, what string, err error, status int, field string) {
	t.Helper()
	got, f := netField(err)
	if got != status || f != field {
		t.Errorf("%s: %d naming %q (%v), want %d naming %q", what, got, f, err, status, field)
	}
}

// netAudited returns the successful audit records of action, by resource
// name.
func (e *env) netAudited(t *testing.T, action string) map[string]api.AuditRecord {
	t.Helper()
	out := map[string]api.AuditRecord{}
	if err := e.s.audit.Query(context.Background(), api.AuditQuery{Action: action}, func(r *api.AuditRecord) bool {
		if r.Outcome == api.AuditSuccess {
			out[r.Resource.Name] = *r
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNetworkObjectsAPI: the objects through the API as a project's
// members use them: made and read by roles, refused with the field named
// and nothing half made, audited, shown to other projects only when
// external.
func TestNetworkObjectsAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	member, viewer := e.as(api.RoleMember, "pa"), e.as(api.RoleViewer, "pa")

	if _, err := viewer.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); statusOfErr(err) != 403 {
		t.Errorf("a viewer creating a network: %v, want 403", err)
	}
	n, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.Type != api.NetworkOverlay || n.Status.VNI == 0 || n.Spec.MTU != 1450 {
		t.Errorf("network web: %+v", n)
	}
	_, err = member.CreateNetwork(ctx, api.NetworkCreate{Name: "lan", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br0"}})
	wantRefused(t, "a member making a bridged network", err, 403, "")
	if _, err := member.CreateSubnet(ctx, api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	_, err = member.CreateSubnet(ctx, api.SubnetCreate{Name: "s2", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/16"}})
	wantRefused(t, "an overlapping subnet", err, 400, "cidr")
	_, err = member.CreateSubnet(ctx, api.SubnetCreate{Name: "s2", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Gateway: "10.2.0.1"}})
	wantRefused(t, "a gateway outside its CIDR", err, 400, "gateway")
	if _, err := member.CreatePort(ctx, api.PortCreate{Name: "p1", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.5"}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = member.CreatePort(ctx, api.PortCreate{Name: "p2", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.5"}}}})
	wantRefused(t, "an IP taken", err, 409, "fixedIPs[0].ip")
	_, err = member.CreatePort(ctx, api.PortCreate{Name: "p2", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.3.0.5"}}}})
	wantRefused(t, "an IP outside the subnet", err, 400, "fixedIPs[0].ip")
	if _, err := e.as("bob", "pb").CreateSecurityGroup(ctx, api.SecurityGroupCreate{Name: "theirs"}); err != nil {
		t.Fatal(err)
	}
	_, err = member.CreatePort(ctx, api.PortCreate{Name: "p2", PortSpec: api.PortSpec{Network: "web", SecurityGroups: []string{"theirs"}}})
	wantRefused(t, "a security group of another project", err, 400, "securityGroups[0]")
	many := make([]api.SecurityGroupRule, 5000)
	for i := range many {
		many[i] = api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 1 + i%65000}
	}
	_, err = member.CreateSecurityGroup(ctx, api.SecurityGroupCreate{Name: "big", SecurityGroupSpec: api.SecurityGroupSpec{Rules: many}})
	wantRefused(t, "5000 rules in one request", err, 400, "rules")
	_, err = member.AddSecurityGroupRules(ctx, "default", many)
	wantRefused(t, "5000 rules added at once", err, 400, "rules")
	for _, k := range []string{"pa/p2", "pa/s2", "pa/big"} {
		if _, ok := e.s.net.ports.Get(k); ok {
			t.Errorf("%s was made by a refused request", k)
		}
		if _, ok := e.s.net.subnets.Get(k); ok {
			t.Errorf("%s was made by a refused request", k)
		}
		if _, ok := e.s.net.groups.Get(k); ok {
			t.Errorf("%s was made by a refused request", k)
		}
	}
	if g, _ := member.GetSecurityGroup(ctx, "default"); g == nil || len(g.Spec.Rules) != 4 {
		t.Errorf("the default group after a refused addition: %+v", g)
	}

	// Readers: the viewer sees, another project does not.
	ports, err := viewer.ListPorts(ctx, client.NetworkListOptions{})
	if err != nil || len(ports) != 1 || ports[0].Spec.FixedIPs[0].IP != "10.0.0.5" {
		t.Errorf("a viewer's ports: %+v %v", ports, err)
	}
	if nets, err := e.as("bob", "pb").ListNetworks(ctx, api.ListOptions{}); err != nil || len(nets) != 0 {
		t.Errorf("project pb sees networks %+v (%v)", nets, err)
	}
	if _, err := e.as("bob", "pa").GetNetwork(ctx, "web", ""); statusOfErr(err) != 404 {
		t.Errorf("a foreign user reading pa's network: %v, want 404", err)
	}

	// An external network is the superadmin's, and every project's.
	super := e.super.WithProject(api.DefaultProject)
	if _, err := super.CreateNetwork(ctx, api.NetworkCreate{Name: "ext", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext", External: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := super.CreateSubnet(ctx, api.SubnetCreate{Name: "ext-v4", SubnetSpec: api.SubnetSpec{Network: "ext", CIDR: "203.0.113.0/24"}}); err != nil {
		t.Fatal(err)
	}
	nets, err := e.as("bob", "pb").ListNetworks(ctx, api.ListOptions{})
	if err != nil || len(nets) != 1 || nets[0].Key() != "default/ext" {
		t.Errorf("pb's networks: %+v (%v), want the external one", nets, err)
	}
	f, err := e.as("bob", "pb").CreateFloatingIP(ctx, api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "ext"}})
	if err != nil || !strings.HasPrefix(f.Spec.Address, "203.0.113.") {
		t.Fatalf("a floating IP of pb: %+v %v", f, err)
	}
	if err := member.DeleteNetwork(ctx, "ext"); statusOfErr(err) != 404 {
		t.Errorf("a member of pa deleting the external network: %v, want 404 (it is not pa's)", err)
	}
	if _, err := member.CreateFloatingIP(ctx, api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Port: "p1"}}); err != nil {
		t.Fatalf("a floating IP of pa on its port: %v", err)
	}
	if fs, err := member.ListFloatingIPs(ctx, api.ListOptions{}); err != nil || len(fs) != 1 || fs[0].Spec.Port != "p1" || fs[0].Status.FixedIP != "10.0.0.5" {
		t.Errorf("pa's floating IPs: %+v %v", fs, err)
	}

	// Every change is in the audit log, with its object.
	if got := e.netAudited(t, "network.create"); got["web"].Resource.Project != "pa" || got["web"].Resource.UID != n.UID || got["ext"].Resource.Kind != "network" {
		t.Errorf("network.create records: %+v", got)
	}
	for _, a := range []struct{ action, name string }{{"subnet.create", "web-v4"}, {"port.create", "p1"}, {"floating-ip.create", "f1"}, {"security-group.create", "theirs"}} {
		if _, ok := e.netAudited(t, a.action)[a.name]; !ok {
			t.Errorf("no audit record of %s %s", a.action, a.name)
		}
	}
	if err := member.DeletePort(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.netAudited(t, "port.delete")["p1"]; !ok {
		t.Error("no audit record of the port's delete")
	}

	// A bridged network of pa, made by a superadmin: its members put ports
	// on it, but only with port security, and cannot delete it.
	if _, err := e.super.WithProject("pa").CreateNetwork(ctx, api.NetworkCreate{Name: "lan", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br0"}}); err != nil {
		t.Fatal(err)
	}
	off := false
	_, err = member.CreatePort(ctx, api.PortCreate{Name: "raw", PortSpec: api.PortSpec{Network: "lan", PortSecurity: &off}})
	wantRefused(t, "a member's port without port security on a bridged network", err, 403, "")
	if _, err := member.CreatePort(ctx, api.PortCreate{Name: "raw", PortSpec: api.PortSpec{Network: "lan"}}); err != nil {
		t.Fatalf("a member's port on a bridged network: %v", err)
	}
	_, err = member.UpdatePort(ctx, "raw", api.PortUpdate{PortSecurity: &off})
	wantRefused(t, "a member turning port security off on a bridged network", err, 403, "")
	if err := member.DeleteNetwork(ctx, "lan"); statusOfErr(err) != 403 {
		t.Errorf("a member deleting a bridged network: %v, want 403", err)
	}
}

// TestProjectNetworkLife: a project is made with its default group; a
// project holding networks is not deleted; the quota counts networks,
// ports (a VM's and an added NIC's too) and floating IPs.
func TestProjectNetworkLife(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "pc"}); err != nil {
		t.Fatal(err)
	}
	pc := e.super.WithProject("pc")
	if g, err := pc.GetSecurityGroup(ctx, "default"); err != nil || len(g.Spec.Rules) != 4 {
		t.Fatalf("the new project's default group: %+v %v", g, err)
	}
	one := int64(1)
	if _, err := e.super.SetQuota(ctx, "pc", api.Quota{Networks: &one, Ports: &one}); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	_, err := pc.CreateNetwork(ctx, api.NetworkCreate{Name: "db"})
	if statusOfErr(err) != 422 || !strings.Contains(err.Error(), "networks") {
		t.Errorf("a second network over a quota of one: %v, want 422 naming networks", err)
	}
	if _, err := pc.CreateSubnet(ctx, api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	e.importImage(ctx, "pc", "img")
	if _, err := pc.CreateVM(ctx, api.VMCreate{Name: "v1", VCPUs: 1, MemoryMiB: 128, Host: "h1", Disks: []api.Disk{{Image: "img"}},
		NICs: []api.NIC{{Network: "web"}}}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = pc.CreateVM(ctx, api.VMCreate{Name: "v2", VCPUs: 1, MemoryMiB: 128, Host: "h1", Disks: []api.Disk{{Image: "img"}},
		NICs: []api.NIC{{Network: "web"}}}, client.CreateOptions{})
	if statusOfErr(err) != 422 || !strings.Contains(err.Error(), "ports") {
		t.Errorf("a VM's port over a quota of one port: %v, want 422 naming ports", err)
	}
	if _, err := pc.GetVM(ctx, "v2"); statusOfErr(err) != 404 {
		t.Errorf("the VM refused for its port was made: %v", err)
	}
	// A NIC added to a VM makes a port too: admitted by the same quota.
	e.ctlObserved(t, e.tokens["h1"], "pc/v1")
	_, err = pc.AddNIC(ctx, "v1", api.NIC{Network: "web"})
	if statusOfErr(err) != 422 || !strings.Contains(err.Error(), "ports") {
		t.Errorf("a NIC's port over a quota of one port: %v, want 422 naming ports", err)
	}
	if v1, err := pc.GetVM(ctx, "v1"); err != nil || len(v1.Spec.NICs) != 1 {
		t.Errorf("v1 after a NIC refused for the quota: %v %v", v1, err)
	}
	q, err := e.super.GetQuota(ctx, "pc")
	if err != nil || q.Usage.Networks != 1 || q.Usage.Ports != 1 || q.Usage.FloatingIPs != 0 {
		t.Errorf("pc's usage: %+v %v", q, err)
	}
	if err := e.super.DeleteProject(ctx, "pc"); statusOfErr(err) != 409 {
		t.Errorf("deleting a project with a network: %v, want 409", err)
	}
}

// watchNet follows a host's watch and returns its network states.
func watchNet(t *testing.T, e *env, host, token string) <-chan *api.HostNetworkState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	msgs, errs := e.client(token, "").WatchHost(ctx, host)
	out := make(chan *api.HostNetworkState, 64)
	synced := false
	go func() {
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return
				}
				switch m.Type {
				case api.AgentMsgSynced:
					synced = true
				case api.AgentMsgNetwork:
					if !synced {
						t.Errorf("a network state came before the VMs were synced")
					}
					out <- m.Network
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// nextState takes states until one satisfies ok.
func nextState(t *testing.T, ch <-chan *api.HostNetworkState, what string, ok func(*api.HostNetworkState) bool) *api.HostNetworkState {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case st := <-ch:
			if ok(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestVMNetworkState: VMs on a network on two hosts: their ports are made
// with them, their IPs shown, each host is sent its state once after its
// VMs and again as the other's VM comes and goes; a port reported made is
// active; a deleted VM's port and address are gone.
func TestVMNetworkState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	st := ctlHostStatus(8, 16<<10)
	st.Address = "192.0.2.1"
	n1 := e.ctlJoin(ctx, "n1", st, true)
	st.Address = "192.0.2.2"
	n2 := e.ctlJoin(ctx, "n2", st, true)
	member := e.as(api.RoleMember, "pa")
	if _, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateSubnet(ctx, api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/24", DNSServers: []string{"10.0.0.2"}}}); err != nil {
		t.Fatal(err)
	}
	w1 := watchNet(t, e, "n1", n1)
	first := nextState(t, w1, "n1's first state", func(*api.HostNetworkState) bool { return true })
	if len(first.Ports) != 0 || first.Underlay != "192.0.2.1" || first.Host != "n1" {
		t.Errorf("n1's first state: %+v", first)
	}
	create := func(name, host, ip string) {
		t.Helper()
		if _, err := member.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 128, Host: host, Disks: []api.Disk{{Image: "img"}},
			NICs: []api.NIC{{Network: "web", IP: ip}, {Network: api.NetworkUser}}}, client.CreateOptions{}); err != nil {
			t.Fatalf("creating vm %s: %v", name, err)
		}
	}
	create("a1", "n1", "10.0.0.11")
	vm, err := member.GetVM(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if nic := vm.Spec.NICs[0]; nic.Port != "a1-nic0" || nic.IP != "10.0.0.11" || !strings.HasPrefix(nic.MAC, "52:54:00:") {
		t.Errorf("a1's NIC: %+v", nic)
	}
	if len(vm.Status.IPs) != 1 || vm.Status.IPs[0] != "10.0.0.11" {
		t.Errorf("a1's IPs: %v", vm.Status.IPs)
	}
	if ci := vm.Spec.CloudInit; ci == nil || !strings.Contains(ci.NetworkConfig, "- 10.0.0.11/24") || !strings.Contains(ci.NetworkConfig, "gateway4: 10.0.0.1") {
		t.Errorf("a1's network-config: %+v", ci)
	}
	st1 := nextState(t, w1, "a1's port on n1", func(s *api.HostNetworkState) bool { return len(s.Ports) == 1 })
	if st1.Ports[0].Key != "pa/a1-nic0" || st1.Ports[0].VM != "pa/a1" || len(st1.Networks) != 1 || st1.Networks[0].VNI == 0 || len(st1.Remote) != 0 {
		t.Errorf("n1's state with a1: %+v", st1)
	}

	// A VM on the other host: n1 learns where its port is.
	w2 := watchNet(t, e, "n2", n2)
	create("a2", "n2", "")
	st1 = nextState(t, w1, "a2's port as remote on n1", func(s *api.HostNetworkState) bool { return len(s.Remote) == 1 })
	a2, _ := member.GetPort(ctx, "a2-nic0")
	if r := st1.Remote[0]; r.Underlay != "192.0.2.2" || r.MAC != a2.Spec.MAC || r.IPs[0] != a2.Spec.FixedIPs[0].IP || r.VM != "pa/a2" {
		t.Errorf("the remote port on n1: %+v (a2's port %+v)", r, a2.Spec)
	}
	if g := st1.SecurityGroups; len(g) != 1 || g[0].Key != "pa/default" || len(g[0].Members) != 2 {
		t.Errorf("n1's groups: %+v", g)
	}
	st2 := nextState(t, w2, "n2's state", func(s *api.HostNetworkState) bool { return len(s.Ports) == 1 && len(s.Remote) == 1 })
	if st2.Remote[0].Underlay != "192.0.2.1" {
		t.Errorf("n2's remote: %+v", st2.Remote)
	}

	// n2's agent reports a2's port made.
	if res, err := e.client(n2, "").ReportPorts(ctx, "n2", api.PortReport{Revision: st2.Revision, Active: []string{"pa/a2-nic0", "pa/a1-nic0"}}); err != nil || res.Changed != 1 {
		t.Errorf("n2's report: %+v %v, want one port changed (a1's is n1's)", res, err)
	}
	if p, _ := member.GetPort(ctx, "a2-nic0"); p.Status.State != api.PortActive || p.Status.Host != "n2" {
		t.Errorf("a2's port after the report: %+v", p.Status)
	}
	if p, _ := member.GetPort(ctx, "a1-nic0"); p.Status.State == api.PortActive {
		t.Error("n2 made a1's port active")
	}
	if _, err := e.client(n1, "").ReportPorts(ctx, "n2", api.PortReport{}); statusOfErr(err) != 403 {
		t.Errorf("n1 reporting for n2: %v, want 403", err)
	}

	// a2 deleted: n1 is told, a2's port and address are gone.
	e.ctlObserved(t, n2, "pa/a2")
	op, err := member.DeleteVM(ctx, "a2", false)
	if err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 10*time.Second, "a2 marked for deletion", func() error {
		if vm, _ := member.GetVM(ctx, "a2"); vm == nil || vm.Spec.Deletion == nil {
			return errors.New("not yet")
		}
		return nil
	})
	if err := e.client(n2, "").VMRemoved(ctx, "pa/a2"); err != nil {
		t.Fatal(err)
	}
	if op, err = member.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Errorf("deleting a2: %+v %v", op, err)
	}
	nextState(t, w1, "a2's port gone from n1", func(s *api.HostNetworkState) bool {
		return len(s.Remote) == 0 && len(s.SecurityGroups) == 1 && len(s.SecurityGroups[0].Members) == 1
	})
	nextState(t, w2, "n2 emptied", func(s *api.HostNetworkState) bool { return len(s.Ports) == 0 })
	if _, err := member.GetPort(ctx, "a2-nic0"); statusOfErr(err) != 404 {
		t.Errorf("a2's port after its removal: %v", err)
	}
	if _, err := member.CreatePort(ctx, api.PortCreate{Name: "again", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: a2.Spec.FixedIPs[0].IP}}}}); err != nil {
		t.Errorf("a2's freed address: %v", err)
	}
}

// TestNICAddRemove: NICs added and removed as operations that finish when
// the host carried them out; the added NIC's port is made with it, the
// removed one's freed.
func TestNICAddRemove(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	if _, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateSubnet(ctx, api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, e.tokens["h1"], "pa/vm1")
	before, _ := member.GetVM(ctx, "vm1")
	_, err := member.AddNIC(ctx, "vm1", api.NIC{Network: "web", IP: "10.9.9.9"})
	wantRefused(t, "a NIC with an address outside the network", err, 400, "ip")
	_, err = member.AddNIC(ctx, "vm1", api.NIC{Network: "web", Model: api.NICModelE1000})
	wantRefused(t, "an e1000 NIC added to a running VM", err, 400, "model")
	op, err := member.AddNIC(ctx, "vm1", api.NIC{Network: "web", IP: "10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	if op.Kind != api.OpVMNICAdd || op.Status != api.OpRunning {
		t.Errorf("the operation: %+v", op)
	}
	if _, err := member.AddNIC(ctx, "vm1", api.NIC{Network: "web"}); statusOfErr(err) != 409 {
		t.Errorf("a second NIC while the first is being added: %v, want 409", err)
	}
	vm, _ := member.GetVM(ctx, "vm1")
	last := vm.Spec.NICs[len(vm.Spec.NICs)-1]
	if last.Port == "" || last.IP != "10.0.0.9" {
		t.Fatalf("the new NIC: %+v", last)
	}
	e.ctlObserved(t, e.tokens["h1"], "pa/vm1")
	if op, err = member.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("the NIC add: %+v %v", op, err)
	}
	op, err = member.RemoveNIC(ctx, "vm1", len(vm.Spec.NICs)-1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.GetPort(ctx, last.Port); statusOfErr(err) != 404 {
		t.Errorf("the removed NIC's port: %v", err)
	}
	e.ctlObserved(t, e.tokens["h1"], "pa/vm1")
	if op, err = member.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Fatalf("the NIC removal: %+v %v", op, err)
	}
	if vm, _ := member.GetVM(ctx, "vm1"); len(vm.Spec.NICs) != len(before.Spec.NICs) {
		t.Errorf("vm1's NICs after the removal: %+v, were %+v", vm.Spec.NICs, before.Spec.NICs)
	}
	if _, err := e.as(api.RoleOperator, "pa").AddNIC(ctx, "vm1", api.NIC{Network: "web"}); statusOfErr(err) != 403 {
		t.Errorf("an operator adding a NIC: %v, want 403", err)
	}
}

// TestNetworkEvents: network objects' changes are on /v1/events, only to
// those who may read them.
func TestNetworkEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, _ := e.as(api.RoleViewer, "pa").Events(ctx, api.EventNetwork, api.EventPort)
	other, _ := e.as("bob", "pb").Events(ctx, api.EventNetwork)
	// Networks until each stream is live: a positive signal first.
	live := func(c *client.Client, project string, ch <-chan api.Event) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for i := 0; ; i++ {
			if _, err := c.CreateNetwork(ctx, api.NetworkCreate{Name: "live" + strconv.Itoa(i)}); err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-ch:
				if ev.Type == api.EventNetwork && ev.Network != nil && ev.Object.Project == project {
					return
				}
			case <-time.After(time.Second):
			case <-deadline:
				t.Fatalf("no network event for project %s", project)
			}
		}
	}
	member, bob := e.as(api.RoleMember, "pa"), e.as("bob", "pb")
	live(member, "pa", evs)
	live(bob, "pb", other)
	// Then one of pa, one of pb: pb's stream has pb's only.
	if _, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "ours"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.CreateNetwork(ctx, api.NetworkCreate{Name: "theirs"}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-other:
			if ev.Object.Project == "pa" {
				t.Fatalf("pb's stream carried pa's %+v", ev.Object)
			}
			if ev.Object.Name == "theirs" {
				return
			}
		case <-ctx.Done():
			t.Fatal("pb's stream did not carry its network")
		}
	}
}
