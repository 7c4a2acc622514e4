package server

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
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
