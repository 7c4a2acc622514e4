package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

const (
	secretUserData      = "#cloud-config\nchpasswd:\n  list: |\n    root:hunter2-user-data-secret\n"
	secretMetaData      = "local-hostname: ci\nsecret: hunter2-meta-data-secret\n"
	secretNetworkConfig = "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        password: hunter2-network-secret\n"
)

// fullCloudInit is cloud-init data with a secret in each part.
var fullCloudInit = api.CloudInit{UserData: secretUserData, MetaData: secretMetaData, NetworkConfig: secretNetworkConfig}

// TestUserDataIsForMembers: cloud-init's data (user data, meta data and
// network config, any of which can hold passwords) is read back only by
// those who may write it, members and above; viewers and operators see
// that there is some, not what it says, in the VM, its list and its
// events.
func TestUserDataIsForMembers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	// Viewers and operators watch the events of the create. Events
	// returns once the server has subscribed the stream.
	type watch struct {
		who    string
		events <-chan api.Event
		errs   <-chan error
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var watches []watch
	for _, who := range []string{api.RoleViewer, api.RoleOperator, api.RoleMember} {
		events, errs := e.as(who, "pa").Events(sctx, api.EventVM)
		watches = append(watches, watch{who, events, errs})
	}
	if _, err := member.CreateVM(ctx, api.VMCreate{Name: "ci", VCPUs: 1, MemoryMiB: 64, Host: "h1",
		Disks: []api.Disk{{Image: "img"}}, CloudInit: &fullCloudInit}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{api.RoleViewer, api.RoleOperator, "narrowed"} {
		c := e.as(who, "pa")
		if who == "narrowed" {
			tok, err := e.as(api.RoleAdmin, "").CreateToken(ctx, api.TokenCreate{Name: "ro", Project: "pa", Role: api.RoleOperator})
			if err != nil {
				t.Fatal(err)
			}
			c = e.client(tok.Secret, "pa")
		}
		vm, err := c.GetVM(ctx, "ci")
		if err != nil {
			t.Fatal(err)
		}
		if ci := vm.Spec.CloudInit; ci == nil || *ci != (api.CloudInit{UserDataRedacted: true, MetaDataRedacted: true, NetworkConfigRedacted: true}) {
			t.Errorf("%s reads the vm's cloud-init as %+v; want every part redacted", who, ci)
		}
		for _, all := range []bool{false, true} {
			vms, err := c.ListAllVMs(ctx, api.ListOptions{AllProjects: all})
			if err != nil {
				t.Fatal(err)
			}
			for _, vm := range vms {
				if ci := vm.Spec.CloudInit; ci != nil && (ci.UserData != "" || ci.MetaData != "" || ci.NetworkConfig != "") {
					t.Errorf("%s lists vm %s with its cloud-init data (all projects: %v)", who, vm.Name, all)
				}
			}
		}
		status, body, _ := e.do("GET", "/v1/vms/ci?project=pa", e.tokens[who], nil)
		if who != "narrowed" && (status != http.StatusOK || strings.Contains(string(body), "hunter2")) {
			t.Errorf("%s: GET vm answers %d with the secret in it", who, status)
		}
	}
	for _, who := range []string{api.RoleMember, api.RoleAdmin, "superadmin"} {
		vm, err := e.as(who, "pa").GetVM(ctx, "ci")
		if err != nil {
			t.Fatal(err)
		}
		if ci := vm.Spec.CloudInit; ci == nil || *ci != fullCloudInit {
			t.Errorf("%s reads the vm's cloud-init as %+v; want all of it", who, ci)
		}
	}
	// Events carry the same view.
	for _, w := range watches {
		seen := false
		for ev := range w.events {
			if ev.VM == nil || ev.VM.Name != "ci" {
				continue
			}
			seen = true
			ci := ev.VM.Spec.CloudInit
			redacted := ci != nil && *ci == api.CloudInit{UserDataRedacted: true, MetaDataRedacted: true, NetworkConfigRedacted: true}
			if w.who == api.RoleMember && (ci == nil || *ci != fullCloudInit) {
				t.Errorf("member's event of the vm: cloud-init %+v; want all of it", ci)
			}
			if w.who != api.RoleMember && !redacted {
				t.Errorf("%s's event of the vm: cloud-init %+v; want every part redacted", w.who, ci)
			}
			break
		}
		if !seen {
			t.Errorf("%s's event stream ended without the vm's create: %v", w.who, <-w.errs)
		}
	}
	// The store keeps all of it, for the host to write the seed.
	if vm, _ := e.s.vms.Get("pa/ci"); vm == nil || *vm.Spec.CloudInit != fullCloudInit {
		t.Errorf("the stored vm lost its cloud-init data: %+v", vm)
	}
	// A create may not claim redaction.
	for field, ci := range map[string]api.CloudInit{
		"userDataRedacted": {UserDataRedacted: true}, "metaDataRedacted": {MetaDataRedacted: true},
		"networkConfigRedacted": {NetworkConfigRedacted: true},
	} {
		_, err := member.CreateVM(ctx, api.VMCreate{Name: "ci2", VCPUs: 1, MemoryMiB: 64, Host: "h1",
			Disks: []api.Disk{{Image: "img"}}, CloudInit: &ci}, client.CreateOptions{})
		if statusOfErr(err) != http.StatusBadRequest || errField(err) != "cloudInit."+field {
			t.Errorf("create with %s: %v, want 400 naming cloudInit.%s", field, err, field)
		}
	}
}
