package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// Every route that is let through while other changes are refused exists.
func TestReliefRoutesExist(t *testing.T) {
	t.Parallel()
	s := &Server{}
	have := map[string]bool{}
	for _, rt := range s.routes() {
		have[rt.method+" "+rt.path] = true
	}
	for k := range reliefRoutes {
		if !have[k] {
			t.Errorf("relief route %s is not a route", k)
		}
	}
}

// With the audit log's disk full and the server failing closed, changes
// are refused, but what takes access away still goes through, as a
// superadmin's token and as local root on the unix socket: revoking a
// token, disabling a user (not renaming it), removing a member, deleting
// a user. Their records are kept and written once the log can write,
// after the account of the outage. (Every non-GET was refused, token
// revocation included.)
func TestFailClosedLetsRevocationsThrough(t *testing.T) {
	t.Parallel()
	e, mnt := auditFS(t, true)
	ctx := context.Background()
	victims := map[string]string{}
	for _, u := range []string{"mallory", "trudy", "eve"} {
		victims[u] = e.member(ctx, u, api.RoleMember)
	}
	tokens, err := e.super.ListTokens(ctx, "mallory")
	if err != nil || len(tokens) != 1 {
		t.Fatalf("mallory's tokens: %v %v", tokens, err)
	}
	filler := fillTo(t, mnt, 0)
	createUntil(t, e.super, func(err error) bool { return statusOfErr(err) == http.StatusServiceUnavailable })

	root, err := client.New(client.Config{URL: "unix://" + filepath.Join(e.dataDir, "polyvisor.sock")})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.RevokeToken(ctx, tokens[0].ID); err != nil {
		t.Errorf("revoking a token as local root while failing closed: %v", err)
	}
	if _, err := e.client(victims["mallory"], "pa").ListVMs(ctx, api.ListOptions{}); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("the revoked token: %v, want 401", err)
	}
	yes := true
	if _, err := e.super.UpdateUser(ctx, "trudy", api.UserUpdate{Disabled: &yes}); err != nil {
		t.Errorf("disabling a user while failing closed: %v", err)
	}
	name := "Trudy"
	if _, err := e.super.UpdateUser(ctx, "eve", api.UserUpdate{DisplayName: &name}); statusOfErr(err) != http.StatusServiceUnavailable {
		t.Errorf("renaming a user while failing closed: %v, want 503", err)
	}
	if err := e.as(api.RoleAdmin, "pa").RemoveMember(ctx, "pa", "eve"); err != nil {
		t.Errorf("removing a member while failing closed: %v", err)
	}
	if err := e.super.DeleteUser(ctx, "eve"); err != nil {
		t.Errorf("deleting a user while failing closed: %v", err)
	}
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "still-refused"}); statusOfErr(err) != http.StatusServiceUnavailable {
		t.Errorf("a creation while failing closed: %v, want 503", err)
	}
	if !strings.Contains(e.logs.String(), "audit record kept in memory until the audit log can write") {
		t.Errorf("the server's log does not say the records are kept")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.s.audit.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	var order []string
	for _, r := range auditRecords(t, e.s) {
		switch {
		case r.Action == "audit.outage":
			order = append(order, "outage")
		case r.Outcome == api.AuditSuccess && (r.Action == "token.delete" || r.Action == "user.update" || r.Action == "member.delete" || r.Action == "user.delete"):
			if !strings.Contains(r.Message, "while the audit log could not write") {
				t.Errorf("record of %s written late does not say so: %q", r.Action, r.Message)
			}
			order = append(order, r.Action)
		}
	}
	if want := "outage,token.delete,user.update,member.delete,user.delete"; strings.Join(order, ",") != want {
		t.Errorf("records after the outage: %v, want %s", order, want)
	}
}

// On a full data disk the server is read-only, yet revocations and
// deletions go through, using the disk's reserve: a token revoked, a user
// disabled and deleted, a member removed, an image and a project deleted.
// Creations stay refused. (Every non-GET answered 507.)
func TestReadOnlyLetsRevocationsAndDeletionsThrough(t *testing.T) {
	t.Parallel()
	// Room for an image: the image store keeps 1 GiB free.
	mnt := smallFS(t, "1200m")
	data := filepath.Join(mnt, "data")
	const reserve = 40 << 20
	_, c := startOn(t, data, Config{MinFreeBytes: reserve})
	ctx := context.Background()
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "doomed"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"mallory", "eve"} {
		if _, err := c.CreateUser(ctx, api.UserCreate{Name: u}); err != nil {
			t.Fatal(err)
		}
		if err := c.SetMember(ctx, api.DefaultProject, u, api.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := c.CreateToken(ctx, api.TokenCreate{Name: "t", User: "mallory"})
	if err != nil {
		t.Fatal(err)
	}
	image := false
	if _, err := exec.LookPath("qemu-img"); err == nil {
		op, err := c.UploadImage(ctx, "img", api.ImageDisk, bytes.NewReader(make([]byte, 1<<20)), 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		if op, err = c.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
			t.Fatalf("importing an image: %+v %v", op, err)
		}
		image = true
	}
	filler := fillTo(t, mnt, reserve-10<<20)
	defer os.Remove(filler)
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "refused"}); statusOfErr(err) != http.StatusInsufficientStorage {
		t.Fatalf("a creation on a full disk: %v, want 507", err)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"revoke a token", func() error { return c.RevokeToken(ctx, tok.Token.ID) }},
		{"disable a user", func() error {
			yes := true
			_, err := c.UpdateUser(ctx, "mallory", api.UserUpdate{Disabled: &yes})
			return err
		}},
		{"remove a member", func() error { return c.RemoveMember(ctx, api.DefaultProject, "mallory") }},
		{"delete a user", func() error { return c.DeleteUser(ctx, "eve") }},
		{"delete a project", func() error { return c.DeleteProject(ctx, "doomed") }},
	}
	if image {
		steps = append(steps, struct {
			what string
			do   func() error
		}{"delete an image", func() error { _, err := c.DeleteImage(ctx, "img"); return err }})
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Errorf("%s on a full disk: %v", st.what, err)
		}
	}
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "refused"}); statusOfErr(err) != http.StatusInsufficientStorage {
		t.Errorf("a creation after them: %v, want 507", err)
	}
	if u, err := c.GetUser(ctx, "eve"); err == nil {
		t.Errorf("user eve is still there: %+v", u)
	}
	if ts, err := c.ListTokens(ctx, "mallory"); err != nil || len(ts) != 0 {
		t.Errorf("mallory's tokens after the revocation: %v %v", ts, err)
	}
}

// While the store is read-only, a VM is deleted to the end: the deletion
// is accepted, its host's word that the VM is gone is taken, and the
// deletion's operation ends, so that its room and quota are free.
func TestReadOnlyDeletesAVMToTheEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	tok := e.ctlJoin(ctx, "spare", ctlHostStatus(4, 4096), true)
	pa := e.super.WithProject("pa")
	ctlCreate(t, pa, "doomed", "spare", 1, 256)
	e.ctlObserved(t, tok, "pa/doomed")
	e.s.setReadOnly("test", errors.New("the disk is full"))
	defer e.s.setReadOnly("test", nil)
	if _, err := pa.CreateProject(ctx, api.ProjectCreate{Name: "refused"}); statusOfErr(err) != http.StatusInsufficientStorage {
		t.Fatalf("a creation while read-only: %v, want 507", err)
	}
	op, err := pa.DeleteVM(ctx, "doomed", false)
	if err != nil {
		t.Fatalf("deleting a vm while read-only: %v", err)
	}
	if err := e.client(tok, "").VMRemoved(ctx, "pa/doomed"); err != nil {
		t.Fatalf("the host's word that the vm is gone, while read-only: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if op, err = pa.WaitOperation(wctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
		t.Errorf("the deletion's operation while read-only: %+v %v, want succeeded", op, err)
	}
	if _, err := pa.GetVM(ctx, "doomed"); statusOfErr(err) != http.StatusNotFound {
		t.Errorf("the vm after its deletion: %v, want 404", err)
	}
}
