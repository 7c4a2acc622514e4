package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func TestLoginWhoamiLogout(t *testing.T) {
	dir := isolate(t)
	path := filepath.Join(dir, "polyvisor", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f := newFake(t)
	if err := os.WriteFile(path, []byte("server: "+f.srv.URL+"\nca-file: /etc/pv/ca.pem\nproject: web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var login api.Login
	f.HandleFunc("POST /v1/login", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&login)
		if login.Password != testPassword {
			reply(w, http.StatusUnauthorized, api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthorized, Message: "wrong user name or password"}})
			return
		}
		reply(w, 200, api.Session{Token: "pvs-session-1", User: login.User, ExpiresAt: expires})
	})
	f.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.WhoAmI{Kind: "user", Name: "alice", TokenID: "tok9", Project: "web", Role: "viewer",
			Roles: map[string]string{"web": "admin", "ops": "viewer"}})
	})
	loggedOut := false
	f.HandleFunc("POST /v1/logout", func(w http.ResponseWriter, r *http.Request) {
		loggedOut = r.Header.Get("Authorization") == "Bearer pvs-session-1"
		w.WriteHeader(http.StatusNoContent)
	})

	_, errOut, code := cli(t, "not-it\n", "login", "--user", "alice", "--password-stdin")
	if code != ExitFailure || !strings.Contains(errOut, "wrong user name or password") {
		t.Errorf("bad password: exit %d: %s", code, errOut)
	}
	out, errOut, code := cli(t, testPassword+"\n", "login", "--user", "alice", "--password-stdin")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := "Logged in as alice until " + expires.Local().Format(time.RFC3339) + "\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if strings.Contains(out+errOut, testPassword) || strings.Contains(out+errOut, "pvs-session-1") {
		t.Errorf("a secret was printed:\n%s\n%s", out, errOut)
	}
	cfg, err := loadConfigFile(path, true)
	if err != nil || cfg != (Config{Server: f.srv.URL, CAFile: "/etc/pv/ca.pem", Token: "pvs-session-1", Project: "web"}) {
		t.Errorf("config after login: %+v, %v", cfg, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v", st.Mode().Perm())
	}

	out, errOut, code = cli(t, "", "whoami")
	if code != 0 {
		t.Fatalf("whoami: exit %d: %s", code, errOut)
	}
	for _, s := range []string{"alice", "tok9", "project web, at most viewer", "Superadmin:", "no"} {
		if !strings.Contains(out, s) {
			t.Errorf("whoami lacks %q:\n%s", s, out)
		}
	}
	if i, j := strings.Index(out, "ops "), strings.Index(out, "web "); i < 0 || j < 0 || i > j {
		t.Errorf("roles table:\n%s", out)
	}
	if f.auth[len(f.auth)-1] != "Bearer pvs-session-1" {
		t.Errorf("whoami sent %q", f.auth[len(f.auth)-1])
	}
	if reqs := f.requests(); !strings.HasSuffix(reqs[len(reqs)-1], "project=web") {
		t.Errorf("the config's project was not sent: %v", reqs)
	}

	out, errOut, code = cli(t, "", "logout")
	if code != 0 || !loggedOut || !strings.Contains(out, "Logged out") {
		t.Fatalf("logout: exit %d, logged out %v: %s%s", code, loggedOut, out, errOut)
	}
	cfg, err = loadConfigFile(path, true)
	if err != nil || cfg != (Config{Server: f.srv.URL, CAFile: "/etc/pv/ca.pem", Project: "web"}) {
		t.Errorf("config after logout: %+v, %v", cfg, err)
	}
	if out, _, code := cli(t, "", "logout"); code != 0 || !strings.Contains(out, "Not logged in") {
		t.Errorf("second logout: exit %d: %s", code, out)
	}

	// A login against a server given on the command line saves it.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = cli(t, testPassword, "--server", f.srv.URL, "-o", "json", "login", "--user", "bob", "--password-stdin")
	var res loginResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.User != "bob" || !res.ExpiresAt.Equal(expires) {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if strings.Contains(out, "pvs-session-1") {
		t.Errorf("-o json printed the token: %s", out)
	}
	if cfg, err := loadConfigFile(path, true); err != nil || cfg != (Config{Server: f.srv.URL, Token: "pvs-session-1"}) {
		t.Errorf("config: %+v, %v", cfg, err)
	}

	// Without a terminal and without --password-stdin there is no way
	// to ask.
	if _, errOut, code := cli(t, "", "login", "--user", "alice"); code != ExitUsage || !strings.Contains(errOut, "--password-stdin") {
		t.Errorf("no terminal: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cli(t, "pw\n", "login", "--password-stdin"); code != ExitUsage || !strings.Contains(errOut, "--user") {
		t.Errorf("no user: exit %d: %s", code, errOut)
	}
}

func TestProjectInForce(t *testing.T) {
	dir := isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.VM]{Items: []api.VM{}})
	})
	f.HandleFunc("GET /v1/projects/{project}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("project") == "ghost" {
			reply(w, http.StatusNotFound, api.ErrorBody{Error: api.NotFound("project", "ghost")})
			return
		}
		reply(w, 200, api.Project{Meta: api.Meta{Name: r.PathValue("project")}})
	})
	last := func() string { r := f.requests(); return r[len(r)-1] }

	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "list"); code != 0 || last() != "GET /v1/vms" {
		t.Errorf("no project: exit %d, %s %s", code, last(), errOut)
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "project", "use", "ghost"); code != ExitFailure || !strings.Contains(errOut, `project "ghost" not found`) {
		t.Errorf("use ghost: exit %d: %s", code, errOut)
	}
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "project", "use", "web")
	if code != 0 || !strings.Contains(out, "project web") {
		t.Fatalf("use web: exit %d: %s", code, errOut)
	}
	path := filepath.Join(dir, "polyvisor", "config.yaml")
	if cfg, err := loadConfigFile(path, true); err != nil || cfg.Project != "web" {
		t.Errorf("config %+v, %v", cfg, err)
	}
	if _, _, code := cli(t, "", "--server", f.srv.URL, "vm", "list"); code != 0 || last() != "GET /v1/vms?project=web" {
		t.Errorf("from the config: %s", last())
	}
	t.Setenv(envProject, "ops")
	if _, _, code := cli(t, "", "--server", f.srv.URL, "vm", "list"); code != 0 || last() != "GET /v1/vms?project=ops" {
		t.Errorf("from the environment: %s", last())
	}
	if _, _, code := cli(t, "", "--server", f.srv.URL, "--project", "dev", "vm", "list"); code != 0 || last() != "GET /v1/vms?project=dev" {
		t.Errorf("from the flag: %s", last())
	}
	// The flag goes after the subcommand too.
	if _, _, code := cli(t, "", "--server", f.srv.URL, "vm", "list", "--project", "dev"); code != 0 || last() != "GET /v1/vms?project=dev" {
		t.Errorf("flag after the command: %s", last())
	}
	if _, _, code := cli(t, "", "--server", f.srv.URL, "vm", "list", "--all-projects"); code != 0 || last() != "GET /v1/vms?all-projects=true" {
		t.Errorf("--all-projects: %s", last())
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "list", "--all-projects", "--project", "dev"); code != ExitUsage ||
		!strings.Contains(errOut, "--all-projects") {
		t.Errorf("--all-projects with --project: exit %d: %s", code, errOut)
	}
}

func TestVMLeaseAndAllProjects(t *testing.T) {
	isolate(t)
	f := newFake(t)
	now := time.Now()
	leased := testVM("web1", api.PowerRunning)
	leased.Project = "web"
	leased.Spec.Lease = &api.Lease{ExpiresAt: now.Add(72*time.Hour - 30*time.Second), DeleteAt: now.Add(96*time.Hour - 30*time.Second)}
	expired := testVM("old1", api.PowerStopped)
	expired.Project = "ops"
	expired.Spec.Lease = &api.Lease{ExpiresAt: now.Add(-time.Hour), DeleteAt: now.Add(23*time.Hour + 30*time.Second), StoppedAt: now.Add(-time.Hour)}
	f.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.VM]{Items: []api.VM{leased, expired}})
	})
	f.HandleFunc("GET /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, leased) })
	var lease api.LeaseSet
	f.HandleFunc("PUT /v1/vms/{name}/lease", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&lease)
		vm := leased
		if lease.DurationSeconds == 0 {
			vm.Spec.Lease = nil
		}
		reply(w, 200, vm)
	})
	var create api.VMCreate
	f.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&create)
		reply(w, http.StatusAccepted, api.Operation{ID: "op1", Status: api.OpPending})
	})

	out, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "list", "--all-projects")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "PROJECT ") || !strings.HasSuffix(lines[0], "LEASE") ||
		!strings.HasPrefix(lines[1], "web ") || !strings.HasSuffix(lines[1], "expires in 71h59m, deleted 24h later") ||
		!strings.HasPrefix(lines[2], "ops ") || !strings.HasSuffix(lines[2], "expired, stopped; deleted in 23h") {
		t.Errorf("table:\n%s", out)
	}

	out, _, _ = cli(t, "", "--server", f.srv.URL, "vm", "show", "web1")
	if !strings.Contains(out, "Lease:") || !strings.Contains(out, "expires in 71h59m, deleted 24h later") || !strings.Contains(out, "Project:") {
		t.Errorf("show:\n%s", out)
	}

	out, errOut, code = cli(t, "", "--server", f.srv.URL, "vm", "lease", "web1", "3d")
	if code != 0 || lease.DurationSeconds != 3*86400 || !strings.Contains(out, "VM web1 expires in") {
		t.Errorf("lease 3d: exit %d, sent %d: %s%s", code, lease.DurationSeconds, out, errOut)
	}
	out, _, code = cli(t, "", "--server", f.srv.URL, "vm", "lease", "web1", "0")
	if code != 0 || lease.DurationSeconds != 0 || !strings.Contains(out, "has no lease") {
		t.Errorf("lease 0: exit %d: %s", code, out)
	}
	for _, bad := range []string{"soon", "-1h"} {
		if _, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "lease", "--", "web1", bad); code != ExitUsage || !strings.Contains(errOut, "DURATION") {
			t.Errorf("lease %s: exit %d: %s", bad, code, errOut)
		}
	}

	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "create", "web2", "--lease", "72h", "--no-wait"); code != 0 || create.LeaseSeconds != 72*3600 {
		t.Errorf("create --lease: exit %d, lease %d: %s", code, create.LeaseSeconds, errOut)
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "create", "web2", "--lease", "-2h"); code != ExitUsage || !strings.Contains(errOut, "--lease") {
		t.Errorf("create --lease -2h: exit %d: %s", code, errOut)
	}
}

func TestImageAndOpAllProjectsAndPublic(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Image]{Items: []api.Image{{Meta: api.Meta{Name: "debian", Project: "ops"}, Kind: "disk", State: "ready", Public: true}}})
	})
	f.HandleFunc("GET /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Operation]{Items: []api.Operation{{ID: "op1", Kind: api.OpVMStart, Status: api.OpSucceeded,
			Target: api.Ref{Kind: "vm", Name: "web1", Project: "web"}}}})
	})
	var imported api.ImageCreate
	f.HandleFunc("POST /v1/images", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&imported)
		reply(w, http.StatusAccepted, api.Operation{ID: "op-img", Status: api.OpPending})
	})
	out, _, code := cli(t, "", "--server", f.srv.URL, "image", "list", "--all-projects")
	if fields := strings.Fields(strings.Split(out, "\n")[1]); code != 0 || fields[0] != "ops" || fields[1] != "debian" {
		t.Errorf("image list:\n%s", out)
	}
	out, _, code = cli(t, "", "--server", f.srv.URL, "op", "list", "--all-projects")
	if fields := strings.Fields(strings.Split(out, "\n")[1]); code != 0 || fields[0] != "web" || fields[1] != "op1" {
		t.Errorf("op list:\n%s", out)
	}
	out, _, code = cli(t, "", "--server", f.srv.URL, "op", "list")
	if code != 0 || strings.Contains(out, "PROJECT") {
		t.Errorf("op list without --all-projects:\n%s", out)
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "import", "https://example.com/a.qcow2", "--public", "--no-wait"); code != 0 || !imported.Public {
		t.Errorf("--public: exit %d, %+v: %s", code, imported, errOut)
	}
	file := filepath.Join(t.TempDir(), "b.qcow2")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "import", file, "--public", "--no-wait"); code != ExitUsage || !strings.Contains(errOut, "image set") {
		t.Errorf("--public upload without waiting: exit %d: %s", code, errOut)
	}
}
