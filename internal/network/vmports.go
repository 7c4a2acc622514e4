package network

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// VMPlan is the network part of a VM's create or NIC add: the ports to
// make or attach for its NICs, as writes to add to the VM's own
// transaction, so that the VM and its ports are made together or not at
// all.
type VMPlan struct {
	// NICs are the VM's NICs as they are stored: each on a network names
	// its port, with the port's MAC and first address.
	NICs []api.NIC
	// Ops are the writes to add to the VM's transaction.
	Ops []store.Op
	// Ports are the ports of the NICs on networks, by NIC index.
	Ports map[int]*api.Port

	p *planner
}

// Done releases what the plan holds (addresses this process tries); call
// it once the transaction is done.
func (v *VMPlan) Done() {
	if v == nil {
		return
	}
	v.p.done()
}

// Failed sorts out why the transaction failed: retry says a fresh plan
// (PlanVM with this plan as prev) may succeed; err, when not nil, is the
// request's fault to answer with; neither means the failure is not the
// network's.
func (v *VMPlan) Failed(cause error) (retry bool, err error) {
	if v == nil || v.p == nil {
		return false, nil
	}
	return v.p.failed(cause)
}

// Networked tells whether any NIC is on a network (not user-mode).
func Networked(nics []api.NIC) bool {
	for _, n := range nics {
		if n.Port != "" || (n.Network != "" && n.Network != api.NetworkUser) {
			return true
		}
	}
	return false
}

// PortsMade counts the ports PlanVM makes for NICs from index first on:
// what a VM's create or NIC add asks of the project's port quota, in the
// admission its transaction carries.
func PortsMade(nics []api.NIC, first int) int64 {
	var n int64
	for i := max(first, 0); i < len(nics); i++ {
		if nics[i].Port == "" && nics[i].Network != "" && nics[i].Network != api.NetworkUser {
			n++
		}
	}
	return n
}

// PlanVM plans the ports of a VM's NICs from index first on (the NICs
// before are the VM's own, already made): a port made on the NIC's
// network, or the port the NIC names attached to the VM. field names NIC
// i in the request. prev, when not nil, is the plan of an earlier attempt
// whose transaction failed: addresses others took meanwhile are not
// picked again.
func (m *Manager) PlanVM(project, vmKey string, nics []api.NIC, first int, field func(i int) string, prev *VMPlan) (*VMPlan, error) {
	var lostAddrs map[string]map[netip.Addr]bool
	if prev != nil && prev.p != nil {
		lostAddrs = prev.p.lost
	}
	v := &VMPlan{NICs: append([]api.NIC(nil), nics...), Ports: map[int]*api.Port{}, p: m.newPlanner(project, lostAddrs)}
	_, vmName := api.SplitKey(vmKey)
	attached := map[string]bool{}
	for i := first; i < len(nics); i++ {
		nic := nics[i]
		f := field(i)
		if nic.Network == api.NetworkUser || (nic.Network == "" && nic.Port == "") {
			continue
		}
		var port *api.Port
		var err error
		if nic.Port != "" {
			if attached[nic.Port] {
				err = api.Invalid(f+"port", "port %q is named by two NICs", nic.Port)
			} else {
				port, err = v.attach(vmKey, i, nic, f)
			}
			attached[nic.Port] = true
		} else {
			req := portRequest{field: f, name: m.portName(vmName, i, v.p), autoName: true, spec: api.PortSpec{
				Network: nic.Network, MAC: nic.MAC, VM: vmKey, NIC: i, DeleteWithVM: true,
			}}
			if nic.IP != "" {
				req.spec.FixedIPs = []api.FixedIP{{IP: nic.IP}}
			}
			if len(nic.SecurityGroups) > 0 {
				req.spec.SecurityGroups = nic.SecurityGroups
			}
			port, err = v.p.plan(req)
			if err != nil {
				err = renameFields(err, f)
			}
		}
		if err != nil {
			v.Done()
			return nil, err
		}
		v.Ports[i] = port
		v.NICs[i] = nicOf(port)
	}
	v.Ops = v.p.ops
	return v, nil
}

// renameFields turns the field names of a port ("nics[0].fixedIPs[0].ip")
// into those of the NIC that asked for it ("nics[0].ip").
func renameFields(err error, f string) error {
	ae, ok := err.(*api.Error)
	if !ok || ae.Field == "" {
		return err
	}
	if strings.HasPrefix(ae.Field, f+"fixedIPs") {
		out := *ae
		out.Field = f + "ip"
		out.Message = strings.Replace(out.Message, ae.Field, out.Field, 1)
		return &out
	}
	return err
}

// nicOf is the NIC of a VM on a port.
func nicOf(p *api.Port) api.NIC {
	nic := api.NIC{Network: p.Spec.Network, MAC: p.Spec.MAC, SecurityGroups: p.Spec.SecurityGroups, Port: p.Name}
	if len(p.Spec.FixedIPs) > 0 {
		nic.IP = p.Spec.FixedIPs[0].IP
	}
	return nic
}

// portName is the name of the port made for a VM's NIC i: "<vm>-nic<i>",
// or with a random suffix when that is taken.
func (m *Manager) portName(vm string, i int, p *planner) string {
	suffix := fmt.Sprintf("-nic%d", i)
	base := vm
	if len(base)+len(suffix) > 63 {
		base = strings.TrimRight(base[:63-len(suffix)], "-")
	}
	name := base + suffix
	for {
		key := api.Key(p.project, name)
		if _, ok := m.cfg.Ports.Get(key); !ok && !p.auto[key] {
			return name
		}
		tail := fmt.Sprintf("%s-%04x", suffix, randN(1<<16))
		b := vm
		if len(b)+len(tail) > 63 {
			b = strings.TrimRight(b[:63-len(tail)], "-")
		}
		name = b + tail
	}
}

// attach plans the attachment of an existing port of the project to NIC i
// of a VM.
func (v *VMPlan) attach(vmKey string, i int, nic api.NIC, f string) (*api.Port, error) {
	m := v.p.m
	cur, ok := m.cfg.Ports.Get(api.Key(v.p.project, nic.Port))
	if !ok {
		return nil, api.Invalid(f+"port", "port %q not found", nic.Port)
	}
	if vm, ok := m.usedBy(cur); ok {
		return nil, taken(f+"port", "port %q is used by vm %q", cur.Name, vm.Name)
	}
	switch {
	case nic.Network != "" && nic.Network != cur.Spec.Network:
		return nil, api.Invalid(f+"network", "port %q is on network %q, not %q", cur.Name, cur.Spec.Network, nic.Network)
	case nic.MAC != "" && !strings.EqualFold(nic.MAC, cur.Spec.MAC):
		return nil, api.Invalid(f+"mac", "port %q has MAC %s; leave mac out", cur.Name, cur.Spec.MAC)
	case len(nic.SecurityGroups) > 0:
		return nil, api.Invalid(f+"securityGroups", "a NIC on port %q has the port's security groups: change them on the port", cur.Name)
	}
	if nic.IP != "" && !hasIP(cur, nic.IP) {
		return nil, api.Invalid(f+"ip", "port %q does not hold %s", cur.Name, nic.IP)
	}
	next := store.Clone(cur)
	next.Spec.VM, next.Spec.NIC = vmKey, i
	next.Status.State = api.PortDown
	next.Generation++
	next.UpdatedAt = time.Now().UTC() // the janitor's grace counts from here
	v.p.ops = append(v.p.ops, m.cfg.Ports.OpUpdate(cur.Key(), next, cur.Version))
	v.p.ports = append(v.p.ports, next)
	return next, nil
}

func hasIP(p *api.Port, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, f := range p.Spec.FixedIPs {
		if b, err := netip.ParseAddr(f.IP); err == nil && a == b {
			return true
		}
	}
	return false
}

// portsOfVM lists the ports a VM uses.
func (m *Manager) portsOfVM(vm *api.VM) []*api.Port {
	return listAll(m.cfg.Ports, func(p *api.Port) bool { return p.Project == vm.Project && p.Spec.VM == vm.Key() })
}

// releaseOps are the writes that take a port off its VM: a port made for
// the VM is deleted with its claims, another only released.
func (m *Manager) releaseOps(p *api.Port) []store.Op {
	if p.Spec.DeleteWithVM {
		return m.deletePortOps(p)
	}
	next := store.Clone(p)
	next.Spec.VM, next.Spec.NIC = "", 0
	next.Status.State, next.Status.Message = api.PortDown, ""
	next.Generation++
	return []store.Op{m.cfg.Ports.OpUpdate(p.Key(), next, p.Version)}
}

// ReleaseVMOps are the writes that free the ports of a VM being removed:
// to add to the transaction that deletes it.
func (m *Manager) ReleaseVMOps(vm *api.VM) []store.Op {
	var ops []store.Op
	for _, p := range m.portsOfVM(vm) {
		ops = append(ops, m.releaseOps(p)...)
	}
	return ops
}

// RemoveNICOps are the writes that take NIC i off a VM: its port released
// (or deleted, if made for it), the ports of the NICs after it renumbered.
// The caller removes the NIC from the VM's spec in the same transaction.
func (m *Manager) RemoveNICOps(vm *api.VM, i int) []store.Op {
	var ops []store.Op
	for _, p := range m.portsOfVM(vm) {
		switch {
		case p.Spec.NIC == i:
			ops = append(ops, m.releaseOps(p)...)
		case p.Spec.NIC > i:
			next := store.Clone(p)
			next.Spec.NIC--
			next.Generation++
			ops = append(ops, m.cfg.Ports.OpUpdate(p.Key(), next, p.Version))
		}
	}
	return ops
}

// IPsOf lists the addresses of a VM's ports, in the order of its NICs.
func (m *Manager) IPsOf(vm *api.VM) []string {
	if !Networked(vm.Spec.NICs) {
		return nil
	}
	var out []string
	for _, nic := range vm.Spec.NICs {
		if nic.Port == "" {
			continue
		}
		p, ok := m.cfg.Ports.Get(api.Key(vm.Project, nic.Port))
		if !ok {
			continue
		}
		for _, f := range p.Spec.FixedIPs {
			out = append(out, f.IP)
		}
	}
	return out
}
