package server

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestProviderNetworks: a vCenter's port groups (VMware's simulator, in
// this process) appear as read-only networks of the project its provider
// is bound to; a VM created in the provider names one of them, and a NIC
// naming another network, or asking for what only Polyvisor's networks
// give, is refused naming its field.
func TestProviderNetworks(t *testing.T) {
	t.Parallel()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	defer m.Remove()
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword("admin", "vcsim-pw")}
	sim := m.Service.NewServer()
	defer sim.Close()
	u := *sim.URL
	u.User = nil
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sim.Certificate().Raw}))

	e := newEnv(t, Config{ProviderFactory: registry.New, ProviderResync: time.Minute})
	ctx := context.Background()
	if _, err := e.super.CreateProvider(ctx, api.ProviderCreate{Name: "vc1", Type: api.ProviderVSphere, URL: u.String(),
		Username: "admin", Password: "vcsim-pw", CACert: ca, Project: "pa"}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	var nets []api.Network
	ctlEventually(t, 20*time.Second, "vc1's networks listed", func() error {
		var err error
		nets, err = member.ListNetworks(ctx, api.ListOptions{Provider: "vc1"})
		if err == nil && len(nets) == 0 {
			return errString("none yet")
		}
		return err
	})
	var names []string
	for _, n := range nets {
		if n.Spec.Type != api.NetworkProvider || n.Provider == nil || n.Provider.Name != "vc1" || n.Provider.ID == "" || n.Project != "pa" {
			t.Errorf("a provider network: %+v", n)
		}
		names = append(names, n.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "VM Network") {
		t.Fatalf("vc1's networks: %v, want VM Network among them", names)
	}
	// In the project's whole list too, after its own networks.
	if _, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	all, err := member.ListNetworks(ctx, api.ListOptions{})
	if err != nil || len(all) != len(nets)+1 || all[0].Name != "web" {
		t.Errorf("pa's networks: %d (%v), want web then vc1's %d", len(all), err, len(nets))
	}
	if n, err := member.GetNetwork(ctx, "VM Network", ""); err != nil || n.Provider == nil {
		t.Errorf("VM Network: %+v %v", n, err)
	}
	if err := member.DeleteNetwork(ctx, "VM Network"); statusOfErr(err) != 409 {
		t.Errorf("deleting a provider's network: %v, want 409", err)
	}
	// Another project sees none of them.
	if ns, err := e.as("bob", "pb").ListNetworks(ctx, api.ListOptions{}); err != nil || len(ns) != 0 {
		t.Errorf("pb's networks: %+v %v", ns, err)
	}
	for _, tc := range []struct {
		nic   api.NIC
		field string
	}{
		{api.NIC{Network: "web"}, "nics[0].network"},
		{api.NIC{Network: "VM Network", IP: "10.0.0.5"}, "nics[0].ip"},
		{api.NIC{Network: "VM Network", SecurityGroups: []string{"default"}}, "nics[0].securityGroups"},
	} {
		_, err := member.CreateVM(ctx, api.VMCreate{Name: "p1", VCPUs: 1, MemoryMiB: 256, Provider: "vc1", Template: "DC0_H0_VM0",
			NICs: []api.NIC{tc.nic}}, client.CreateOptions{})
		wantRefused(t, "a provider VM's NIC "+tc.nic.Network, err, 400, tc.field)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestLibvirtProviderNetworks: the networks of a real libvirtd
// (qemu:///system), active or not, appear as read-only networks of the
// project its provider is bound to, by name and by libvirt's UUID; a VM
// created in it may name them and no other.
func TestLibvirtProviderNetworks(t *testing.T) {
	const sock = "/var/run/libvirt/libvirt-sock"
	if c, err := net.DialTimeout("unix", sock, time.Second); err != nil {
		peer.Missing(t, "no libvirtd answers on %s (scripts/libvirtd.sh start): %v", sock, err)
	} else {
		c.Close()
	}
	virsh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Two networks onto a host bridge (libvirt's bridge mode, which needs no
	// firewall of its own): one started, one only defined.
	suffix := strconv.Itoa(os.Getpid() % 100000)
	names := []string{"pvn-on-" + suffix, "pvn-off-" + suffix}
	for i, name := range names {
		xml := filepath.Join(t.TempDir(), "net.xml")
		if err := os.WriteFile(xml, []byte(fmt.Sprintf("<network><name>%s</name><forward mode='bridge'/><bridge name='pvnb%d-%s'/></network>", name, i, suffix)), 0o644); err != nil {
			t.Fatal(err)
		}
		virsh("net-define", xml)
		t.Cleanup(func() {
			exec.Command("virsh", "-c", "qemu:///system", "net-destroy", name).Run()
			exec.Command("virsh", "-c", "qemu:///system", "net-undefine", name).Run()
		})
	}
	virsh("net-start", names[0])
	uuid := virsh("net-uuid", names[1])

	e := newEnv(t, Config{ProviderFactory: registry.New, ProviderResync: time.Minute})
	ctx := context.Background()
	if _, err := e.super.CreateProvider(ctx, api.ProviderCreate{Name: "kvm1", Type: api.ProviderLibvirt, URL: "qemu:///system", Project: "pa"}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	var nets []api.Network
	ctlEventually(t, 20*time.Second, "kvm1's networks listed", func() error {
		var err error
		nets, err = member.ListNetworks(ctx, api.ListOptions{Provider: "kvm1"})
		if err == nil && len(nets) == 0 {
			return errString("none yet")
		}
		return err
	})
	found := map[string]api.Network{}
	for _, n := range nets {
		if n.Spec.Type != api.NetworkProvider || n.Provider == nil || n.Provider.Name != "kvm1" || n.Provider.Type != api.ProviderLibvirt || n.Provider.ID == "" || n.Project != "pa" {
			t.Errorf("a provider network: %+v", n)
		}
		found[n.Name] = n
	}
	for _, name := range names {
		if _, ok := found[name]; !ok {
			t.Fatalf("kvm1's networks: %v, want %s among them", nets, name)
		}
	}
	if got := found[names[1]].Provider.ID; got != uuid {
		t.Errorf("%s's id: %q, want libvirt's UUID %q", names[1], got, uuid)
	}
	if n, err := member.GetNetwork(ctx, names[0], ""); err != nil || n.Provider == nil || n.Provider.Name != "kvm1" {
		t.Errorf("%s: %+v %v", names[0], n, err)
	}
	if err := member.DeleteNetwork(ctx, names[0]); statusOfErr(err) != 409 {
		t.Errorf("deleting a libvirt network through Polyvisor: %v, want 409", err)
	}
	if ns, err := e.as("bob", "pb").ListNetworks(ctx, api.ListOptions{}); err != nil || len(ns) != 0 {
		t.Errorf("pb's networks: %+v %v", ns, err)
	}
	for _, tc := range []struct {
		nic   api.NIC
		field string
	}{
		{api.NIC{Network: "no-such-net-" + suffix}, "nics[0].network"},
		{api.NIC{Network: names[0], IP: "10.0.0.5"}, "nics[0].ip"},
		{api.NIC{Network: names[0], SecurityGroups: []string{"default"}}, "nics[0].securityGroups"},
	} {
		_, err := member.CreateVM(ctx, api.VMCreate{Name: "p1", VCPUs: 1, MemoryMiB: 256, Provider: "kvm1", Template: "none",
			NICs: []api.NIC{tc.nic}}, client.CreateOptions{})
		wantRefused(t, "a libvirt VM's NIC "+tc.nic.Network, err, 400, tc.field)
	}
	// Gone from libvirt, gone from the list after the provider's resync.
	virsh("net-undefine", names[1])
	if _, err := e.super.RefreshProvider(ctx, "kvm1"); err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 20*time.Second, names[1]+" gone", func() error {
		ns, err := member.ListNetworks(ctx, api.ListOptions{Provider: "kvm1"})
		for _, n := range ns {
			if n.Name == names[1] {
				return errString("still listed")
			}
		}
		return err
	})
}
