package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

const testPassword = "hunter2-Sup3r$ecret"

// testCAPEM returns a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vcenter test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func testProvider(name, state string) api.Provider {
	p := api.Provider{
		Meta: api.Meta{Name: name, UID: "uid-" + name, CreatedAt: time.Now().Add(-2 * time.Hour)},
		Spec: api.ProviderSpec{Type: api.ProviderVSphere, URL: "https://vc.example.com/sdk", Username: "administrator@vsphere.local"},
		Status: api.ProviderStatus{
			State:        state,
			Inventory:    api.ProviderCounts{Datacenters: 1, Clusters: 2, Hosts: 3, Datastores: 4, Networks: 5, VMs: 12},
			Capabilities: api.ProviderCapabilities{Create: true, Suspend: true, Snapshots: true, Reconfigure: true, Console: true},
		},
	}
	if state == api.ProviderConnected || state == api.ProviderDisconnected {
		p.Status.LastSync = time.Now().Add(-30 * time.Second)
	}
	if state == api.ProviderDisconnected {
		p.Status.Stale = true
		p.Status.Message = "dial tcp: connection refused"
	}
	return p
}

func TestProviderAddVSphereSendsThePasswordFromTheFile(t *testing.T) {
	isolate(t)
	providerPollInterval = time.Millisecond
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "vc1.pw")
	if err := os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caPEM := testCAPEM(t)
	caFile := filepath.Join(dir, "vc1-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFake(t)
	var mu sync.Mutex
	var got api.ProviderCreate
	gets := 0
	// The provider as the server would store it: no password.
	stored := func(state string) api.Provider {
		p := testProvider(got.Name, state)
		p.Spec = api.ProviderSpec{Type: got.Type, URL: got.URL, Username: got.Username, CACert: got.CACert, Insecure: got.Insecure}
		return p
	}
	f.HandleFunc("POST /v1/providers", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		got = api.ProviderCreate{}
		if err := dec.Decode(&got); err != nil {
			t.Errorf("decode: %v", err)
		}
		reply(w, http.StatusCreated, stored(api.ProviderConnecting))
	})
	f.HandleFunc("GET /v1/providers/{name}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gets++
		state := api.ProviderConnecting
		if gets > 1 {
			state = api.ProviderConnected
		}
		reply(w, 200, stored(state))
	})

	out, errOut, code := cli(t, "", "--server", f.srv.URL, "provider", "add", "vsphere", "vc1",
		"--url", "https://vc.example.com/sdk", "--username", "administrator@vsphere.local",
		"--password-file", pwFile, "--ca-file", caFile)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	want := api.ProviderCreate{Name: "vc1", Type: api.ProviderVSphere, URL: "https://vc.example.com/sdk",
		Username: "administrator@vsphere.local", Password: testPassword, CACert: string(caPEM)}
	if got != want {
		t.Errorf("server got %+v\nwant %+v", got, want)
	}
	if strings.Contains(out+errOut, testPassword) {
		t.Errorf("the password was echoed:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
	if !strings.Contains(errOut, "provider vc1: connecting") {
		t.Errorf("no progress on stderr:\n%s", errOut)
	}
	for _, s := range []string{"State:", "connected", "3 hosts", "12 VMs", "Capabilities:", "snapshots", "Lacks:", "events", "verified against the given CA"} {
		if !strings.Contains(out, s) {
			t.Errorf("stdout lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(errOut, "Warning") {
		t.Errorf("a 0600 password file drew a warning:\n%s", errOut)
	}

	// A world-readable password file is used, with a warning; --no-wait
	// does not follow the provider; --insecure is sent.
	if err := os.Chmod(pwFile, 0o644); err != nil {
		t.Fatal(err)
	}
	before := gets
	out, errOut, code = cli(t, "", "--server", f.srv.URL, "-o", "json", "provider", "add", "vsphere", "vc2",
		"--url", "https://vc2.example.com/sdk", "--username", "root", "--password-file", pwFile, "--insecure", "--no-wait")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "can be read by every user") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("no warning for a world-readable password file:\n%s", errOut)
	}
	if got.Password != testPassword || !got.Insecure || got.CACert != "" {
		t.Errorf("server got %+v", got)
	}
	if gets != before {
		t.Errorf("--no-wait still followed the provider")
	}
	if strings.Contains(out+errOut, testPassword) {
		t.Errorf("the password was echoed:\n%s\n%s", out, errOut)
	}

	// The password can come from standard input.
	_, errOut, code = cli(t, "other-pw\n", "--server", f.srv.URL, "provider", "add", "vsphere", "vc3",
		"--url", "https://vc3.example.com/sdk", "--username", "root", "--password-file", "-", "--no-wait")
	if code != 0 || got.Password != "other-pw" {
		t.Errorf("exit %d, password %q, stderr:\n%s", code, got.Password, errOut)
	}
}

func TestProviderAddFailures(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(testPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFake(t)
	f.HandleFunc("POST /v1/providers", func(w http.ResponseWriter, r *http.Request) {
		var req api.ProviderCreate
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Name == "taken" {
			reply(w, http.StatusConflict, api.ErrorBody{Error: api.Conflict("provider %q already exists", req.Name)})
			return
		}
		reply(w, http.StatusBadRequest, api.ErrorBody{Error: api.Invalid("password", "the provider refused the credentials")})
	})
	base := []string{"--server", f.srv.URL, "provider", "add", "vsphere"}
	vs := func(name string, extra ...string) []string {
		return append(append(append([]string{}, base...), name, "--url", "https://vc/sdk", "--username", "u"), extra...)
	}

	_, errOut, code := cli(t, "", vs("vc1", "--password-file", pwFile)...)
	if code != ExitFailure || !strings.Contains(errOut, "--password-file: the provider refused the credentials") {
		t.Errorf("bad credentials: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(errOut, testPassword) {
		t.Errorf("the password was echoed: %s", errOut)
	}
	_, errOut, code = cli(t, "", vs("taken", "--password-file", pwFile)...)
	if code != ExitFailure || !strings.Contains(errOut, "already exists") {
		t.Errorf("name taken: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, "", vs("vc1", "--password-file", empty)...)
	if code != ExitFailure || !strings.Contains(errOut, "holds no password") {
		t.Errorf("empty password file: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, "", vs("vc1", "--password-file", pwFile, "--ca-file", pwFile)...)
	if code != ExitFailure || !strings.Contains(errOut, "no PEM certificate") {
		t.Errorf("bad CA file: exit %d, stderr %q", code, errOut)
	}

	for _, args := range [][]string{
		vs("vc1"), // no --password-file
		vs("vc1", "--password-file", pwFile, "--ca-file", pwFile, "--insecure"),
		{"--server", f.srv.URL, "provider", "add", "vsphere", "vc1", "--username", "u", "--password-file", pwFile},
		{"--server", f.srv.URL, "provider", "add", "vsphere", "vc1", "--url", "vc.example.com", "--username", "u", "--password-file", pwFile},
		{"--server", f.srv.URL, "provider", "add", "libvirt", "kvm1"},
		{"--server", f.srv.URL, "provider", "add", "libvirt", "kvm1", "--uri", "kvm7"},
		{"--server", f.srv.URL, "provider", "add", "hyperv", "h1"},
		{"--server", f.srv.URL, "provider", "show"},
	} {
		if _, errOut, code := cli(t, "", args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
	}
	for _, r := range f.requests() {
		if strings.HasPrefix(r, "POST") && strings.Contains(r, "hyperv") {
			t.Errorf("sent %s", r)
		}
	}
}

func TestProviderAddLibvirt(t *testing.T) {
	isolate(t)
	providerPollInterval = time.Millisecond
	f := newFake(t)
	var got api.ProviderCreate
	f.HandleFunc("POST /v1/providers", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		p := testProvider(got.Name, api.ProviderConnecting)
		p.Spec = api.ProviderSpec{Type: got.Type, URL: got.URL}
		reply(w, http.StatusCreated, p)
	})
	f.HandleFunc("GET /v1/providers/{name}", func(w http.ResponseWriter, r *http.Request) {
		p := testProvider(r.PathValue("name"), api.ProviderDisconnected)
		p.Spec = api.ProviderSpec{Type: api.ProviderLibvirt, URL: got.URL}
		reply(w, 200, p)
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "provider", "add", "libvirt", "kvm7", "--uri", "qemu+tcp://kvm7.example.com/system")
	want := api.ProviderCreate{Name: "kvm7", Type: api.ProviderLibvirt, URL: "qemu+tcp://kvm7.example.com/system"}
	if got != want {
		t.Errorf("server got %+v", got)
	}
	// Lost during its first sync: the provider is shown, and the exit code says it.
	if code != ExitFailure || !strings.Contains(errOut, "first sync failed") || !strings.Contains(out, "disconnected,stale") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if strings.Contains(out, "Certificate:") {
		t.Errorf("a libvirt provider shows a certificate line:\n%s", out)
	}
}

func TestProviderShowListRefreshRemoveInventory(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/providers", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Provider]{Items: []api.Provider{testProvider("vc1", api.ProviderConnected), testProvider("vc2", api.ProviderDisconnected)}})
	})
	f.HandleFunc("GET /v1/providers/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, testProvider(r.PathValue("name"), api.ProviderDisconnected))
	})
	f.HandleFunc("POST /v1/providers/{name}/refresh", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, testProvider(r.PathValue("name"), api.ProviderConnected))
	})
	f.HandleFunc("DELETE /v1/providers/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, testProvider(r.PathValue("name"), api.ProviderConnected))
	})
	f.HandleFunc("GET /v1/providers/{name}/inventory", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.ProviderInventory{
			Datacenters: []api.InventoryItem{{ID: "datacenter-2", Name: "DC0"}},
			Clusters:    []api.InventoryItem{{ID: "domain-c7", Name: "C0", Datacenter: "DC0"}},
			Datastores:  []api.InventoryItem{{ID: "datastore-11", Name: "ds1", Datacenter: "DC0", CapacityBytes: 100 << 30, FreeBytes: 40 << 30}},
			Templates:   []api.InventoryItem{{ID: "vm-40", Name: "ubuntu-22.04", Datacenter: "DC0"}},
		})
	})
	srv := []string{"--server", f.srv.URL}

	out, errOut, code := cli(t, "", append(srv, "-o", "json", "provider", "show", "vc1")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(strings.ToLower(out), "password") {
		t.Errorf("provider show -o json mentions a password:\n%s", out)
	}
	var p api.Provider
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Name != "vc1" || !p.Status.Stale {
		t.Errorf("-o json: %v\n%s", err, out)
	}
	out, _, code = cli(t, "", append(srv, "-o", "yaml", "provider", "show", "vc1")...)
	if code != 0 || strings.Contains(strings.ToLower(out), "password") || !strings.Contains(out, "state: disconnected") {
		t.Errorf("-o yaml (exit %d):\n%s", code, out)
	}
	out, _, code = cli(t, "", append(srv, "provider", "show", "vc1")...)
	for _, s := range []string{"disconnected,stale", "Stale:", "Last sync:", "30s ago", "Message:", "connection refused",
		"1 datacenters, 2 clusters, 3 hosts, 4 datastores, 5 networks, 12 VMs", "create, suspend, snapshots, reconfigure, console"} {
		if code != 0 || !strings.Contains(out, s) {
			t.Errorf("provider show lacks %q (exit %d):\n%s", s, code, out)
		}
	}
	if strings.Contains(strings.ToLower(out), "password") {
		t.Errorf("provider show mentions a password:\n%s", out)
	}

	out, _, code = cli(t, "", append(srv, "provider", "list")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("provider list (exit %d):\n%s", code, out)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); got != "vc1 vsphere https://vc.example.com/sdk connected 3 12 30s 2h" {
		t.Errorf("row = %q", got)
	}
	if !strings.Contains(lines[2], "disconnected,stale") {
		t.Errorf("row = %q", lines[2])
	}

	out, _, code = cli(t, "", append(srv, "provider", "refresh", "vc1")...)
	if code != 0 || !strings.Contains(out, "provider vc1 refreshed: connected, 3 hosts, 12 VMs") {
		t.Errorf("refresh (exit %d): %s", code, out)
	}
	out, _, code = cli(t, "", append(srv, "provider", "remove", "vc1")...)
	if code != 0 || !strings.Contains(out, "provider vc1 removed") {
		t.Errorf("remove (exit %d): %s", code, out)
	}
	out, _, code = cli(t, "", append(srv, "provider", "inventory", "vc1")...)
	if code != 0 || !strings.Contains(out, "KIND") {
		t.Fatalf("inventory (exit %d):\n%s", code, out)
	}
	for _, s := range []string{"datacenter  DC0", "cluster     C0", "domain-c7", "ds1", "100.0 GiB", "40.0 GiB", "template    ubuntu-22.04"} {
		if !strings.Contains(out, s) {
			t.Errorf("inventory lacks %q:\n%s", s, out)
		}
	}
	out, _, code = cli(t, "", append(srv, "-o", "json", "provider", "inventory", "vc1")...)
	var inv api.ProviderInventory
	if code != 0 || json.Unmarshal([]byte(out), &inv) != nil || len(inv.Datastores) != 1 || inv.Datastores[0].FreeBytes != 40<<30 {
		t.Errorf("inventory -o json (exit %d):\n%s", code, out)
	}

	reqs := strings.Join(f.requests(), "\n")
	for _, want := range []string{"POST /v1/providers/vc1/refresh", "DELETE /v1/providers/vc1", "GET /v1/providers/vc1/inventory"} {
		if !strings.Contains(reqs, want) {
			t.Errorf("no %s in\n%s", want, reqs)
		}
	}
}

func TestProviderFilterAndColumn(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		vm := testVM("web9", api.PowerRunning)
		vm.Spec.Host = "esx1"
		vm.Spec.Provider = &api.ProviderRef{Name: "vc1", Type: api.ProviderVSphere, ID: "vm-42", Path: "/DC0/vm/web9", Template: "ubuntu-22.04"}
		reply(w, 200, api.List[api.VM]{Items: []api.VM{vm, testVM("own1", api.PowerRunning)}})
	})
	f.HandleFunc("GET /v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Host]{Items: []api.Host{
			{Meta: api.Meta{Name: "esx1"}, Status: api.HostStatus{State: api.HostReady, CPUs: 16}, Provider: &api.ProviderRef{Name: "vc1", Type: api.ProviderVSphere, ID: "host-9"}},
			{Meta: api.Meta{Name: "h1"}, Status: api.HostStatus{State: api.HostReady, Accel: "kvm", CPUs: 8}},
		}})
	})
	f.HandleFunc("GET /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		vm := testVM("web9", api.PowerRunning)
		vm.Spec.Provider = &api.ProviderRef{Name: "vc1", Type: api.ProviderVSphere, ID: "vm-42", Path: "/DC0/vm/web9", Cluster: "domain-c7", Template: "ubuntu-22.04"}
		reply(w, 200, vm)
	})
	srv := []string{"--server", f.srv.URL}

	out, errOut, code := cli(t, "", append(srv, "vm", "list", "--provider", "vc1")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "PROVIDER") {
		t.Fatalf("vm list:\n%s", out)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); !strings.HasPrefix(got, "web9 running running esx1 vc1 2 2G") {
		t.Errorf("row = %q", got)
	}
	if got := strings.Fields(lines[2]); got[4] != "-" {
		t.Errorf("own VM's provider = %q", got[4])
	}
	if strings.Index(lines[0], "PROVIDER") != strings.Index(lines[1], "vc1") {
		t.Errorf("columns are not aligned:\n%s", out)
	}

	out, errOut, code = cli(t, "", append(srv, "host", "list", "--provider", "none")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "PROVIDER") || strings.Fields(lines[1])[2] != "vc1" || strings.Fields(lines[2])[2] != "-" {
		t.Errorf("host list:\n%s", out)
	}

	out, _, code = cli(t, "", append(srv, "vm", "show", "web9")...)
	for _, s := range []string{"Provider:", "vc1 (vsphere)", "vm-42", "/DC0/vm/web9", "ubuntu-22.04", "domain-c7"} {
		if code != 0 || !strings.Contains(out, s) {
			t.Errorf("vm show lacks %q:\n%s", s, out)
		}
	}

	reqs := strings.Join(f.requests(), "\n")
	if !strings.Contains(reqs, "GET /v1/vms?provider=vc1") || !strings.Contains(reqs, "GET /v1/hosts?provider=none") {
		t.Errorf("the filter was not sent:\n%s", reqs)
	}
}

func TestVMCreateInAProvider(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var got api.VMCreate
	f.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		got = api.VMCreate{}
		if err := dec.Decode(&got); err != nil {
			t.Errorf("decode: %v", err)
		}
		reply(w, http.StatusAccepted, api.Operation{ID: "op1", Status: api.OpPending})
	})
	f.operations(api.Operation{ID: "op1", Kind: api.OpVMCreate, Target: api.Ref{Kind: "vm", Name: "web9"}, Status: api.OpSucceeded})
	srv := []string{"--server", f.srv.URL}

	_, errOut, code := cli(t, "", append(srv, "vm", "create", "web9", "--provider", "vc1", "--template", "ubuntu-22.04",
		"--cluster", "C0", "--datastore", "ds1", "--network", "VM Network", "--vcpus", "2", "--memory", "4G")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := api.VMCreate{Name: "web9", VCPUs: 2, MemoryMiB: 4096, NICs: []api.NIC{{Network: "VM Network"}},
		Provider: "vc1", Template: "ubuntu-22.04", Cluster: "C0", Datastore: "ds1"}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("server got\n  %s\nwant\n  %s", gb, wb)
	}

	// Without --network the provider chooses: no NIC is sent.
	if _, errOut, code := cli(t, "", append(srv, "vm", "create", "web9", "--provider", "kvm7", "--template", "/var/lib/libvirt/images/base.qcow2")...); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if len(got.NICs) != 0 || got.Provider != "kvm7" || len(got.Disks) != 0 {
		t.Errorf("server got %+v", got)
	}

	// --network on Polyvisor's own hosts is the first NIC.
	if _, errOut, code := cli(t, "", append(srv, "vm", "create", "own1", "--image", "debian", "--network", "br0", "--nic", "user")...); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if len(got.NICs) != 2 || got.NICs[0].Network != "br0" || got.NICs[1].Network != "user" || got.Provider != "" {
		t.Errorf("server got %+v", got)
	}

	for _, args := range [][]string{
		{"vm", "create", "web9", "--provider", "vc1"},                                    // no template
		{"vm", "create", "web9", "--template", "t1"},                                     // no provider
		{"vm", "create", "web9", "--provider", "vc1", "--template", "t", "--image", "d"}, // image with a provider
		{"vm", "create", "web9", "--provider", "vc1", "--template", "t", "--user-data", "x"},
		{"vm", "create", "web9", "--provider", "vc1", "--template", "t", "--network", "a", "--nic", "b"},
	} {
		if _, errOut, code := cli(t, "", append(srv, args...)...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
	}
}

func TestVMReconfigureSnapshotsAndTicket(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var mu sync.Mutex
	bodies := map[string]string{}
	accept := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[r.Method+" "+r.URL.Path] = strings.TrimSpace(string(b))
		mu.Unlock()
		reply(w, http.StatusAccepted, api.Operation{ID: "op1", Status: api.OpPending})
	}
	f.HandleFunc("POST /v1/vms/{name}/reconfigure", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "running" {
			reply(w, http.StatusConflict, api.ErrorBody{Error: api.Conflict("vm %q is running: cpus and memory change while it is stopped", "running")})
			return
		}
		accept(w, r)
	})
	f.HandleFunc("POST /v1/vms/{name}/snapshots", accept)
	f.HandleFunc("POST /v1/vms/{name}/snapshots/{snap}/revert", accept)
	f.HandleFunc("DELETE /v1/vms/{name}/snapshots/{snap}", accept)
	f.HandleFunc("GET /v1/vms/{name}/snapshots", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "own1" {
			reply(w, http.StatusUnprocessableEntity, api.ErrorBody{Error: api.Unprocessable("vm %q runs on Polyvisor's qemu driver, which lacks the capability %q", "own1", "snapshots")})
			return
		}
		reply(w, 200, api.List[api.Snapshot]{Items: []api.Snapshot{
			{Name: "base", CreatedAt: time.Now().Add(-48 * time.Hour)},
			{Name: "before-upgrade", Description: "kernel 6.1", CreatedAt: time.Now().Add(-time.Hour), Current: true},
		}})
	})
	f.HandleFunc("GET /v1/vms/{name}/console/ticket", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.ConsoleTicket{Type: "webmks", Host: "esx1.example.com", Port: 443, Ticket: "tkt-1", URL: "wss://esx1.example.com:443/ticket/tkt-1"})
	})
	f.operations(
		api.Operation{ID: "op1", Kind: api.OpVMSnapshotCreate, Target: api.Ref{Kind: "vm", Name: "web9"}, Status: api.OpRunning},
		api.Operation{ID: "op1", Kind: api.OpVMSnapshotCreate, Target: api.Ref{Kind: "vm", Name: "web9"}, Status: api.OpSucceeded},
	)
	srv := []string{"--server", f.srv.URL}

	out, errOut, code := cli(t, "", append(srv, "vm", "reconfigure", "web9", "--vcpus", "4", "--memory", "8G")...)
	if code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("reconfigure: exit %d\n%s\n%s", code, out, errOut)
	}
	if b := bodies["POST /v1/vms/web9/reconfigure"]; b != `{"vcpus":4,"memoryMiB":8192}` {
		t.Errorf("reconfigure body %s", b)
	}
	if _, _, code := cli(t, "", append(srv, "vm", "reconfigure", "web9", "--memory", "1G", "--no-wait")...); code != 0 || bodies["POST /v1/vms/web9/reconfigure"] != `{"memoryMiB":1024}` {
		t.Errorf("reconfigure --memory: exit %d, body %s", code, bodies["POST /v1/vms/web9/reconfigure"])
	}
	if _, errOut, code := cli(t, "", append(srv, "vm", "reconfigure", "running", "--vcpus", "2")...); code != ExitFailure || !strings.Contains(errOut, "while it is stopped") {
		t.Errorf("reconfigure a running VM: exit %d, %s", code, errOut)
	}
	for _, args := range [][]string{{"vm", "reconfigure", "web9"}, {"vm", "reconfigure", "web9", "--vcpus", "0"}, {"vm", "snapshot", "create", "web9"}} {
		if _, errOut, code := cli(t, "", append(srv, args...)...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
	}

	out, errOut, code = cli(t, "", append(srv, "vm", "snapshot", "create", "web9", "before-upgrade", "--description", "kernel 6.1")...)
	if code != 0 || !strings.Contains(out, "vm.snapshot.create vm/web9 succeeded") {
		t.Errorf("snapshot create: exit %d\n%s\n%s", code, out, errOut)
	}
	if b := bodies["POST /v1/vms/web9/snapshots"]; b != `{"name":"before-upgrade","description":"kernel 6.1"}` {
		t.Errorf("snapshot body %s", b)
	}
	if _, errOut, code := cli(t, "", append(srv, "vm", "snapshot", "revert", "web9", "base")...); code != 0 {
		t.Errorf("revert: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, "", append(srv, "vm", "snapshot", "delete", "web9", "base", "--no-wait")...); code != 0 {
		t.Errorf("delete: exit %d %s", code, errOut)
	}
	for _, k := range []string{"POST /v1/vms/web9/snapshots/base/revert", "DELETE /v1/vms/web9/snapshots/base"} {
		if _, ok := bodies[k]; !ok {
			t.Errorf("no %s", k)
		}
	}

	out, errOut, code = cli(t, "", append(srv, "vm", "snapshot", "list", "web9")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("snapshot list: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); got != "base - 2d -" {
		t.Errorf("row = %q", got)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); got != "before-upgrade * 1h kernel 6.1" {
		t.Errorf("row = %q", got)
	}
	if _, errOut, code := cli(t, "", append(srv, "vm", "snapshot", "list", "own1")...); code != ExitFailure || !strings.Contains(errOut, `lacks the capability "snapshots"`) {
		t.Errorf("snapshots of an own VM: exit %d, %s", code, errOut)
	}

	out, errOut, code = cli(t, "", append(srv, "vm", "console-ticket", "web9")...)
	if code != 0 || !strings.Contains(out, "webmks") || !strings.Contains(out, "tkt-1") || !strings.Contains(out, "wss://esx1.example.com:443/ticket/tkt-1") {
		t.Errorf("console-ticket: exit %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = cli(t, "", append(srv, "-o", "json", "vm", "console-ticket", "web9")...)
	var tk api.ConsoleTicket
	if code != 0 || json.Unmarshal([]byte(out), &tk) != nil || tk.Port != 443 {
		t.Errorf("console-ticket -o json: exit %d\n%s", code, out)
	}
}
