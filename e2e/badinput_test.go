package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// rawRequestH sends a bodiless request with extra headers.
func rawRequestH(t *testing.T, srv *serverProc, method, path string, headers map[string]string) (int, *api.Error) {
	t.Helper()
	return rawRequestFull(t, srv, method, path, "application/json", nil, headers)
}

// rawRequest sends a request over TLS with the admin token and decodes
// the error.
func rawRequest(t *testing.T, srv *serverProc, method, path, contentType string, body []byte) (int, *api.Error) {
	t.Helper()
	return rawRequestFull(t, srv, method, path, contentType, body, nil)
}

func rawRequestFull(t *testing.T, srv *serverProc, method, path, contentType string, body []byte, headers map[string]string) (int, *api.Error) {
	t.Helper()
	admin := srv.adminClient(t)
	tok, _ := os.ReadFile(filepath.Join(srv.dataDir, "admin.token"))
	req, err := http.NewRequest(method, fmt.Sprintf("https://127.0.0.1:%d%s", srv.port, path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := admin.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	_ = json.Unmarshal(raw, &eb)
	return resp.StatusCode, eb.Error
}

// fetchMetrics reads the server's Prometheus metrics.
func fetchMetrics(t *testing.T, srv *serverProc) string {
	t.Helper()
	// /metrics answers a superadmin or the metrics token.
	tok, err := os.ReadFile(filepath.Join(srv.dataDir, "metrics.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/metrics", srv.port), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := srv.adminClient(t).HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestBadInput sends invalid requests: each gets a 4xx whose message names
// the problem, and nothing is created, in the store or on disk.
func TestBadInput(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)

	// One valid, stopped VM, so that "duplicate name" has something to hit.
	ok := guestVM("exists")
	ok.PowerState = api.PowerStopped
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, ok, client.CreateOptions{})))

	vmsDir := filepath.Join(srv.dataDir, "agent", "vms")
	imagesDir := filepath.Join(srv.dataDir, "images")
	beforeVMDirs, beforeImages := listDir(t, vmsDir), listDir(t, imagesDir)
	beforeOps, err := c.ListAllOperations(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}

	body := func(mod func(m map[string]any)) []byte {
		m := map[string]any{
			"name": "bad", "vcpus": 1, "memoryMiB": 256,
			"disks": []any{map[string]any{"image": imgDisk}},
			"boot":  map[string]any{"kernel": imgKernel, "initrd": imgInitrd},
		}
		mod(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name   string
		body   []byte
		status int
		field  string
		text   string
	}{
		{"uppercase name", body(func(m map[string]any) { m["name"] = "Bad" }), 400, "name", "not a valid name"},
		{"name with dot", body(func(m map[string]any) { m["name"] = "a.b" }), 400, "name", "not a valid name"},
		{"empty name", body(func(m map[string]any) { m["name"] = "" }), 400, "name", "required"},
		{"vcpus 0", body(func(m map[string]any) { m["vcpus"] = 0 }), 400, "vcpus", "at least 1"},
		{"vcpus beyond any host", body(func(m map[string]any) { m["vcpus"] = 4096 }), 400, "vcpus", "more than any host"},
		{"memory 0", body(func(m map[string]any) { m["memoryMiB"] = 0 }), 400, "memoryMiB", "at least"},
		{"memory absurd", body(func(m map[string]any) { m["memoryMiB"] = int64(1) << 40 }), 400, "memoryMiB", "more memory than any host"},
		{"unknown image", body(func(m map[string]any) { m["disks"] = []any{map[string]any{"image": "nope"}} }), 400, "disks[0].image", `image "nope" not found`},
		{"vcpus as string", body(func(m map[string]any) { m["vcpus"] = "two" }), 400, "vcpus", "must be int"},
		{"unknown field", body(func(m map[string]any) { m["colour"] = "blue" }), 400, "colour", "unknown field"},
		{"malformed JSON", []byte(`{"name": "bad",`), 400, "body", "malformed JSON"},
		{"two values", []byte(`{"name":"a"} {"name":"b"}`), 400, "body", "more than one"},
		{"empty body", nil, 400, "body", "empty"},
		{"duplicate name", body(func(m map[string]any) { m["name"] = "exists" }), 409, "", `vm "exists" already exists`},
		{"oversized body", body(func(m map[string]any) { m["labels"] = map[string]string{"x": strings.Repeat("a", 2<<20)} }), 413, "", "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, apiErr := rawRequest(t, srv, "POST", "/v1/vms", "application/json", tc.body)
			if status != tc.status || apiErr == nil {
				t.Fatalf("status %d (%+v), want %d", status, apiErr, tc.status)
			}
			if apiErr.Field != tc.field || !strings.Contains(apiErr.Message, tc.text) {
				t.Fatalf("error field=%q %q; want field=%q containing %q", apiErr.Field, apiErr.Message, tc.field, tc.text)
			}
		})
	}

	t.Run("qcow2 naming /etc/passwd as backing file", func(t *testing.T) {
		evil := filepath.Join(t.TempDir(), "evil.qcow2")
		out, err := exec.Command("qemu-img", "create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil, "1M").CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		data, _ := os.ReadFile(evil)
		status, apiErr := rawRequest(t, srv, "POST", "/v1/images?name=evil&kind=disk", "application/octet-stream", data)
		if status != 400 || apiErr == nil || !strings.Contains(apiErr.Message, "backing file") || !strings.Contains(apiErr.Message, "/etc/passwd") {
			t.Fatalf("status %d %+v; want 400 naming the backing file", status, apiErr)
		}
		if _, err := c.GetImage(ctx, "evil"); !client.IsNotFound(err) {
			t.Fatalf("image evil exists after refusal: %v", err)
		}
	})
	t.Run("image of an unknown kind", func(t *testing.T) {
		status, apiErr := rawRequest(t, srv, "POST", "/v1/images?name=k&kind=floppy", "application/octet-stream", []byte("x"))
		if status != 400 || apiErr.Field != "kind" {
			t.Fatalf("status %d %+v", status, apiErr)
		}
	})
	t.Run("action on an unknown vm", func(t *testing.T) {
		if _, err := c.StartVM(ctx, "ghost"); !client.IsNotFound(err) {
			t.Fatalf("got %v, want 404", err)
		}
	})
	t.Run("pause a stopped vm", func(t *testing.T) {
		if _, err := c.PauseVM(ctx, "exists"); !client.IsConflict(err) {
			t.Fatalf("got %v, want 409", err)
		}
	})
	t.Run("no token over TCP", func(t *testing.T) {
		admin := srv.adminClient(t)
		url := fmt.Sprintf("https://127.0.0.1:%d", srv.port)
		anon, err := client.New(client.Config{URL: url, CAFile: filepath.Join(srv.dataDir, "pki", "ca.crt")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.ListVMs(ctx, api.ListOptions{}); client.HTTPStatus(err) != 401 {
			t.Fatalf("got %v, want 401", err)
		}
		bad, _ := client.New(client.Config{URL: url, Token: "pva_000000000000_" + strings.Repeat("0", 64), CAFile: filepath.Join(srv.dataDir, "pki", "ca.crt")})
		if _, err := bad.ListVMs(ctx, api.ListOptions{}); client.HTTPStatus(err) != 401 {
			t.Fatalf("got %v, want 401", err)
		}
		if _, err := admin.ListVMs(ctx, api.ListOptions{}); err != nil {
			t.Fatalf("admin token refused: %v", err)
		}
	})

	// Nothing was created: no VM, no operation, no file.
	vms, err := c.ListAllVMs(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Name != "exists" {
		t.Fatalf("vms after bad input: %v", names(vms))
	}
	afterOps, _ := c.ListAllOperations(ctx, api.ListOptions{})
	if len(afterOps) != len(beforeOps) {
		t.Fatalf("operations: %d before, %d after", len(beforeOps), len(afterOps))
	}
	if got := listDir(t, vmsDir); fmt.Sprint(got) != fmt.Sprint(beforeVMDirs) {
		t.Fatalf("vm dirs: %v before, %v after", beforeVMDirs, got)
	}
	if got := listDir(t, imagesDir); fmt.Sprint(got) != fmt.Sprint(beforeImages) {
		t.Fatalf("image files: %v before, %v after", beforeImages, got)
	}
}

func names(vms []api.VM) []string {
	var out []string
	for _, v := range vms {
		out = append(out, v.Name)
	}
	return out
}
