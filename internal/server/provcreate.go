package server

import (
	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
)

// validateProviderCreate checks a create in a connected estate: the VM is
// made from the provider's template, so it takes no images; it may name a
// cluster and a host of that provider, or leave the choice to the
// scheduler among the provider's hosts.
func (s *Server) validateProviderCreate(project string, req *api.VMCreate) (*api.ProviderRef, placement.Filter, error) {
	if req.Provider == "" {
		return nil, nil, api.Invalid("provider", "is required with template, cluster or datastore")
	}
	p, ok := s.providers.Get(req.Provider)
	if !ok || providerBinding(p) != project {
		// A provider bound to another project does not exist for this one.
		return nil, nil, api.Invalid("provider", "provider %q not found", req.Provider)
	}
	if !p.Status.Capabilities.Create {
		return nil, nil, api.Unprocessable("provider %q lacks the capability \"create\"", p.Name)
	}
	if req.Template == "" {
		return nil, nil, api.Invalid("template", "is required to create a vm in provider %q", p.Name)
	}
	if len(req.Disks) > 0 || req.Boot != (api.Boot{}) || req.CloudInit != nil {
		return nil, nil, api.Invalid("disks", "a vm in provider %q is made from its template: give no disks, boot or cloudInit", p.Name)
	}
	if err := validateName("name", req.Name); err != nil {
		return nil, nil, err
	}
	filter := placement.ProviderHosts(p.Name, req.Cluster)
	if req.Cluster != "" {
		found := false
		if inv, ok := s.ctl.Estate.Inventory(p.Name); ok {
			for _, c := range inv.Clusters {
				if c.ID == req.Cluster || c.Name == req.Cluster {
					found = true
					filter = placement.ProviderHosts(p.Name, c.ID)
				}
			}
		}
		if !found {
			return nil, nil, api.Invalid("cluster", "provider %q has no cluster %q", p.Name, req.Cluster)
		}
	}
	limits := s.limits(filter)
	switch {
	case req.VCPUs < 1:
		return nil, nil, api.Invalid("vcpus", "must be at least 1, not %d", req.VCPUs)
	case limits.maxVCPUs > 0 && req.VCPUs > limits.maxVCPUs:
		return nil, nil, api.Invalid("vcpus", "%d vcpus is more than any host of provider %q has (%d)", req.VCPUs, p.Name, limits.maxVCPUs)
	case req.MemoryMiB < minMemoryMiB:
		return nil, nil, api.Invalid("memoryMiB", "must be at least %d MiB, not %d", minMemoryMiB, req.MemoryMiB)
	case limits.maxMemoryMiB > 0 && req.MemoryMiB > limits.maxMemoryMiB:
		return nil, nil, api.Invalid("memoryMiB", "%d MiB is more memory than any host of provider %q has", req.MemoryMiB, p.Name)
	}
	if req.Host != "" && !limits.hostExists(req.Host) {
		return nil, nil, api.Invalid("host", "provider %q has no host %q", p.Name, req.Host)
	}
	switch req.PowerState {
	case "":
		req.PowerState = api.PowerRunning
	case api.PowerRunning, api.PowerStopped:
	default:
		return nil, nil, api.Invalid("powerState", "must be running or stopped, not %q", req.PowerState)
	}
	if req.StopTimeoutSeconds == 0 {
		req.StopTimeoutSeconds = defaultStopTimeout
	}
	if req.OnCrash != "" {
		return nil, nil, api.Invalid("onCrash", "applies to vms on Polyvisor's own hosts; provider %q restarts its vms by its own policy", p.Name)
	}
	if err := s.validateProviderNICs(p, req.NICs); err != nil {
		return nil, nil, err
	}
	ref := &api.ProviderRef{Name: p.Name, Type: p.Spec.Type, Template: req.Template, Cluster: req.Cluster, Datastore: req.Datastore}
	return ref, filter, nil
}
