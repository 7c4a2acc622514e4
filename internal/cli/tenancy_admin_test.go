package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// decode reads a request body into v, refusing unknown fields.
func decode(t *testing.T, r *http.Request, v any) {
	t.Helper()
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Errorf("decode %s %s: %v", r.Method, r.URL.Path, err)
	}
}

func TestProjectCommands(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var created api.ProjectCreate
	var updated map[string]any
	stored := api.Project{
		Meta: api.Meta{Name: "web", CreatedAt: time.Now().Add(-time.Hour)},
		Spec: api.ProjectSpec{Description: "web team", MaxLeaseSeconds: 72 * 3600,
			Quota:   api.Quota{VCPUs: ptr(32), MemoryMiB: ptr(65536)},
			Members: map[string]string{"bob": "viewer", "alice": "admin"}},
		Status: api.ProjectStatus{Usage: api.Usage{VCPUs: 4, MemoryMiB: 8192, DiskMiB: 20480, VMs: 2}},
	}
	f.HandleFunc("POST /v1/projects", func(w http.ResponseWriter, r *http.Request) {
		decode(t, r, &created)
		reply(w, http.StatusCreated, stored)
	})
	f.HandleFunc("PATCH /v1/projects/{project}", func(w http.ResponseWriter, r *http.Request) {
		updated = nil
		_ = json.NewDecoder(r.Body).Decode(&updated)
		reply(w, 200, stored)
	})
	f.HandleFunc("GET /v1/projects/{project}", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, stored) })
	f.HandleFunc("GET /v1/projects", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Project]{Items: []api.Project{stored}})
	})
	deleted := ""
	f.HandleFunc("DELETE /v1/projects/{project}", func(w http.ResponseWriter, r *http.Request) {
		deleted = r.PathValue("project")
		w.WriteHeader(http.StatusNoContent)
	})
	srv := []string{"--server", f.srv.URL}
	run := func(args ...string) (string, string, int) {
		return cli(t, "", append(append([]string{}, srv...), args...)...)
	}

	out, errOut, code := run("project", "create", "web", "--description", "web team", "--max-lease", "72h", "--lease-grace", "2d",
		"--vcpus", "32", "--memory", "64G", "--disk", "1T", "--vms", "20", "--label", "team=web")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	want := api.ProjectCreate{Name: "web", Description: "web team", Labels: map[string]string{"team": "web"},
		Quota:           api.Quota{VCPUs: ptr(32), MemoryMiB: ptr(65536), DiskMiB: ptr(1 << 20), VMs: ptr(20)},
		MaxLeaseSeconds: 72 * 3600, LeaseGraceSeconds: 48 * 3600}
	gb, _ := json.Marshal(created)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("create sent %s, want %s", gb, wb)
	}
	for _, s := range []string{"Max lease:", "72h", "24h (default)", "alice", "admin", "RESOURCE", "unlimited", "28"} {
		if !strings.Contains(out, s) {
			t.Errorf("show lacks %q:\n%s", s, out)
		}
	}
	if strings.Index(out, "alice") > strings.Index(out, "bob") {
		t.Errorf("members are not sorted:\n%s", out)
	}

	if _, errOut, code := run("project", "update", "web", "--max-lease", "0", "--description", ""); code != 0 {
		t.Fatalf("update: exit %d: %s", code, errOut)
	}
	if len(updated) != 2 || updated["maxLeaseSeconds"] != 0.0 || updated["description"] != "" {
		t.Errorf("update sent %v", updated)
	}
	if _, errOut, code := run("project", "update", "web"); code != ExitUsage || !strings.Contains(errOut, "--max-lease") {
		t.Errorf("update without flags: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("project", "create", "x", "--max-lease", "soon"); code != ExitUsage || !strings.Contains(errOut, "--max-lease") {
		t.Errorf("bad --max-lease: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("project", "create", "x", "--vcpus", "-1"); code != ExitUsage || !strings.Contains(errOut, "--vcpus") {
		t.Errorf("bad --vcpus: exit %d: %s", code, errOut)
	}

	out, _, code = run("project", "list")
	if fields := strings.Fields(strings.Split(out, "\n")[1]); code != 0 || strings.Join(fields[:7], " ") != "web 2 4/32 8G/64G 20G 2 72h" {
		t.Errorf("list:\n%s", out)
	}
	out, _, code = run("-o", "json", "project", "show", "web")
	var p api.Project
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || p.Name != "web" {
		t.Errorf("show -o json: %s", out)
	}
	if out, _, code := run("project", "delete", "web"); code != 0 || deleted != "web" || !strings.Contains(out, "Deleted project web") {
		t.Errorf("delete: exit %d: %s", code, out)
	}
}

func TestQuotaCommands(t *testing.T) {
	isolate(t)
	f := newFake(t)
	report := api.QuotaReport{Project: "web", Limits: api.Quota{VCPUs: ptr(16), DiskMiB: ptr(102400), VMs: ptr(5)},
		Usage: api.Usage{VCPUs: 4, MemoryMiB: 4096, DiskMiB: 20480, VMs: 2}}
	var put api.Quota
	var putPath string
	f.HandleFunc("GET /v1/projects/{project}/quota", func(w http.ResponseWriter, r *http.Request) {
		report.Project = r.PathValue("project")
		reply(w, 200, report)
	})
	f.HandleFunc("PUT /v1/projects/{project}/quota", func(w http.ResponseWriter, r *http.Request) {
		putPath = r.URL.Path
		put = api.Quota{}
		decode(t, r, &put)
		reply(w, 200, api.QuotaReport{Project: r.PathValue("project"), Limits: put, Usage: report.Usage})
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "quota", "show", "--project", "web")
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"vcpus 4 16 12", "memory 4G unlimited -", "disk 20G 100G 80G", "vms 2 5 3"} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.Join(strings.Fields(l), " ") == want {
				found = true
			}
		}
		if !found {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if _, _, code := cli(t, "", "--server", f.srv.URL, "quota", "show"); code != 0 || report.Project != api.DefaultProject {
		t.Errorf("show without a project asked for %q", report.Project)
	}

	out, errOut, code = cli(t, "", "--server", f.srv.URL, "--project", "web", "-o", "json", "quota", "set",
		"--memory", "8G", "--vcpus", "32", "--unset", "disk,vms")
	if code != 0 {
		t.Fatalf("set: exit %d: %s", code, errOut)
	}
	if putPath != "/v1/projects/web/quota" || show(put)["vcpus"] != int64(32) || show(put)["memory"] != int64(8192) || len(show(put)) != 2 {
		t.Errorf("PUT %s %v", putPath, show(put))
	}
	var got api.QuotaReport
	if json.Unmarshal([]byte(out), &got) != nil || got.Project != "web" {
		t.Errorf("-o json: %s", out)
	}
	// The limits not named stay as they are.
	if _, _, code := cli(t, "", "--server", f.srv.URL, "quota", "set", "--vms", "9"); code != 0 ||
		show(put)["vcpus"] != int64(16) || show(put)["disk"] != int64(102400) || show(put)["vms"] != int64(9) {
		t.Errorf("set --vms: %v", show(put))
	}
	for _, args := range [][]string{{}, {"--unset", "ram"}, {"--vcpus", "2", "--unset", "vcpus"}, {"--memory", "lots"}} {
		_, errOut, code := cli(t, "", append([]string{"--server", f.srv.URL, "quota", "set"}, args...)...)
		if code != ExitUsage || !strings.Contains(errOut, "--") {
			t.Errorf("set %v: exit %d: %s", args, code, errOut)
		}
	}
}

func TestUserCommands(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var created api.UserCreate
	var updated api.UserUpdate
	var pw api.PasswordSet
	var pwUser string
	me := api.WhoAmI{Kind: "user", Name: "alice", Superadmin: true}
	f.HandleFunc("POST /v1/users", func(w http.ResponseWriter, r *http.Request) {
		created = api.UserCreate{}
		decode(t, r, &created)
		reply(w, http.StatusCreated, api.User{Meta: api.Meta{Name: created.Name}, HasPassword: created.Password != ""})
	})
	f.HandleFunc("PATCH /v1/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		updated = api.UserUpdate{}
		decode(t, r, &updated)
		reply(w, 200, api.User{Meta: api.Meta{Name: r.PathValue("user")}})
	})
	f.HandleFunc("GET /v1/users", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.User]{Items: []api.User{
			{Meta: api.Meta{Name: "bob"}, Disabled: true, Roles: map[string]string{"web": "viewer"}},
			{Meta: api.Meta{Name: "alice"}, Superadmin: true, HasPassword: true, Roles: map[string]string{"web": "admin", "ops": "member"}},
		}})
	})
	f.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, me) })
	hasPassword := true
	f.HandleFunc("GET /v1/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.User{Meta: api.Meta{Name: r.PathValue("user")}, HasPassword: hasPassword})
	})
	f.HandleFunc("PUT /v1/users/{user}/password", func(w http.ResponseWriter, r *http.Request) {
		pwUser = r.PathValue("user")
		pw = api.PasswordSet{}
		decode(t, r, &pw)
		w.WriteHeader(http.StatusNoContent)
	})
	srv := []string{"--server", f.srv.URL}
	run := func(stdin string, args ...string) (string, string, int) {
		return cli(t, stdin, append(append([]string{}, srv...), args...)...)
	}

	if _, errOut, code := run(testPassword+"\n", "user", "create", "carol", "--display-name", "Carol", "--superadmin", "--password-stdin"); code != 0 ||
		created != (api.UserCreate{Name: "carol", DisplayName: "Carol", Superadmin: true, Password: testPassword}) {
		t.Errorf("create: exit %d, %+v: %s", code, created, errOut)
	}
	if _, errOut, code := run("", "user", "create", "dave", "--no-password"); code != 0 || created.Password != "" {
		t.Errorf("create --no-password: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("", "user", "create", "erin"); code != ExitUsage || !strings.Contains(errOut, "--password-stdin") {
		t.Errorf("create without a terminal: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("\n", "user", "create", "erin", "--password-stdin"); code != ExitUsage || !strings.Contains(errOut, "--password-stdin") {
		t.Errorf("create with an empty password: exit %d: %s", code, errOut)
	}

	out, _, code := run("", "user", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "alice") || !strings.Contains(lines[1], "ops=member,web=admin") ||
		!strings.Contains(lines[2], "disabled,no-password") {
		t.Errorf("list:\n%s", out)
	}

	if _, errOut, code := run("", "user", "update", "bob", "--enable", "--superadmin=false"); code != 0 ||
		updated.Disabled == nil || *updated.Disabled || updated.Superadmin == nil || *updated.Superadmin || updated.DisplayName != nil {
		t.Errorf("update: exit %d, %+v: %s", code, updated, errOut)
	}
	if _, _, code := run("", "user", "update", "bob", "--disable"); code != 0 || updated.Disabled == nil || !*updated.Disabled || updated.Superadmin != nil {
		t.Errorf("update --disable: %+v", updated)
	}
	if _, errOut, code := run("", "user", "update", "bob", "--disable", "--enable"); code != ExitUsage || !strings.Contains(errOut, "--disable") {
		t.Errorf("--disable --enable: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("", "user", "update", "bob"); code != ExitUsage {
		t.Errorf("update without flags: exit %d: %s", code, errOut)
	}

	// One's own password: the current one, then the new one.
	if out, errOut, code := run("old-pw\nnew-pw\n", "user", "passwd", "--password-stdin"); code != 0 || pwUser != "alice" ||
		pw != (api.PasswordSet{Current: "old-pw", Password: "new-pw"}) || strings.Contains(out+errOut, "new-pw") {
		t.Errorf("passwd: exit %d, %s %+v: %s%s", code, pwUser, pw, out, errOut)
	}
	// Another's, by a superadmin: the new one only.
	if _, errOut, code := run("bobs-pw\n", "user", "passwd", "bob", "--password-stdin"); code != 0 || pwUser != "bob" ||
		pw != (api.PasswordSet{Password: "bobs-pw"}) {
		t.Errorf("passwd bob: exit %d, %+v: %s", code, pw, errOut)
	}
	if _, errOut, code := run("old-pw\n", "user", "passwd", "--password-stdin"); code != ExitUsage || !strings.Contains(errOut, "new password") {
		t.Errorf("passwd without a new password: exit %d: %s", code, errOut)
	}
	// One's own first password: a superadmin gives only the new one...
	hasPassword = false
	if _, errOut, code := run("first-pw\n", "user", "passwd", "--password-stdin"); code != 0 || pwUser != "alice" ||
		pw != (api.PasswordSet{Password: "first-pw"}) {
		t.Errorf("first passwd of a superadmin: exit %d, %+v: %s", code, pw, errOut)
	}
	me.Superadmin = false
	if _, errOut, code := run("x\n", "user", "passwd", "bob", "--password-stdin"); code != ExitFailure || !strings.Contains(errOut, "superadmin") {
		t.Errorf("passwd bob by a user: exit %d: %s", code, errOut)
	}
	// ...and a user is told a superadmin sets it.
	pwUser = ""
	if _, errOut, code := run("first-pw\n", "user", "passwd", "--password-stdin"); code != ExitFailure || pwUser != "" ||
		!strings.Contains(errOut, "no password yet") || !strings.Contains(errOut, "superadmin") {
		t.Errorf("first passwd of a user: exit %d, sent for %q: %s", code, pwUser, errOut)
	}
}

func TestTokenAndRoleCommands(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var created api.TokenCreate
	f.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		created = api.TokenCreate{}
		decode(t, r, &created)
		tok := api.TokenCreated{Token: api.Token{ID: "tok1", Name: created.Name, Kind: api.TokenAPI, User: "alice",
			Project: created.Project, Role: created.Role, CreatedAt: time.Now()}, Secret: "pvt-secret-1"}
		reply(w, http.StatusCreated, tok)
	})
	var listUser string
	f.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		listUser = r.URL.Query().Get("user")
		reply(w, 200, api.List[api.Token]{Items: []api.Token{{ID: "tok1", Name: "ci", Kind: api.TokenAPI, User: "alice",
			Project: "web", Role: "operator", ExpiresAt: time.Now().Add(-time.Hour)}}})
	})
	revoked := ""
	f.HandleFunc("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		revoked = r.PathValue("id")
		w.WriteHeader(http.StatusNoContent)
	})
	f.HandleFunc("GET /v1/roles", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Role]{Items: []api.Role{{Name: "viewer", Permissions: []string{"vm.read", "image.read"}}}})
	})
	var member, memberPath string
	f.HandleFunc("PUT /v1/projects/{project}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		memberPath = r.URL.Path
		var m api.MemberSet
		decode(t, r, &m)
		member = m.Role
		w.WriteHeader(http.StatusNoContent)
	})
	f.HandleFunc("DELETE /v1/projects/{project}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		memberPath = r.URL.Path
		w.WriteHeader(http.StatusNoContent)
	})
	srv := []string{"--server", f.srv.URL}
	run := func(args ...string) (string, string, int) {
		return cli(t, "", append(append([]string{}, srv...), args...)...)
	}

	out, errOut, code := run("token", "create", "ci", "--project", "web", "--role", "operator", "--expires", "30d")
	if code != 0 || created != (api.TokenCreate{Name: "ci", Project: "web", Role: "operator", ExpiresInSeconds: 30 * 86400}) {
		t.Fatalf("create: exit %d, %+v: %s", code, created, errOut)
	}
	if !strings.Contains(out, "pvt-secret-1") || !strings.Contains(out, "store it now; it is not shown again") || !strings.Contains(out, "at most operator") {
		t.Errorf("create:\n%s", out)
	}
	// Not narrowed without --project or --role, even with a project in
	// force from the environment.
	t.Setenv(envProject, "ops")
	if _, _, code := run("token", "create", "all"); code != 0 || created != (api.TokenCreate{Name: "all"}) {
		t.Errorf("create without narrowing: %+v", created)
	}
	// --role narrows to the project in force.
	if _, _, code := run("token", "create", "ro", "--role", "viewer"); code != 0 || created.Project != "ops" || created.Role != "viewer" {
		t.Errorf("create --role: %+v", created)
	}
	t.Setenv(envProject, "")
	if _, errOut, code := run("token", "create", "x", "--role", "root"); code != ExitUsage || !strings.Contains(errOut, "--role") {
		t.Errorf("bad --role: exit %d: %s", code, errOut)
	}
	out, _, code = run("-o", "json", "token", "create", "j")
	var tc api.TokenCreated
	if code != 0 || json.Unmarshal([]byte(out), &tc) != nil || tc.Secret != "pvt-secret-1" {
		t.Errorf("create -o json: %s", out)
	}

	out, _, code = run("token", "list", "--user", "alice")
	if code != 0 || listUser != "alice" || !strings.Contains(out, "expired") || !strings.Contains(out, "operator") {
		t.Errorf("list (user %q):\n%s", listUser, out)
	}
	if _, _, code := run("token", "revoke", "tok1"); code != 0 || revoked != "tok1" {
		t.Errorf("revoke: %q", revoked)
	}

	out, _, code = run("role", "list")
	if code != 0 || !strings.Contains(out, "vm.read, image.read") {
		t.Errorf("role list:\n%s", out)
	}
	if out, errOut, code := run("role", "grant", "bob", "member", "--project", "web"); code != 0 || member != "member" ||
		memberPath != "/v1/projects/web/members/bob" || !strings.Contains(out, "bob is now member in project web") {
		t.Errorf("grant: exit %d, %s %s: %s%s", code, memberPath, member, out, errOut)
	}
	if _, _, code := run("role", "revoke", "bob"); code != 0 || memberPath != "/v1/projects/default/members/bob" {
		t.Errorf("revoke in the default project: %s", memberPath)
	}
	if _, errOut, code := run("role", "grant", "bob", "boss"); code != ExitUsage || !strings.Contains(errOut, "ROLE") || !strings.Contains(errOut, "viewer") {
		t.Errorf("grant a bad role: exit %d: %s", code, errOut)
	}
}

func TestAuditCommands(t *testing.T) {
	isolate(t)
	f := newFake(t)
	rec := api.AuditRecord{ID: "a1", Time: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), Actor: api.AuditActor{Kind: "user", Name: "alice"},
		Action: "vm.start", Project: "web", Resource: api.Ref{Kind: "vm", Name: "web1"}, OperationID: "op7", Outcome: api.AuditSuccess, Status: 202}
	var query string
	f.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		if r.URL.Query().Get("format") == "jsonl" {
			w.Header().Set("Content-Type", "application/x-ndjson")
			for range 3 {
				b, _ := json.Marshal(rec)
				_, _ = w.Write(append(b, '\n'))
			}
			return
		}
		reply(w, 200, api.List[api.AuditRecord]{Items: []api.AuditRecord{rec}})
	})
	srv := []string{"--server", f.srv.URL}
	run := func(args ...string) (string, string, int) {
		return cli(t, "", append(append([]string{}, srv...), args...)...)
	}

	out, errOut, code := run("audit", "list", "--since", "2h", "--outcome", "success", "--resource", "vm/web1", "--limit", "10")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "TIME ACTOR ACTION RESOURCE PROJECT OUTCOME STATUS OPERATION" ||
		!strings.HasSuffix(strings.Join(strings.Fields(lines[1]), " "), "alice vm.start vm/web1 web success 202 op7") {
		t.Errorf("table:\n%s", out)
	}
	for _, s := range []string{"all-projects=true", "outcome=success", "resource=vm%2Fweb1", "limit=10", "since="} {
		if !strings.Contains(query, s) {
			t.Errorf("query %s lacks %s", query, s)
		}
	}
	if _, _, code := run("--project", "web", "audit", "list"); code != 0 || query != "project=web" {
		t.Errorf("--project: query %s", query)
	}
	if _, _, code := run("audit", "list", "--all-projects=false"); code != 0 || query != "project=default" {
		t.Errorf("--all-projects=false: query %s", query)
	}
	if _, errOut, code := run("audit", "list", "--since", "last week"); code != ExitUsage || !strings.Contains(errOut, "--since") {
		t.Errorf("bad --since: exit %d: %s", code, errOut)
	}

	out, _, code = run("audit", "export", "--actor", "alice")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(query, "format=jsonl") || !strings.Contains(query, "actor=alice") {
		t.Errorf("export to stdout (query %s):\n%s", query, out)
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	out, errOut, code = run("audit", "export", "--file", file)
	if code != 0 || out != "" || !strings.Contains(errOut, "Wrote 3 audit records") {
		t.Fatalf("export --file: exit %d: %s%s", code, out, errOut)
	}
	b, err := os.ReadFile(file)
	if err != nil || bytes.Count(b, []byte{'\n'}) != 3 {
		t.Fatalf("file: %v\n%s", err, b)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", st.Mode().Perm())
	}
	var got api.AuditRecord
	if err := json.NewDecoder(io.LimitReader(bytes.NewReader(b), int64(bytes.IndexByte(b, '\n')+1))).Decode(&got); err != nil || got.ID != "a1" {
		t.Errorf("first line: %+v, %v", got, err)
	}
}
