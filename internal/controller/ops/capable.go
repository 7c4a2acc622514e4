package ops

import (
	"github.com/polyvisor/polyvisor/api"
)

// Capable refuses (422, naming the capability) an operation the VM's
// driver or provider cannot carry out.
func (c *Controller) Capable(vm *api.VM, kind string) error {
	need := ""
	switch kind {
	case api.OpVMPause, api.OpVMResume:
		need = "suspend"
	case api.OpVMSnapshotCreate, api.OpVMSnapshotRevert, api.OpVMSnapshotDelete:
		need = "snapshots"
	case api.OpVMReconfigure:
		need = "reconfigure"
	default:
		return nil
	}
	if vm.Spec.Provider == nil {
		// Polyvisor's own QEMU hosts: pause and reconfigure yes, snapshots
		// not yet.
		if need == "snapshots" {
			return api.Unprocessable("vm %q runs on Polyvisor's qemu driver, which lacks the capability %q", vm.Name, need)
		}
		return nil
	}
	caps, connected := c.estate.Capabilities(vm.Spec.Provider.Name)
	if !connected {
		return &api.Error{Code: api.CodeUnavailable, Message: "provider " + vm.Spec.Provider.Name + " is disconnected"}
	}
	ok := map[string]bool{"suspend": caps.Suspend, "snapshots": caps.Snapshots, "reconfigure": caps.Reconfigure}[need]
	if !ok {
		return api.Unprocessable("provider %q (%s) lacks the capability %q", vm.Spec.Provider.Name, vm.Spec.Provider.Type, need)
	}
	return nil
}
