package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Login exchanges a user name and password for a session.
func (c *Client) Login(ctx context.Context, user, password string) (*api.Session, error) {
	var s api.Session
	r := request{method: http.MethodPost, path: "/v1/login", body: api.Login{User: user, Password: password}, noAuth: true}
	if err := c.call(ctx, r, &s); err != nil {
		return nil, fmt.Errorf("log in as %q: %w", user, err)
	}
	return &s, nil
}

// Logout ends the session whose token the client sends.
func (c *Client) Logout(ctx context.Context) error {
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/logout"}, nil); err != nil {
		return fmt.Errorf("log out: %w", err)
	}
	return nil
}

// WhoAmI tells who the client's credentials stand for.
func (c *Client) WhoAmI(ctx context.Context) (*api.WhoAmI, error) {
	var w api.WhoAmI
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/whoami"}, &w); err != nil {
		return nil, fmt.Errorf("who am I: %w", err)
	}
	return &w, nil
}

// ListRoles describes the project roles and what each allows.
func (c *Client) ListRoles(ctx context.Context) ([]api.Role, error) {
	var l api.List[api.Role]
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/roles"}, &l); err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return l.Items, nil
}

// ListProjects returns every project the caller belongs to.
func (c *Client) ListProjects(ctx context.Context, opts api.ListOptions) ([]api.Project, error) {
	ps, err := listAll[api.Project](ctx, c, "/v1/projects", opts)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return ps, nil
}

// GetProject returns a project with its usage.
func (c *Client) GetProject(ctx context.Context, name string) (*api.Project, error) {
	var p api.Project
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/projects/%s", name)}, &p); err != nil {
		return nil, fmt.Errorf("get project %q: %w", name, err)
	}
	return &p, nil
}

// CreateProject makes a project (superadmin).
func (c *Client) CreateProject(ctx context.Context, req api.ProjectCreate) (*api.Project, error) {
	var p api.Project
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/projects", body: req}, &p); err != nil {
		return nil, fmt.Errorf("create project %q: %w", req.Name, err)
	}
	return &p, nil
}

// UpdateProject changes a project's settings (project admin).
func (c *Client) UpdateProject(ctx context.Context, name string, req api.ProjectUpdate) (*api.Project, error) {
	var p api.Project
	if err := c.call(ctx, request{method: http.MethodPatch, path: route("/v1/projects/%s", name), body: req}, &p); err != nil {
		return nil, fmt.Errorf("update project %q: %w", name, err)
	}
	return &p, nil
}

// DeleteProject removes an empty project (superadmin).
func (c *Client) DeleteProject(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/projects/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete project %q: %w", name, err)
	}
	return nil
}

// ListMembers lists a project's members and their roles.
func (c *Client) ListMembers(ctx context.Context, project string) ([]api.Member, error) {
	var l api.List[api.Member]
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/projects/%s/members", project)}, &l); err != nil {
		return nil, fmt.Errorf("list members of project %q: %w", project, err)
	}
	return l.Items, nil
}

// SetMember gives a user a role in a project.
func (c *Client) SetMember(ctx context.Context, project, user, role string) error {
	r := request{method: http.MethodPut, path: route("/v1/projects/%s/members/%s", project, user), body: api.MemberSet{Role: role}}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("grant %s in project %q to %q: %w", role, project, user, err)
	}
	return nil
}

// RemoveMember takes a user's role in a project away.
func (c *Client) RemoveMember(ctx context.Context, project, user string) error {
	r := request{method: http.MethodDelete, path: route("/v1/projects/%s/members/%s", project, user)}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("revoke the role of %q in project %q: %w", user, project, err)
	}
	return nil
}

// GetQuota returns a project's limits and usage.
func (c *Client) GetQuota(ctx context.Context, project string) (*api.QuotaReport, error) {
	var q api.QuotaReport
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/projects/%s/quota", project)}, &q); err != nil {
		return nil, fmt.Errorf("get quota of project %q: %w", project, err)
	}
	return &q, nil
}

// SetQuota replaces a project's limits (superadmin).
func (c *Client) SetQuota(ctx context.Context, project string, q api.Quota) (*api.QuotaReport, error) {
	var out api.QuotaReport
	if err := c.call(ctx, request{method: http.MethodPut, path: route("/v1/projects/%s/quota", project), body: q}, &out); err != nil {
		return nil, fmt.Errorf("set quota of project %q: %w", project, err)
	}
	return &out, nil
}

// ListUsers lists the users (superadmin).
func (c *Client) ListUsers(ctx context.Context) ([]api.User, error) {
	us, err := listAll[api.User](ctx, c, "/v1/users", api.ListOptions{Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// GetUser returns a user with its roles.
func (c *Client) GetUser(ctx context.Context, name string) (*api.User, error) {
	var u api.User
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/users/%s", name)}, &u); err != nil {
		return nil, fmt.Errorf("get user %q: %w", name, err)
	}
	return &u, nil
}

// CreateUser makes a local user (superadmin).
func (c *Client) CreateUser(ctx context.Context, req api.UserCreate) (*api.User, error) {
	var u api.User
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/users", body: req}, &u); err != nil {
		return nil, fmt.Errorf("create user %q: %w", req.Name, err)
	}
	return &u, nil
}

// UpdateUser changes a user (superadmin).
func (c *Client) UpdateUser(ctx context.Context, name string, req api.UserUpdate) (*api.User, error) {
	var u api.User
	if err := c.call(ctx, request{method: http.MethodPatch, path: route("/v1/users/%s", name), body: req}, &u); err != nil {
		return nil, fmt.Errorf("update user %q: %w", name, err)
	}
	return &u, nil
}

// DeleteUser removes a user with its tokens and roles (superadmin).
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/users/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// SetPassword sets a user's password. current is needed to change one's
// own (superadmins' too); a superadmin sets another user's, or a first
// password, without it. The user's other login sessions end; a token
// narrowed to a project is refused.
func (c *Client) SetPassword(ctx context.Context, user, current, password string) error {
	r := request{method: http.MethodPut, path: route("/v1/users/%s/password", user), body: api.PasswordSet{Current: current, Password: password}}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("set the password of %q: %w", user, err)
	}
	return nil
}

// ListTokens lists the caller's tokens (a superadmin's: user's, or all
// when user is empty).
func (c *Client) ListTokens(ctx context.Context, user string) ([]api.Token, error) {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	var l api.List[api.Token]
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/tokens", query: q}, &l); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return l.Items, nil
}

// CreateToken makes an API token; its secret is in the answer only.
func (c *Client) CreateToken(ctx context.Context, req api.TokenCreate) (*api.TokenCreated, error) {
	var t api.TokenCreated
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/tokens", body: req}, &t); err != nil {
		return nil, fmt.Errorf("create token %q: %w", req.Name, err)
	}
	return &t, nil
}

// RevokeToken deletes a token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/tokens/%s", id)}, nil); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// SetLease renews a VM's lease to end d from now (0 removes it where the
// project allows).
func (c *Client) SetLease(ctx context.Context, vm string, d time.Duration) (*api.VM, error) {
	var out api.VM
	r := request{method: http.MethodPut, path: route("/v1/vms/%s/lease", vm), body: api.LeaseSet{DurationSeconds: int64(d / time.Second)}}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, fmt.Errorf("set the lease of VM %q: %w", vm, err)
	}
	return &out, nil
}

// auditQuery turns an audit query into query parameters. allProjects asks
// across every project the caller may audit.
func auditQuery(q api.AuditQuery, allProjects bool) url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	set("actor", q.Actor)
	set("project", q.Project)
	set("resource", q.Resource)
	set("action", q.Action)
	set("outcome", q.Outcome)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if allProjects && q.Project == "" {
		v.Set("all-projects", "true")
	}
	return v
}

// ListAudit returns the newest audit records matching q (q.Limit, default
// 100), oldest first. With q.Project empty it asks across every project the
// caller may audit.
func (c *Client) ListAudit(ctx context.Context, q api.AuditQuery) ([]api.AuditRecord, error) {
	var l api.List[api.AuditRecord]
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/audit", query: auditQuery(q, true)}, &l); err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	return l.Items, nil
}

// ExportAudit streams every audit record matching q to w as JSON lines.
func (c *Client) ExportAudit(ctx context.Context, q api.AuditQuery, w io.Writer) error {
	v := auditQuery(q, true)
	v.Set("format", "jsonl")
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/audit", query: v, accept: "application/x-ndjson"})
	if err != nil {
		return fmt.Errorf("export audit records: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export audit records: %w", err)
	}
	return nil
}

// SetVMHA sets a VM's HA policy: api.HARestart or api.HANone.
func (c *Client) SetVMHA(ctx context.Context, vm, policy string) (*api.VM, error) {
	var out api.VM
	r := request{method: http.MethodPut, path: route("/v1/vms/%s/ha", vm), body: api.VMHASet{HA: policy}}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, fmt.Errorf("set the ha policy of VM %q: %w", vm, err)
	}
	return &out, nil
}
