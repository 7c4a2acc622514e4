package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// env is a real server (embedded etcd, TLS API) with two projects, a user
// per role in project "pa", a user with no role, two registered hosts the
// test speaks for, and in each project an image and a VM placed on h1.
type env struct {
	t       testing.TB
	s       *Server
	dataDir string
	url     string
	logs    *syncBuffer
	super   *client.Client // the first superadmin's token

	tokens map[string]string // identity -> token ("viewer", "h1", ...)
}

// syncBuffer is a log sink the test can read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var roleUsers = []string{api.RoleViewer, api.RoleOperator, api.RoleMember, api.RoleAdmin}

// userOf names the user the env made for a role in project "pa"; other
// callers are users of their own name, the superadmin is "admin".
func userOf(who string) string {
	switch who {
	case api.RoleViewer, api.RoleOperator, api.RoleMember, api.RoleAdmin:
		return "r-" + who
	case "superadmin":
		return bootstrapUser
	}
	return who
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	peer.Binary(t, "qemu-img", "apt-get install qemu-utils; it imports the test image")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := &env{t: t, dataDir: t.TempDir(), logs: &syncBuffer{}, tokens: map[string]string{}}
	cfg.DataDir = e.dataDir
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Socket = filepath.Join(e.dataDir, "polyvisor.sock")
	cfg.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.LeaseInterval == 0 {
		cfg.LeaseInterval = 200 * time.Millisecond
	}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	e.s = s
	e.url = "https://" + s.Addr().String()
	e.super = e.client(s.AdminToken(), "")
	e.tokens["superadmin"] = s.AdminToken()
	e.tokens["metrics"] = s.metricsToken
	e.tokens["peer"] = s.peerToken

	for _, p := range []string{"pa", "pb"} {
		if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: p}); err != nil {
			t.Fatalf("creating project %s: %v", p, err)
		}
	}
	for _, u := range []string{"nobody", "bob"} {
		e.tokens[u] = e.newUser(ctx, u)
	}
	for _, role := range roleUsers {
		e.tokens[role] = e.newUser(ctx, userOf(role))
		if err := e.super.SetMember(ctx, "pa", userOf(role), role); err != nil {
			t.Fatalf("granting %s: %v", role, err)
		}
	}
	// bob belongs to project pb only: the foreign tenant.
	if err := e.super.SetMember(ctx, "pb", "bob", api.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2"} {
		e.tokens[h] = e.registerHost(ctx, h)
	}
	for _, p := range []string{"pa", "pb"} {
		e.importImage(ctx, p, "img")
		e.createVM(ctx, e.super.WithProject(p), "vm1", "img")
	}
	return e
}

// client returns a client with token acting in project.
func (e *env) client(token, project string) *client.Client {
	c, err := client.New(client.Config{URL: e.url, Token: token, CAFile: e.s.CAFile(), Project: project})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) as(who, project string) *client.Client { return e.client(e.tokens[who], project) }

// newUser makes a user and returns an API token of it.
func (e *env) newUser(ctx context.Context, name string) string {
	if _, err := e.super.CreateUser(ctx, api.UserCreate{Name: name, Password: "pw-" + name + "-secret"}); err != nil {
		e.t.Fatalf("creating user %s: %v", name, err)
	}
	tok, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "test", User: name})
	if err != nil {
		e.t.Fatalf("token of %s: %v", name, err)
	}
	return tok.Secret
}

// registerHost joins a host the test speaks for, with room for VMs.
func (e *env) registerHost(ctx context.Context, name string) string {
	jt, err := e.s.MintJoinToken(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	st := api.HostStatus{State: api.HostReady, CPUs: 64, MemoryMiB: 256 << 10, DiskTotalMiB: 1 << 20, DiskFreeMiB: 1 << 20, Accel: "tcg", Drivers: []string{"qemu"}}
	creds, err := e.client("", "").Register(ctx, api.AgentRegister{JoinToken: jt, Host: name, Status: st})
	if err != nil {
		e.t.Fatalf("registering %s: %v", name, err)
	}
	go func() {
		// Keep the host alive for the test's length.
		c := e.client(creds.Token, "")
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-e.s.life.Done():
				return
			case <-tick.C:
				_, _ = c.PutHostStatus(context.Background(), name, st)
			}
		}
	}()
	return creds.Token
}

// importImage uploads a small raw disk image into project.
func (e *env) importImage(ctx context.Context, project, name string) {
	raw := make([]byte, 1<<20)
	op, err := e.super.WithProject(project).UploadImage(ctx, name, api.ImageDisk, bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		e.t.Fatalf("uploading image %s/%s: %v", project, name, err)
	}
	if op, err = e.super.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		e.t.Fatalf("importing image %s/%s: %+v %v", project, name, op, err)
	}
}

// createVM creates a VM on h1 and returns its create operation.
func (e *env) createVM(ctx context.Context, c *client.Client, name, image string) *api.Operation {
	op, err := c.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 128, Host: "h1",
		Disks: []api.Disk{{Image: image}}}, client.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating vm %s in %s: %v", name, c.Project(), err)
	}
	return op
}

// do sends one raw request and returns the status, body and request id.
func (e *env) do(method, path, token string, body []byte) (int, []byte, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.super.HTTPClient().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, _ := readSome(resp, buf)
	return resp.StatusCode, buf[:n], resp.Header.Get("X-Request-Id")
}

// readSome reads what a (maybe streaming) answer has ready, without
// waiting for its end.
func readSome(resp *http.Response, buf []byte) (int, error) {
	if resp.Header.Get("Content-Type") == "application/x-ndjson" || resp.StatusCode == http.StatusSwitchingProtocols {
		return 0, nil
	}
	total := 0
	for total < len(buf) {
		n, err := resp.Body.Read(buf[total:])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// scanFiles reports which of secrets appear in any file under dir.
func scanFiles(t *testing.T, dir string, secrets []string) []string {
	t.Helper()
	var found []string
	_ = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || info.Mode()&os.ModeType != 0 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				found = append(found, s+" in "+path)
			}
		}
		return nil
	})
	return found
}
