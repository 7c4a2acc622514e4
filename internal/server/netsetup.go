package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/network"
	"github.com/polyvisor/polyvisor/internal/store"
)

// netState is the server's part of the networks: their collections, the
// manager that makes them and the hub that sends hosts their state.
type netState struct {
	networks *store.Collection[api.Network]
	subnets  *store.Collection[api.Subnet]
	ports    *store.Collection[api.Port]
	groups   *store.Collection[api.SecurityGroup]
	fips     *store.Collection[api.FloatingIP]
	claims   *store.Collection[network.Claim]
	m        *network.Manager
	hub      *network.Hub
}

// newNetState registers the network collections in st (before it starts)
// and makes the manager over them and the server's VMs, hosts and
// projects.
func (s *Server) newNetState(st *store.Store) *netState {
	n := &netState{
		networks: store.NewCollection(st, "networks", func(v *api.Network, rev int64) { v.Version = rev }),
		subnets:  store.NewCollection(st, "subnets", func(v *api.Subnet, rev int64) { v.Version = rev }),
		ports:    store.NewCollection(st, "ports", func(v *api.Port, rev int64) { v.Version = rev }),
		groups:   store.NewCollection(st, "securitygroups", func(v *api.SecurityGroup, rev int64) { v.Version = rev }),
		fips:     store.NewCollection(st, "floatingips", func(v *api.FloatingIP, rev int64) { v.Version = rev }),
		claims:   store.NewCollection(st, "netclaims", network.SetClaimVersion),
	}
	n.m = network.New(network.Config{
		Store: st, Networks: n.networks, Subnets: n.subnets, Ports: n.ports, SecurityGroups: n.groups,
		FloatingIPs: n.fips, Claims: n.claims, VMs: s.vms, Hosts: s.hosts, Projects: s.projects,
		Logger: s.log.With("component", "network"),
		// The quota gate is made after the manager (it counts the
		// manager's objects): read it when admitting.
		Admit: func(ctx context.Context, project string, delta api.Usage) ([]store.Op, error) {
			return s.ctl.Quota.Admit(ctx, project, delta)
		},
	})
	n.hub = n.m.NewHub()
	return n
}

// run makes the default groups projects made before networks lack, then
// follows the store: the hosts' states, and what removed VMs leave.
func (n *netState) run(ctx context.Context, s *Server) {
	if err := n.m.EnsureDefaultGroups(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("making the projects' default security groups", "err", err)
	}
	n.hub.Run(ctx)
}

// projectUsage is what a project uses, its network objects included
// (the quota gate counts them).
func (s *Server) projectUsage(project string) api.Usage {
	return s.ctl.Quota.UsageOf(project)
}

// createProjectWithGroup stores a new project with its default security
// group.
func (s *Server) createProjectWithGroup(ctx context.Context, p *api.Project) error {
	_, err := s.st.Txn(ctx, s.projects.OpCreate(p.Name, p), s.net.m.DefaultGroupOp(p.Name))
	var ke *store.KeyError
	if errors.As(err, &ke) && ke.Kind == s.net.groups.Kind() {
		// A group left by a project of that name: the new one keeps it.
		_, err = s.projects.Create(ctx, p.Name, p)
	}
	return err
}

// deleteProjectWithGroup deletes a project that holds nothing, with its
// default security group.
func (s *Server) deleteProjectWithGroup(ctx context.Context, p *api.Project, conds ...store.Op) error {
	_, err := s.st.Txn(ctx, append(append([]store.Op{s.projects.OpDelete(p.Name, p.Version)}, conds...), s.net.m.DeleteProjectOps(p.Name)...)...)
	return err
}

// withPortIPs is a VM as shown, with the addresses of its ports first in
// its status' IPs.
func (s *Server) withPortIPs(vm *api.VM) *api.VM {
	ips := s.net.m.IPsOf(vm)
	if len(ips) == 0 {
		return vm
	}
	out := *vm
	seen := map[string]bool{}
	out.Status.IPs = nil
	for _, ip := range append(ips, vm.Status.IPs...) {
		if !seen[ip] {
			seen[ip] = true
			out.Status.IPs = append(out.Status.IPs, ip)
		}
	}
	return &out
}

// nicField names NIC i of a VM create in errors.
func nicField(i int) string { return fmt.Sprintf("nics[%d].", i) }

// txnWithPorts commits a VM's write together with the ports of its NICs
// on networks from index first on (the NICs before are the VM's own, with
// their ports made). build makes the VM's writes, and the conditions of
// what admitted them, for the ports' plan (nil when no NIC from first on
// is on a network); it is called again for each attempt, as an attempt
// that lost a race (another admission, an address taken first) decides
// again from the newer state. An error of build ends the attempts with it.
func (s *Server) txnWithPorts(ctx context.Context, project, key string, nics []api.NIC, first int, field func(int) string, build func(*network.VMPlan) ([]store.Op, error)) error {
	networked := network.Networked(nics[min(first, len(nics)):])
	var plan *network.VMPlan
	for attempt := 1; ; attempt++ {
		if networked {
			var err error
			if plan, err = s.net.m.PlanVM(project, key, nics, first, field, plan); err != nil {
				return err
			}
		}
		txn, err := build(plan)
		if err != nil {
			plan.Done()
			return err
		}
		if plan != nil {
			txn = append(txn, plan.Ops...)
		}
		_, err = s.st.Txn(ctx, txn...)
		plan.Done()
		if err == nil {
			return nil
		}
		retry := admission.Retry(err)
		if plan != nil {
			again, aerr := plan.Failed(err)
			if aerr != nil {
				return aerr
			}
			retry = retry || again
		}
		if !retry || attempt >= admission.MaxAttempts {
			return err
		}
		if berr := admission.Backoff(ctx, attempt); berr != nil {
			return err
		}
	}
}

// withPorts sets a new VM's NICs from its ports' plan and, when it has
// NICs on networks and no network-config of its own, the cloud-init
// network-config of its ports.
func (s *Server) withPorts(vm *api.VM, plan *network.VMPlan) {
	if plan == nil {
		return
	}
	vm.Spec.NICs = plan.NICs
	if vm.Spec.CloudInit != nil && vm.Spec.CloudInit.NetworkConfig != "" {
		return
	}
	ci := api.CloudInit{}
	if vm.Spec.CloudInit != nil {
		ci = *vm.Spec.CloudInit
	}
	ci.NetworkConfig = s.net.m.NetworkConfig(vm.Project, plan.NICs, plan.Ports)
	vm.Spec.CloudInit = &ci
}

// removeVMWithPorts deletes a VM its host reported removed, with its
// ports (those made for it deleted, the others released) and its volumes
// released (releaseVolumeOps), in one transaction. Should that keep
// losing races, the VM goes with its volumes released but without its
// ports, which the janitor frees; the deleted root volumes are returned
// for the audit.
func (s *Server) removeVMWithPorts(ctx context.Context, key string) ([]string, error) {
	var err error
	for attempt := range 10 {
		vm, ok := s.vms.Get(key)
		if !ok {
			return nil, api.NotFound("vm", key)
		}
		txn := []store.Op{s.vms.OpDelete(key, vm.Version)}
		vols, deleted := s.releaseVolumeOps(vm)
		txn = append(txn, vols...)
		if attempt < 5 {
			txn = append(txn, s.net.m.ReleaseVMOps(vm)...)
		}
		_, err = s.st.Txn(ctx, txn...)
		var ke *store.KeyError
		if err == nil {
			return deleted, nil
		}
		if !errors.As(err, &ke) && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("removing vm %q: %w", key, err)
}
