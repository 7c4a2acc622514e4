package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func testProvider(name string) api.Provider {
	return api.Provider{
		Meta: api.Meta{Name: name, UID: "uid-" + name},
		Spec: api.ProviderSpec{Type: api.ProviderVSphere, URL: "https://vc.example.com/sdk", Username: "admin"},
		Status: api.ProviderStatus{
			State: api.ProviderConnected, LastSync: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			Inventory:    api.ProviderCounts{Hosts: 3, VMs: 12},
			Capabilities: api.ProviderCapabilities{Create: true, Snapshots: true},
		},
	}
}

func TestProviderRoutes(t *testing.T) {
	type call struct{ method, path, query, body string }
	var got call
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = call{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, strings.TrimSpace(string(b))}
		switch {
		case r.URL.Path == "/v1/providers" && r.Method == http.MethodGet:
			writeJSON(w, 200, api.List[api.Provider]{Items: []api.Provider{testProvider("vc1")}})
		case r.URL.Path == "/v1/providers":
			writeJSON(w, http.StatusCreated, testProvider("vc1"))
		case strings.HasSuffix(r.URL.Path, "/inventory"):
			writeJSON(w, 200, api.ProviderInventory{Clusters: []api.InventoryItem{{ID: "domain-c7", Name: "C0", Datacenter: "DC0"}}})
		default:
			writeJSON(w, 200, testProvider("vc1"))
		}
	}))
	ctx := context.Background()
	tests := []struct {
		name string
		do   func() error
		want call
	}{
		{"list", func() error {
			l, err := c.ListProviders(ctx, api.ListOptions{Limit: 5})
			if err == nil && (len(l.Items) != 1 || l.Items[0].Status.Inventory.VMs != 12) {
				t.Errorf("ListProviders = %+v", l)
			}
			return err
		}, call{"GET", "/v1/providers", "limit=5", ""}},
		{"list all", func() error { _, err := c.ListAllProviders(ctx, api.ListOptions{}); return err }, call{"GET", "/v1/providers", "", ""}},
		{"get", func() error {
			p, err := c.GetProvider(ctx, "vc1")
			if err == nil && (p.Spec.Type != api.ProviderVSphere || !p.Status.Capabilities.Snapshots) {
				t.Errorf("GetProvider = %+v", p)
			}
			return err
		}, call{"GET", "/v1/providers/vc1", "", ""}},
		{"create", func() error {
			_, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "vc1", Type: api.ProviderVSphere,
				URL: "https://vc.example.com/sdk", Username: "admin", Password: "s3cret", Insecure: true})
			return err
		}, call{"POST", "/v1/providers", "", `{"name":"vc1","type":"vsphere","url":"https://vc.example.com/sdk","username":"admin","password":"s3cret","insecure":true}`}},
		{"delete", func() error { _, err := c.DeleteProvider(ctx, "vc1"); return err }, call{"DELETE", "/v1/providers/vc1", "", ""}},
		{"refresh", func() error { _, err := c.RefreshProvider(ctx, "vc1"); return err }, call{"POST", "/v1/providers/vc1/refresh", "", ""}},
		{"inventory", func() error {
			inv, err := c.ProviderInventory(ctx, "vc1")
			if err == nil && (len(inv.Clusters) != 1 || inv.Clusters[0].Name != "C0") {
				t.Errorf("ProviderInventory = %+v", inv)
			}
			return err
		}, call{"GET", "/v1/providers/vc1/inventory", "", ""}},
		{"escaped name", func() error { _, err := c.GetProvider(ctx, "a/b"); return err }, call{"GET", "/v1/providers/a%2Fb", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = call{}
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCreateProviderErrorsNameTheField(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.ProviderCreate
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch req.Name {
		case "badpw":
			writeError(w, http.StatusBadRequest, api.Invalid("password", "the provider refused the credentials"))
		case "taken":
			writeError(w, http.StatusConflict, api.Conflict("provider %q already exists", req.Name))
		default:
			writeError(w, http.StatusBadRequest, api.Invalid("caCert", "the provider's certificate is not trusted"))
		}
	}))
	ctx := context.Background()
	_, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "badpw", Password: "wrong"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Field != "password" || HTTPStatus(err) != http.StatusBadRequest {
		t.Errorf("bad password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error repeats the password: %v", err)
	}
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "taken"}); !IsConflict(err) {
		t.Errorf("name taken: %v", err)
	}
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "x"}); !errors.As(err, &ae) || ae.Field != "caCert" {
		t.Errorf("untrusted certificate: %v", err)
	}
}

func TestVMExtraRoutes(t *testing.T) {
	type call struct{ method, path, body, ifMatch string }
	var got call
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = call{r.Method, r.URL.EscapedPath(), strings.TrimSpace(string(b)), r.Header.Get("If-Match")}
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/snapshots"):
			writeJSON(w, 200, api.List[api.Snapshot]{Items: []api.Snapshot{{Name: "s1", Current: true}}})
		case strings.HasSuffix(r.URL.Path, "/console/ticket"):
			writeJSON(w, 200, api.ConsoleTicket{Type: "webmks", Host: "esx1", Port: 443, Ticket: "t1"})
		default:
			writeJSON(w, http.StatusAccepted, api.Operation{ID: "op"})
		}
	}))
	ctx := context.Background()
	tests := []struct {
		name string
		do   func() error
		want call
	}{
		{"reconfigure", func() error {
			_, err := c.ReconfigureVM(ctx, "a", api.VMReconfigure{VCPUs: 4, MemoryMiB: 1024}, VMActionOptions{})
			return err
		}, call{"POST", "/v1/vms/a/reconfigure", `{"vcpus":4,"memoryMiB":1024}`, ""}},
		{"reconfigure if-match", func() error {
			_, err := c.ReconfigureVM(ctx, "a", api.VMReconfigure{VCPUs: 2}, VMActionOptions{IfMatch: 7})
			return err
		}, call{"POST", "/v1/vms/a/reconfigure", `{"vcpus":2}`, `"7"`}},
		{"list snapshots", func() error {
			s, err := c.ListSnapshots(ctx, "a")
			if err == nil && (len(s) != 1 || s[0].Name != "s1" || !s[0].Current) {
				t.Errorf("ListSnapshots = %+v", s)
			}
			return err
		}, call{"GET", "/v1/vms/a/snapshots", "", ""}},
		{"create snapshot", func() error {
			_, err := c.CreateSnapshot(ctx, "a", api.SnapshotCreate{Name: "s1", Description: "before upgrade"})
			return err
		}, call{"POST", "/v1/vms/a/snapshots", `{"name":"s1","description":"before upgrade"}`, ""}},
		{"revert snapshot", func() error { _, err := c.RevertSnapshot(ctx, "a", "s1"); return err }, call{"POST", "/v1/vms/a/snapshots/s1/revert", "", ""}},
		{"delete snapshot", func() error { _, err := c.DeleteSnapshot(ctx, "a", "s 1"); return err }, call{"DELETE", "/v1/vms/a/snapshots/s%201", "", ""}},
		{"console ticket", func() error {
			tk, err := c.ConsoleTicket(ctx, "a")
			if err == nil && (tk.Type != "webmks" || tk.Ticket != "t1" || tk.Port != 443) {
				t.Errorf("ConsoleTicket = %+v", tk)
			}
			return err
		}, call{"GET", "/v1/vms/a/console/ticket", "", ""}},
		{"action if-match", func() error {
			_, err := c.VMActionWithOptions(ctx, "a", api.ActionStop, &api.VMStop{Force: true}, VMActionOptions{IfMatch: 42})
			return err
		}, call{"POST", "/v1/vms/a/stop", `{"force":true}`, `"42"`}},
		{"action without if-match", func() error { _, err := c.StartVM(ctx, "a"); return err }, call{"POST", "/v1/vms/a/start", "", ""}},
		{"delete if-match", func() error {
			_, err := c.DeleteVMWithOptions(ctx, "a", false, VMActionOptions{IfMatch: 3})
			return err
		}, call{"DELETE", "/v1/vms/a", "", `"3"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = call{}
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := c.VMActionWithOptions(ctx, "a", api.ActionStart, nil, VMActionOptions{IfMatch: -1}); err == nil {
		t.Error("VMActionWithOptions sent a negative If-Match")
	}
	if _, err := c.ReconfigureVM(ctx, "a", api.VMReconfigure{VCPUs: -1}, VMActionOptions{}); err == nil {
		t.Error("ReconfigureVM sent negative vcpus")
	}
}

func TestVMExtraErrors(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/reconfigure"):
			writeError(w, http.StatusConflict, api.Conflict("vm %q is running: cpus and memory change while it is stopped", "a"))
		case strings.HasSuffix(r.URL.Path, "/snapshots"):
			writeError(w, http.StatusUnprocessableEntity, api.Unprocessable("provider %q lacks the capability %q", "kvm7", "snapshots"))
		default:
			writeError(w, http.StatusUnprocessableEntity, api.Unprocessable("vm %q runs on a Polyvisor host", "a"))
		}
	}))
	ctx := context.Background()
	if _, err := c.ReconfigureVM(ctx, "a", api.VMReconfigure{VCPUs: 2}, VMActionOptions{}); !IsConflict(err) {
		t.Errorf("reconfigure a running VM: %v", err)
	}
	_, err := c.ListSnapshots(ctx, "a")
	if ErrorCode(err) != api.CodeUnprocessable || !strings.Contains(err.Error(), `"snapshots"`) {
		t.Errorf("snapshots without the capability: %v", err)
	}
	if _, err := c.ConsoleTicket(ctx, "a"); HTTPStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("ticket of an own VM: %v", err)
	}
}

func TestListProviderFilter(t *testing.T) {
	var queries []string
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Path+"?"+r.URL.RawQuery)
		writeJSON(w, 200, api.List[api.Host]{Items: []api.Host{}})
	}))
	ctx := context.Background()
	if _, err := c.ListAllHosts(ctx, api.ListOptions{Provider: "vc1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListVMs(ctx, api.ListOptions{Provider: "none", State: "running"}); err != nil {
		t.Fatal(err)
	}
	want := "/v1/hosts?provider=vc1\n/v1/vms?provider=none&state=running"
	if got := strings.Join(queries, "\n"); got != want {
		t.Errorf("queries:\n%s\nwant:\n%s", got, want)
	}
}
