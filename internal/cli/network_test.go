package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestParseNIC: the --nic forms.
func TestParseNIC(t *testing.T) {
	for in, want := range map[string]api.NIC{
		"web":  {Network: "web"},
		"user": {Network: api.NetworkUser},
		"network=web,ip=10.0.0.5,secgroup=web,secgroup=db": {Network: "web", IP: "10.0.0.5", SecurityGroups: []string{"web", "db"}},
		"port=db1":                       {Port: "db1"},
		"net=web, mac=52:54:00:00:00:01": {Network: "web", MAC: "52:54:00:00:00:01"},
	} {
		got, err := parseNIC("--nic", in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseNIC(%q) = %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, wantErr := range map[string]string{
		"ip=10.0.0.5":            "names neither a network nor a port",
		"network=web,colour=red": `unknown key "colour"`,
		"network=web,ip=":        "is not KEY=VALUE",
		"network=a,network=b":    "network is given twice",
		"":                       "empty network name",
	} {
		if _, err := parseNIC("--nic", in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseNIC(%q): %v, want %q", in, err, wantErr)
		}
	}
}

// TestNetworkCommands: the network verbs against a real server, and their
// refusals naming the flag the user typed.
func TestNetworkCommands(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, "", rs.asRoot(args...)...)
		if code != 0 {
			t.Fatalf("polyvisor %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		_, errOut, code := cli(t, "", rs.asRoot(args...)...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("polyvisor %s: exit %d\n%s\nwant %q", strings.Join(args, " "), code, errOut, want)
		}
	}
	run("network", "create", "web", "--cidr", "10.0.0.0/24")
	if out := run("network", "list"); !strings.Contains(out, "web") || !strings.Contains(out, "overlay") || !strings.Contains(out, "vni ") {
		t.Errorf("network list:\n%s", out)
	}
	fails("--cidr: 10.0.0.128/25 overlaps subnet", "subnet", "create", "s2", "--network", "web", "--cidr", "10.0.0.128/25")
	fails("--gateway: 10.2.0.1 is outside", "subnet", "create", "s2", "--network", "web", "--cidr", "10.1.0.0/24", "--gateway", "10.2.0.1")
	run("port", "create", "p1", "--network", "web", "--ip", "10.0.0.5")
	fails("--ip: 10.0.0.5 is held by port", "port", "create", "p2", "--network", "web", "--ip", "10.0.0.5")
	fails("--secgroup: security group \"nope\" not found", "port", "create", "p2", "--network", "web", "--secgroup", "nope")
	run("secgroup", "create", "db")
	out := run("-o", "json", "secgroup", "rule", "add", "db", "--protocol", "tcp", "--port", "5432", "--remote-group", "default")
	var g api.SecurityGroup
	if err := json.Unmarshal([]byte(out), &g); err != nil || len(g.Spec.Rules) != 1 || g.Spec.Rules[0].PortMax != 5432 {
		t.Fatalf("rule add: %s (%v)", out, err)
	}
	fails("--port: ports apply to tcp and udp", "secgroup", "rule", "add", "db", "--protocol", "icmp", "--port", "1")
	run("secgroup", "rule", "remove", "db", g.Spec.Rules[0].ID)
	if out := run("secgroup", "show", "db"); !strings.Contains(out, "No rules") {
		t.Errorf("secgroup show after the rule's removal:\n%s", out)
	}
	run("port", "update", "p1", "--secgroup", "db")
	if out := run("port", "show", "p1"); !strings.Contains(out, "10.0.0.5") || !strings.Contains(out, "Security groups:  db") {
		t.Errorf("port show:\n%s", out)
	}
	run("network", "create", "ext", "--type", "bridged", "--bridge", "br-ext", "--external", "--cidr", "203.0.113.0/24")
	run("floating-ip", "create", "f1", "--network", "ext", "--port", "p1")
	if out := run("floating-ip", "list"); !strings.Contains(out, "203.0.113.") || !strings.Contains(out, "10.0.0.5") {
		t.Errorf("floating-ip list:\n%s", out)
	}
	run("floating-ip", "disassociate", "f1")
	run("floating-ip", "associate", "f1", "p1")
	fails(`network "web" is in use by port p1`, "network", "delete", "web")
	run("floating-ip", "delete", "f1")
	run("port", "delete", "p1")
	run("network", "delete", "web")
	run("quota", "set", "--ports", "3", "--floating-ips", "1")
	if out := run("quota", "show"); !strings.Contains(out, "ports") || !strings.Contains(out, "floating-ips") {
		t.Errorf("quota show:\n%s", out)
	}
}

// TestVMCreateNICFlags: --nic with keys reaches the server as NICs.
func TestVMCreateNICFlags(t *testing.T) {
	f := vmCreateFlags{vcpus: 1, memoryMiB: 128, blankDisks: []int64{10},
		nics: []string{"network=web,ip=10.0.0.5,secgroup=web", "user", "port=p1"}}
	req, err := f.request("v1")
	if err != nil {
		t.Fatal(err)
	}
	want := []api.NIC{{Network: "web", IP: "10.0.0.5", SecurityGroups: []string{"web"}}, {Network: api.NetworkUser}, {Port: "p1"}}
	if !reflect.DeepEqual(req.NICs, want) {
		t.Errorf("NICs %+v, want %+v", req.NICs, want)
	}
}
