package server

import (
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// vmView is a VM as the caller of r may see it. Cloud-init's data often
// holds secrets: passwords and keys in user data, but tenants put them in
// meta data too, and a network config can carry Wi-Fi passwords. All of it
// is read back only by those who may write it (members and above,
// permission vm.userdata); others get each part that is set redacted, and
// told so. Hosts read VMs through their own routes, which give them all of
// it.
func (s *Server) vmView(r *http.Request, vm *api.VM) *api.VM {
	vm = s.withPortIPs(vm)
	ci := vm.Spec.CloudInit
	if ci == nil || *ci == (api.CloudInit{}) || s.can(r, vm.Project, auth.PermVMUserData) {
		return vm
	}
	out := *vm
	out.Spec.CloudInit = redactCloudInit(ci)
	return &out
}

// redactCloudInit is ci with each part that is set replaced by its
// redaction flag.
func redactCloudInit(ci *api.CloudInit) *api.CloudInit {
	return &api.CloudInit{
		UserDataRedacted:      ci.UserData != "" || ci.UserDataRedacted,
		MetaDataRedacted:      ci.MetaData != "" || ci.MetaDataRedacted,
		NetworkConfigRedacted: ci.NetworkConfig != "" || ci.NetworkConfigRedacted,
	}
}
