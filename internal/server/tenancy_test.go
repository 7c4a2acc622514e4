package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

func statusOfErr(err error) int {
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// TestTenantIsolation: a member of project pa can neither list, get, act
// on, open the console of, nor learn of anything in pb: every attempt is
// a 404, as for something that does not exist.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	member := e.as(api.RoleMember, "pa")
	// The same name in both projects: names are per project, so creating
	// "vm1" in pa says nothing about pb's "vm1"...
	// ...and a new name taken in pb is free in pa.
	e.createVM(ctx, e.super.WithProject("pb"), "secret-b", "img")
	if op := e.createVM(ctx, member, "secret-b", "img"); op == nil {
		t.Fatal("no operation")
	}

	// Lists in pa, and across all projects, show pa only.
	all := member.WithProject("")
	vms, err := all.ListAllVMs(ctx, api.ListOptions{AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Project != "pa" {
			t.Errorf("member of pa lists vm %s of project %s", vm.Name, vm.Project)
		}
	}
	if len(vms) != 2 {
		t.Errorf("member of pa lists %d vms, want 2 (vm1, secret-b)", len(vms))
	}
	ops, err := all.ListAllOperations(ctx, api.ListOptions{AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Target.Project != "pa" {
			t.Errorf("member of pa lists operation %s on %s/%s", op.ID, op.Target.Project, op.Target.Name)
		}
	}
	imgs, err := all.ListAllImages(ctx, api.ListOptions{AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if img.Project != "pa" {
			t.Errorf("member of pa lists image %s of project %s", img.Name, img.Project)
		}
	}
	projects, err := member.ListProjects(ctx, api.ListOptions{})
	if err != nil || len(projects) != 1 || projects[0].Name != "pa" {
		t.Errorf("member of pa lists projects %+v (%v), want pa only", projects, err)
	}

	// Everything of pb, by name or by id, is not found.
	foreign := member.WithProject("pb")
	bOps, err := e.super.WithProject("pb").ListAllOperations(ctx, api.ListOptions{})
	if err != nil || len(bOps) == 0 {
		t.Fatalf("pb's operations: %v %v", bOps, err)
	}
	checks := map[string]error{}
	_, checks["list vms"] = foreign.ListVMs(ctx, api.ListOptions{})
	_, checks["get vm"] = foreign.GetVM(ctx, "secret-b")
	_, checks["start vm"] = foreign.StartVM(ctx, "secret-b")
	_, checks["delete vm"] = foreign.DeleteVM(ctx, "secret-b", false)
	_, checks["console"] = foreign.Console(ctx, "secret-b", "serial")
	_, checks["console log"] = foreign.ConsoleLog(ctx, "secret-b", 100)
	_, checks["get image"] = foreign.GetImage(ctx, "img")
	_, checks["get project"] = member.GetProject(ctx, "pb")
	_, checks["quota"] = member.GetQuota(ctx, "pb")
	_, checks["members"] = member.ListMembers(ctx, "pb")
	_, checks["operation"] = member.GetOperation(ctx, bOps[0].ID)
	_, checks["cancel operation"] = member.CancelOperation(ctx, bOps[0].ID)
	_, checks["audit"] = member.WithProject("pb").ListAudit(ctx, api.AuditQuery{Project: "pb"})
	_, checks["missing project"] = member.GetProject(ctx, "no-such-project")
	for what, err := range checks {
		if statusOfErr(err) != http.StatusNotFound {
			t.Errorf("%s in pb: %v, want 404", what, err)
		}
	}
	// The error for pb reads as for a project that does not exist.
	_, e1 := member.GetProject(ctx, "pb")
	_, e2 := member.GetProject(ctx, "no-such-project")
	if strings.ReplaceAll(e1.Error(), "pb", "X") != strings.ReplaceAll(e2.Error(), "no-such-project", "X") {
		t.Errorf("errors differ for a hidden and a missing project:\n  %v\n  %v", e1, e2)
	}

	// The event stream of a pa member carries nothing of pb. The stream
	// first shows it delivers: the VM and operation events of a create in
	// pa. Then pb changes, then pa creates again; each collection's events
	// come in order, so pb's, had they leaked, would come before the second
	// create's.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	events, errs := member.Events(sctx, api.EventVM, api.EventOperation)
	untilCreated := func(name string) {
		t.Helper()
		sawVM, sawOp := false, false
		for !sawVM || !sawOp {
			ev, ok := <-events
			if !ok {
				t.Fatalf("the event stream ended before the events of pa's %s (vm %v, operation %v): %v", name, sawVM, sawOp, <-errs)
			}
			if ev.Object.Project != "pa" {
				t.Errorf("member of pa got an event of %s/%s", ev.Object.Project, ev.Object.Name)
			}
			sawVM = sawVM || ev.VM != nil && ev.VM.Project == "pa" && ev.VM.Name == name
			sawOp = sawOp || ev.Operation != nil && ev.Operation.Target.Project == "pa" && ev.Operation.Target.Name == name
		}
	}
	e.createVM(ctx, member, "mark-1", "img")
	untilCreated("mark-1")
	e.createVM(ctx, e.super.WithProject("pb"), "leak-b", "img")
	if _, err := e.super.WithProject("pb").StartVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	e.createVM(ctx, member, "mark-2", "img")
	untilCreated("mark-2")
}

// TestTokens: expired, revoked and wrong-scope tokens are refused, and no
// token or password is ever seen in clear in answers, logs, the store or
// the audit log.
func TestTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	var seen bytes.Buffer // every answer the test reads
	record := func(v any) { b, _ := json.Marshal(v); seen.Write(b) }

	alice := e.as(api.RoleMember, "pa")
	short, err := alice.CreateToken(ctx, api.TokenCreate{Name: "short", ExpiresInSeconds: 3})
	if err != nil {
		t.Fatal(err)
	}
	// The short token works while it lives (3 s: far longer than the
	// request takes) and is refused once it has expired (below).
	if _, err := e.client(short.Secret, "pa").ListVMs(ctx, api.ListOptions{}); err != nil {
		t.Errorf("a token refused before its expiry at %s (now %s): %v", short.ExpiresAt.Format(time.StampMilli), time.Now().Format(time.StampMilli), err)
	}
	revoked, err := alice.CreateToken(ctx, api.TokenCreate{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	narrow, err := alice.CreateToken(ctx, api.TokenCreate{Name: "ro", Project: "pa", Role: api.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{short.Secret, revoked.Secret, narrow.Secret, "pw-r-member-secret", "pw-nobody-secret"}
	for _, tok := range []*api.TokenCreated{short, revoked, narrow} {
		if tok.Secret == "" || !strings.HasPrefix(tok.Secret, "pva_") {
			t.Fatalf("token secret %q", tok.Secret)
		}
	}
	list, err := alice.ListTokens(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	record(list)
	if len(list) != 4 { // the env's own token and the three above
		t.Errorf("alice lists %d tokens, want 4", len(list))
	}

	// A revoked token is refused from the moment the revoke returns.
	rc := e.client(revoked.Secret, "pa")
	if _, err := rc.ListVMs(ctx, api.ListOptions{}); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}
	if err := alice.RevokeToken(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.ListVMs(ctx, api.ListOptions{}); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("revoked token: %v, want 401", err)
	}
	// Someone else's token cannot be revoked, or even seen.
	if err := e.as("nobody", "").RevokeToken(ctx, narrow.ID); statusOfErr(err) != http.StatusNotFound {
		t.Errorf("revoking another's token: %v, want 404", err)
	}

	// The narrowed token reads pa, may not act there, and sees nothing else.
	nc := e.client(narrow.Secret, "pa")
	if _, err := nc.GetVM(ctx, "vm1"); err != nil {
		t.Errorf("narrowed token reading its project: %v", err)
	}
	if _, err := nc.StartVM(ctx, "vm1"); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed viewer token starting a vm: %v, want 403", err)
	}
	if _, err := nc.CreateToken(ctx, api.TokenCreate{Name: "escalate"}); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed token making a token: %v, want 403", err)
	}
	if err := nc.RevokeToken(ctx, short.ID); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed token revoking its user's other token: %v, want 403", err)
	}
	// A superadmin's token narrowed to pa is no superadmin.
	sn, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "pa-op", Project: "pa", Role: api.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, sn.Secret)
	snc := e.client(sn.Secret, "pb")
	if _, err := snc.GetVM(ctx, "vm1"); statusOfErr(err) != http.StatusNotFound {
		t.Errorf("superadmin token narrowed to pa reading pb: %v, want 404", err)
	}
	if _, err := snc.ListUsers(ctx); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed superadmin token listing users: %v, want 403", err)
	}

	// The expired token is refused once its time is over.
	time.Sleep(time.Until(short.ExpiresAt) + 100*time.Millisecond)
	if _, err := e.client(short.Secret, "pa").ListVMs(ctx, api.ListOptions{}); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("expired token: %v, want 401", err)
	}
	// A token of a disabled user is refused.
	if _, err := e.super.UpdateUser(ctx, "nobody", api.UserUpdate{Disabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.as("nobody", "").WhoAmI(ctx); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("disabled user's token: %v, want 401", err)
	}
	// Garbage and tampered tokens.
	// The tampered one changes the secret's last digit, whatever it was.
	tampered := narrow.Secret[:len(narrow.Secret)-1] + "0"
	if strings.HasSuffix(narrow.Secret, "0") {
		tampered = narrow.Secret[:len(narrow.Secret)-1] + "1"
	}
	for _, bad := range []string{"x", tampered, strings.Replace(narrow.Secret, "pva_", "pvh_", 1)} {
		if _, err := e.client(bad, "pa").ListVMs(ctx, api.ListOptions{}); statusOfErr(err) != http.StatusUnauthorized {
			t.Errorf("token %q: %v, want 401", bad, err)
		}
	}
	// Passwords and token secrets appear nowhere in clear.
	users, _ := e.super.ListUsers(ctx)
	record(users)
	all, _ := e.super.ListTokens(ctx, "")
	record(all)
	var audit bytes.Buffer
	if err := e.super.ExportAudit(ctx, api.AuditQuery{}, &audit); err != nil {
		t.Fatal(err)
	}
	seen.Write(audit.Bytes())
	e.s.Close()
	for _, s := range secrets {
		if strings.Contains(seen.String(), s) {
			t.Errorf("secret %q appears in an API answer", s[:12])
		}
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("secret %q appears in the server log", s[:12])
		}
	}
	for _, f := range scanFiles(t, e.dataDir, secrets) {
		t.Errorf("secret in clear on disk: %s", f)
	}
}

func ptr[T any](v T) *T { return &v }

// TestQuotaRace: 20 creates at once that together exceed the quota;
// exactly the number the quota allows succeed.
func TestQuotaRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VMs: ptr[int64](6), VCPUs: ptr[int64](100)}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, over := 0, 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := member.CreateVM(ctx, api.VMCreate{Name: "q" + string(rune('a'+i)), VCPUs: 1, MemoryMiB: 64, Host: "h1",
				Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
			mu.Lock()
			defer mu.Unlock()
			var se *client.StatusError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &se) && se.Status == http.StatusUnprocessableEntity && strings.Contains(err.Error(), "quota"):
				over++
			default:
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	// vm1 already counts: 5 more fit under 6.
	if ok != 5 || over != 15 {
		t.Errorf("%d creates passed and %d were over quota; want 5 and 15", ok, over)
	}
	q, err := member.GetQuota(ctx, "pa")
	if err != nil {
		t.Fatal(err)
	}
	if q.Usage.VMs != 6 || q.Usage.VCPUs != 6 || q.Usage.DiskMiB != 6 {
		t.Errorf("usage %+v, want 6 vms, 6 vcpus, 6 MiB of disk", q.Usage)
	}
	// A resize over the vcpu quota is refused too.
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VCPUs: ptr[int64](8)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.vms.Update(ctx, "pa/vm1", stopped(e.s, "pa/vm1"), 0); err != nil {
		t.Fatal(err)
	}
	_, err = member.ReconfigureVM(ctx, "vm1", api.VMReconfigure{VCPUs: 4}, client.VMActionOptions{})
	if statusOfErr(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "vcpus") {
		t.Errorf("resize over quota: %v, want 422 naming vcpus", err)
	}
	// Two resizes at once that together pass the quota: one gets in.
	vms, err := member.ListAllVMs(ctx, api.ListOptions{})
	if err != nil || len(vms) < 3 {
		t.Fatalf("vms: %d %v", len(vms), err)
	}
	errs := make([]error, 2)
	var rw sync.WaitGroup
	for i := range errs {
		rw.Add(1)
		go func() {
			defer rw.Done()
			_, errs[i] = member.ReconfigureVM(ctx, vms[i+1].Name, api.VMReconfigure{VCPUs: 3}, client.VMActionOptions{})
		}()
	}
	rw.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("two racing resizes of +2 vcpus under 2 left: %v / %v, want exactly one through", errs[0], errs[1])
	}
	if q, _ := member.GetQuota(ctx, "pa"); q == nil || q.Usage.VCPUs != 8 {
		t.Errorf("usage after the resizes: %+v, want 8 vcpus counting the queued resize", q)
	}
}

// stopped returns a copy of a VM whose desired state is stopped.
func stopped(s *Server, key string) *api.VM {
	vm, _ := s.vms.Get(key)
	next := *vm
	next.Spec.PowerState = api.PowerStopped
	return &next
}

// TestLogin: sessions work until logout; repeated wrong passwords are
// throttled; an unknown user and a wrong password get the same answer.
func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	anon := e.client("", "")
	s, err := anon.Login(ctx, "r-viewer", "pw-r-viewer-secret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Token, "pvs_") || time.Until(s.ExpiresAt) < time.Hour {
		t.Errorf("session %+v", s)
	}
	sc := e.client(s.Token, "pa")
	if w, err := sc.WhoAmI(ctx); err != nil || w.Name != "r-viewer" || w.Roles["pa"] != api.RoleViewer {
		t.Errorf("whoami with the session: %+v %v", w, err)
	}
	if err := sc.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.WhoAmI(ctx); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("session after logout: %v, want 401", err)
	}

	// Same answer for an unknown user and a wrong password.
	_, eUnknown := anon.Login(ctx, "nobody-here", "whatever-password")
	_, eWrong := anon.Login(ctx, "r-member", "wrong-password")
	if statusOfErr(eUnknown) != http.StatusUnauthorized || statusOfErr(eWrong) != http.StatusUnauthorized {
		t.Fatalf("failed logins: %v / %v, want 401", eUnknown, eWrong)
	}
	if strings.ReplaceAll(eUnknown.Error(), "nobody-here", "U") != strings.ReplaceAll(eWrong.Error(), "r-member", "U") {
		t.Errorf("unknown user and wrong password differ:\n  %v\n  %v", eUnknown, eWrong)
	}
	// After a few more failures the user is locked out from this address,
	// even with the right password, and told when to come back.
	for range 5 {
		_, _ = anon.Login(ctx, "r-member", "wrong-password")
	}
	_, err = anon.Login(ctx, "r-member", "pw-r-member-secret")
	if statusOfErr(err) != http.StatusTooManyRequests {
		t.Fatalf("login after 6 failures: %v, want 429", err)
	}
	// The audit log saw it all. (That the lockout holds for this user from
	// this address only is TestLoginLockoutIsPerAddressAndUser's.)
	recs, err := e.super.ListAudit(ctx, api.AuditQuery{Action: "auth.login", Actor: "r-member"})
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, r := range recs {
		if r.Outcome == api.AuditDenied {
			denied++
		}
	}
	if denied != 7 {
		t.Errorf("%d denied login records for r-member, want 7", denied)
	}
}

// TestRateLimit: a user over its rate gets 429 with Retry-After; others
// are not affected.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.s.limiter.Store(throttle.NewLimiter(1, 5, time.Minute))
	limited := 0
	for range 10 {
		status, _, _ := e.do("GET", "/v1/whoami", e.tokens[api.RoleViewer], nil)
		if status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 4 {
		t.Errorf("%d of 10 quick requests limited, want at least 4", limited)
	}
	if status, _, _ := e.do("GET", "/v1/whoami", e.tokens[api.RoleOperator], nil); status != http.StatusOK {
		t.Errorf("another user: %d, want 200", status)
	}
}

// TestProjectAdminBounds: a project admin edits its project and members,
// but not the quota or lease policy set for it.
func TestProjectAdminBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	admin := e.as(api.RoleAdmin, "pa")
	desc := "the web team"
	if p, err := admin.UpdateProject(ctx, "pa", api.ProjectUpdate{Description: &desc}); err != nil || p.Spec.Description != desc {
		t.Errorf("admin describing its project: %+v %v", p, err)
	}
	long := int64(10 * 365 * 24 * 3600)
	if _, err := admin.UpdateProject(ctx, "pa", api.ProjectUpdate{MaxLeaseSeconds: &long}); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("admin lifting its lease maximum: %v, want 403", err)
	}
	if _, err := admin.SetQuota(ctx, "pa", api.Quota{}); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("admin setting its quota: %v, want 403", err)
	}
	if err := admin.SetMember(ctx, "pa", "nobody", api.RoleViewer); err != nil {
		t.Errorf("admin adding a member: %v", err)
	}
	if err := admin.SetMember(ctx, "pb", "nobody", api.RoleViewer); statusOfErr(err) != http.StatusNotFound {
		t.Errorf("admin of pa adding a member to pb: %v, want 404", err)
	}
	if _, err := e.super.UpdateProject(ctx, "pa", api.ProjectUpdate{MaxLeaseSeconds: &long}); err != nil {
		t.Errorf("superadmin setting the lease maximum: %v", err)
	}
}
