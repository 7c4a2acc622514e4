package server

import (
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// vmView is a VM as the caller of r may see it. Cloud-init user data often
// holds passwords: it is read back only by those who may write it (members
// and above, permission vm.userdata); others get it redacted. Hosts read
// VMs through their own routes, which give them all of it.
func (s *Server) vmView(r *http.Request, vm *api.VM) *api.VM {
	vm = s.withPortIPs(vm)
	ci := vm.Spec.CloudInit
	if ci == nil || ci.UserData == "" || s.can(r, vm.Project, auth.PermVMUserData) {
		return vm
	}
	out := *vm
	redacted := *ci
	redacted.UserData, redacted.UserDataRedacted = "", true
	out.Spec.CloudInit = &redacted
	return &out
}
