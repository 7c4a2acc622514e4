package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// newTestClient serves h on an httptest server and returns a client of it
// with token "secret".
func newTestClient(t *testing.T, h http.Handler) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Config{URL: srv.URL, Token: "secret", UserAgent: "test-agent"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.pollInterval = time.Millisecond
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers the API's error shape.
func writeError(w http.ResponseWriter, status int, e *api.Error) {
	writeJSON(w, status, api.ErrorBody{Error: e})
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "ftp://host", "https://", "unix://", "://x"} {
		if _, err := New(Config{URL: u}); err == nil {
			t.Errorf("New(%q) succeeded, want an error", u)
		}
	}
	for _, u := range []string{"https://h:8443", "http://127.0.0.1:1/prefix/", "unix:///run/p.sock", "/run/p.sock"} {
		if _, err := New(Config{URL: u}); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
	if _, err := New(Config{URL: "https://h", CACert: []byte("not pem")}); err == nil {
		t.Error("New with a CA that is not PEM succeeded")
	}
}

func TestNewTakesHostPortAsHTTPS(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:17443":         "https://127.0.0.1:17443",
		" pv.example.com:7443 ":   "https://pv.example.com:7443",
		"localhost:7443":          "https://localhost:7443",
		"[::1]:7443":              "https://[::1]:7443",
		"https://h:8443/prefix":   "https://h:8443/prefix",
		"unix:///run/pv.sock":     "http://polyvisor",
		"/run/pv.sock":            "http://polyvisor",
		"http://127.0.0.1:1/base": "http://127.0.0.1:1/base",
	} {
		c, err := New(Config{URL: in})
		if err != nil {
			t.Errorf("New(%q): %v", in, err)
			continue
		}
		if base := c.servers.current().base; base.String() != want {
			got := base.String()
			t.Errorf("New(%q) talks to %q, want %q", in, got, want)
		}
	}
	// What cannot be read says which forms are expected, never a URL
	// parser's complaint about path segments.
	for in, want := range map[string]string{
		"pv.example.com":       "did you mean https://pv.example.com:7443?",
		"127.0.0.1:0":          "want https://HOST:PORT, HOST:PORT",
		"127.0.0.1:port":       "want https://HOST:PORT, HOST:PORT",
		":7443":                "want https://HOST:PORT, HOST:PORT",
		"ftp://pv.example.com": `unsupported scheme "ftp": want https://HOST:PORT`,
		"https://":             "names no host: want https://HOST:PORT",
		"://x":                 "want https://HOST:PORT",
		"":                     "no server URL: want https://HOST:PORT",
	} {
		_, err := New(Config{URL: in})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want an error with %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "first path segment") {
			t.Errorf("New(%q) = %v: a parser's error, not a hint", in, err)
		}
	}
}

func TestCreateVMSendsHeadersAndBody(t *testing.T) {
	var got api.VMCreate
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/vms" {
			t.Errorf("got %s %s, want POST /v1/vms", r.Method, r.URL.Path)
		}
		if h := r.Header.Get("Authorization"); h != "Bearer secret" {
			t.Errorf("Authorization = %q", h)
		}
		if h := r.Header.Get("Idempotency-Key"); h != "key-1" {
			t.Errorf("Idempotency-Key = %q", h)
		}
		if h := r.Header.Get("User-Agent"); h != "test-agent" {
			t.Errorf("User-Agent = %q", h)
		}
		if h := r.Header.Get("Content-Type"); h != "application/json" {
			t.Errorf("Content-Type = %q", h)
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Errorf("decode body: %v", err)
		}
		w.Header().Set("Location", "/v1/operations/op1")
		writeJSON(w, http.StatusAccepted, api.Operation{ID: "op1", Kind: api.OpVMCreate, Status: api.OpPending})
	}))
	want := api.VMCreate{Name: "web1", VCPUs: 2, MemoryMiB: 1024, Disks: []api.Disk{{Name: "root", Image: "debian"}}}
	op, err := c.CreateVM(context.Background(), want, CreateOptions{IdempotencyKey: "key-1"})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if op.ID != "op1" || op.Kind != api.OpVMCreate {
		t.Errorf("operation = %+v", op)
	}
	if got.Name != "web1" || got.VCPUs != 2 || got.MemoryMiB != 1024 || len(got.Disks) != 1 || got.Disks[0].Image != "debian" {
		t.Errorf("server got %+v", got)
	}
}

func TestErrorsDecodeToStatusErrorAndAPIError(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/vms":
			writeError(w, http.StatusBadRequest, api.Invalid("vcpus", "must be at least 1"))
		case "/v1/vms/ghost":
			writeError(w, http.StatusNotFound, api.NotFound("VM", "ghost"))
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>bad gateway</html>")
		}
	}))
	ctx := context.Background()

	_, err := c.CreateVM(ctx, api.VMCreate{Name: "x"}, CreateOptions{})
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("errors.As(%v, *api.Error) failed", err)
	}
	if ae.Code != api.CodeInvalid || ae.Field != "vcpus" {
		t.Errorf("api error = %+v", ae)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("StatusError = %+v", se)
	}
	if !strings.Contains(err.Error(), "vcpus: must be at least 1") {
		t.Errorf("message %q does not name the field", err)
	}

	_, err = c.GetVM(ctx, "ghost")
	if !IsNotFound(err) || HTTPStatus(err) != http.StatusNotFound {
		t.Errorf("GetVM(ghost) = %v, want not_found 404", err)
	}

	_, err = c.GetHost(ctx, "h1")
	if ErrorCode(err) != api.CodeInternal || HTTPStatus(err) != http.StatusBadGateway {
		t.Errorf("GetHost on a proxy error = %v (code %q, status %d)", err, ErrorCode(err), HTTPStatus(err))
	}
	if strings.Contains(err.Error(), "<html>") {
		t.Errorf("message %q repeats an HTML page", err)
	}
}

func TestVMRoutes(t *testing.T) {
	type call struct{ method, path, query, body string }
	var got call
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = call{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, strings.TrimSpace(string(b))}
		if strings.HasSuffix(r.URL.Path, "/console/log") {
			_, _ = io.WriteString(w, "boot log")
			return
		}
		writeJSON(w, http.StatusAccepted, api.Operation{ID: "op"})
	}))
	ctx := context.Background()
	tests := []struct {
		name string
		do   func() error
		want call
	}{
		{"start", func() error { _, err := c.StartVM(ctx, "a"); return err }, call{"POST", "/v1/vms/a/start", "", ""}},
		{"stop", func() error {
			_, err := c.StopVM(ctx, "a", &api.VMStop{TimeoutSeconds: 5, Force: true})
			return err
		}, call{"POST", "/v1/vms/a/stop", "", `{"timeoutSeconds":5,"force":true}`}},
		{"stop default", func() error { _, err := c.StopVM(ctx, "a", nil); return err }, call{"POST", "/v1/vms/a/stop", "", ""}},
		{"restart", func() error { _, err := c.RestartVM(ctx, "a", nil); return err }, call{"POST", "/v1/vms/a/restart", "", ""}},
		{"pause", func() error { _, err := c.PauseVM(ctx, "a"); return err }, call{"POST", "/v1/vms/a/pause", "", ""}},
		{"resume", func() error { _, err := c.ResumeVM(ctx, "a"); return err }, call{"POST", "/v1/vms/a/resume", "", ""}},
		{"delete", func() error { _, err := c.DeleteVM(ctx, "a", false); return err }, call{"DELETE", "/v1/vms/a", "", ""}},
		{"delete keep", func() error { _, err := c.DeleteVM(ctx, "a", true); return err }, call{"DELETE", "/v1/vms/a", "keepDisks=true", ""}},
		{"escaped name", func() error { _, err := c.StartVM(ctx, "a/b"); return err }, call{"POST", "/v1/vms/a%2Fb/start", "", ""}},
		{"console log", func() error {
			b, err := c.ConsoleLog(ctx, "a", 100)
			if err == nil && string(b) != "boot log" {
				t.Errorf("ConsoleLog = %q", b)
			}
			return err
		}, call{"GET", "/v1/vms/a/console/log", "bytes=100", ""}},
		{"image delete", func() error { _, err := c.DeleteImage(ctx, "img"); return err }, call{"DELETE", "/v1/images/img", "", ""}},
		{"cancel", func() error { _, err := c.CancelOperation(ctx, "op9"); return err }, call{"DELETE", "/v1/operations/op9", "", ""}},
		{"join token", func() error {
			_, err := c.CreateJoinToken(ctx, api.JoinTokenCreate{TTLSeconds: 60})
			return err
		}, call{"POST", "/v1/hosts/join-tokens", "", `{"ttlSeconds":60}`}},
		{"import url", func() error {
			_, err := c.ImportImageURL(ctx, api.ImageCreate{Name: "deb", URL: "https://example.com/d.qcow2"})
			return err
		}, call{"POST", "/v1/images", "", `{"name":"deb","url":"https://example.com/d.qcow2"}`}},
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
	if _, err := c.VMAction(ctx, "a", "explode", nil); err == nil {
		t.Error("VMAction accepted an unknown action")
	}
	if _, err := c.VMAction(ctx, "a", api.ActionPause, &api.VMStop{}); err == nil {
		t.Error("VMAction sent stop options with pause")
	}
}

func TestListAllFollowsContinue(t *testing.T) {
	var queries []string
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		q := r.URL.Query()
		switch q.Get("continue") {
		case "":
			writeJSON(w, 200, api.List[api.VM]{Items: []api.VM{{Meta: api.Meta{Name: "a"}}}, Continue: "p2"})
		case "p2":
			writeJSON(w, 200, api.List[api.VM]{Items: []api.VM{{Meta: api.Meta{Name: "b"}}}, Continue: "p3"})
		default:
			writeJSON(w, 200, api.List[api.VM]{Items: []api.VM{{Meta: api.Meta{Name: "c"}}}})
		}
	}))
	vms, err := c.ListAllVMs(context.Background(), api.ListOptions{Limit: 1, Selector: "env=prod", Host: "h1", State: "running"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Errorf("names = %v", names)
	}
	want := []string{
		"host=h1&limit=1&selector=env%3Dprod&state=running",
		"continue=p2&host=h1&limit=1&selector=env%3Dprod&state=running",
		"continue=p3&host=h1&limit=1&selector=env%3Dprod&state=running",
	}
	if strings.Join(queries, "\n") != strings.Join(want, "\n") {
		t.Errorf("queries:\n%s\nwant:\n%s", strings.Join(queries, "\n"), strings.Join(want, "\n"))
	}
}

func TestListAllStopsOnARepeatedToken(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.List[api.Image]{Items: []api.Image{{}}, Continue: "same"})
	}))
	if _, err := c.ListAllImages(context.Background(), api.ListOptions{}); err == nil {
		t.Fatal("ListAllImages looped on a repeated token without error")
	}
}

func TestWaitOperationPollsUntilDone(t *testing.T) {
	polls := 0
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/operations/op1" || r.URL.Query().Get("wait") != "30s" {
			t.Errorf("got %s?%s", r.URL.Path, r.URL.RawQuery)
		}
		polls++
		switch polls {
		case 1:
			writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpRunning, Progress: 10})
		case 2:
			writeError(w, http.StatusServiceUnavailable, &api.Error{Code: api.CodeUnavailable, Message: "restarting"})
		case 3:
			writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpRunning, Progress: 60})
		default:
			writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpFailed, Progress: 60,
				Error: &api.Error{Code: api.CodeUnprocessable, Message: "no host has room"}})
		}
	}))
	var seen []int
	op, err := c.WaitOperation(context.Background(), "op1", func(op *api.Operation) { seen = append(seen, op.Progress) })
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != api.OpFailed || len(seen) != 3 {
		t.Errorf("op = %+v, progress seen %v", op, seen)
	}
	err = OperationError(op)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnprocessable {
		t.Errorf("OperationError = %v", err)
	}
	if OperationError(&api.Operation{Status: api.OpSucceeded}) != nil {
		t.Error("OperationError of a succeeded operation is not nil")
	}
}

func TestWaitOperationEndsWithContext(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpRunning})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.WaitOperation(ctx, "op1", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestWaitOperationStopsOnNotFound(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.NotFound("operation", "nope"))
	}))
	if _, err := c.WaitOperation(context.Background(), "nope", nil); !IsNotFound(err) {
		t.Fatalf("err = %v, want not found", err)
	}
}
