package auth

import (
	"fmt"
	"slices"

	"github.com/polyvisor/polyvisor/api"
)

// Permission names something a project role may do: "<kind>.<verb>".
type Permission string

// Project permissions.
const (
	PermProjectRead     Permission = "project.read"
	PermVMRead          Permission = "vm.read"
	PermImageRead       Permission = "image.read"
	PermOperationRead   Permission = "operation.read"
	PermProviderRead    Permission = "provider.read"
	PermVMPower         Permission = "vm.power"
	PermVMConsole       Permission = "vm.console"
	PermOperationCancel Permission = "operation.cancel"
	PermVMCreate        Permission = "vm.create"
	PermVMDelete        Permission = "vm.delete"
	PermVMUpdate        Permission = "vm.update"   // reconfigure, snapshots, lease
	PermVMUserData      Permission = "vm.userdata" // read cloud-init user data back
	PermImageCreate     Permission = "image.create"
	PermImageDelete     Permission = "image.delete"
	PermProjectUpdate   Permission = "project.update"
	PermMemberManage    Permission = "member.manage"
	PermAuditRead       Permission = "audit.read"
	// Networks, subnets, ports, security groups and floating IPs.
	PermNetworkRead   Permission = "network.read"
	PermNetworkCreate Permission = "network.create"
	PermNetworkUpdate Permission = "network.update" // ports' groups, rules, floating IP mappings
	PermNetworkDelete Permission = "network.delete"
	PermVolumeRead    Permission = "volume.read"
	PermVolumeManage  Permission = "volume.manage" // create, attach, detach, grow, snapshot, delete
)

// grants is the policy: what each project role adds to the roles before it
// in api.Roles. It is the only place where roles get their meaning.
var grants = map[string][]Permission{
	api.RoleViewer:   {PermProjectRead, PermVMRead, PermImageRead, PermOperationRead, PermProviderRead, PermNetworkRead, PermVolumeRead},
	api.RoleOperator: {PermVMPower, PermVMConsole, PermOperationCancel},
	api.RoleMember: {PermVMCreate, PermVMDelete, PermVMUpdate, PermVMUserData, PermImageCreate, PermImageDelete,
		PermNetworkCreate, PermNetworkUpdate, PermNetworkDelete, PermVolumeManage},
	api.RoleAdmin: {PermProjectUpdate, PermMemberManage, PermAuditRead},
}

// RolePermissions returns every permission of a role, inherited ones
// included, or nil for an unknown role.
func RolePermissions(role string) []Permission {
	i := slices.Index(api.Roles, role)
	if i < 0 {
		return nil
	}
	var out []Permission
	for _, r := range api.Roles[:i+1] {
		out = append(out, grants[r]...)
	}
	return out
}

// ValidRole tells whether role is a project role.
func ValidRole(role string) bool { return slices.Contains(api.Roles, role) }

// roleRank orders roles; 0 is no role.
func roleRank(role string) int { return slices.Index(api.Roles, role) + 1 }

// RoleAllows tells whether role holds permission p.
func RoleAllows(role string, p Permission) bool {
	return slices.Contains(RolePermissions(role), p)
}

// EffectiveRole is the role id acts with in project, given the role its
// user holds there (memberRole, "" for none): a superadmin acts as admin
// everywhere; a narrowed token acts only in its project and with at most
// its role.
func EffectiveRole(id Identity, project, memberRole string) string {
	if !id.IsUser() {
		return ""
	}
	role := memberRole
	if id.Superadmin {
		role = api.RoleAdmin
	}
	if id.Project != "" && id.Project != project {
		return ""
	}
	if id.Role != "" && roleRank(id.Role) < roleRank(role) {
		role = id.Role
	}
	return role
}

// Can tells whether id holds permission p in project, given the role its
// user holds there.
func Can(id Identity, project, memberRole string, p Permission) bool {
	return RoleAllows(EffectiveRole(id, project, memberRole), p)
}

// Scope says whom a rule admits.
type Scope int

// Scopes.
const (
	// ScopePublic admits everyone, anonymous included.
	ScopePublic Scope = iota + 1
	// ScopeUser admits every signed-in user; what they see is then
	// filtered by their roles (their own tokens, their projects).
	ScopeUser
	// ScopeProject admits users holding the rule's permission in the
	// request's project. Those who may not even read the project are told
	// it does not exist.
	ScopeProject
	// ScopeSuperadmin admits superadmins only.
	ScopeSuperadmin
	// ScopeSelf admits the user the request names, and superadmins, with
	// a token that is not narrowed.
	ScopeSelf
	// ScopeHost admits the agent of the host the request concerns.
	ScopeHost
	// ScopeAnyHost admits the agent of any host.
	ScopeAnyHost
	// ScopeAccount admits every signed-in user acting on its own account
	// (its tokens), with a token that is not narrowed.
	ScopeAccount
	// ScopeMetrics admits superadmins and the metrics token.
	ScopeMetrics
	// ScopePeer admits the other servers of the control plane (their
	// server tokens), and nobody else.
	ScopePeer
)

var scopeNames = map[Scope]string{
	ScopePublic: "public", ScopeUser: "user", ScopeProject: "project", ScopeSuperadmin: "superadmin",
	ScopeSelf: "self", ScopeHost: "host", ScopeAnyHost: "any-host", ScopeAccount: "account", ScopeMetrics: "metrics",
	ScopePeer: "peer",
}

func (s Scope) String() string { return scopeNames[s] }

// Rule is one route's access policy: a scope and, for project routes, the
// permission needed.
type Rule struct {
	Scope Scope
	Perm  Permission
}

func (r Rule) String() string {
	if r.Perm != "" {
		return r.Scope.String() + ":" + string(r.Perm)
	}
	return r.Scope.String()
}

// Rule constructors, for route tables.
var (
	Public     = Rule{Scope: ScopePublic}
	User       = Rule{Scope: ScopeUser}
	Superadmin = Rule{Scope: ScopeSuperadmin}
	Self       = Rule{Scope: ScopeSelf}
	Account    = Rule{Scope: ScopeAccount}
	Host       = Rule{Scope: ScopeHost}
	AnyHost    = Rule{Scope: ScopeAnyHost}
	Metrics    = Rule{Scope: ScopeMetrics}
	Peer       = Rule{Scope: ScopePeer}
)

// In is the rule of a project route needing permission p.
func In(p Permission) Rule { return Rule{Scope: ScopeProject, Perm: p} }

// Facts are what the server learnt about a request that a rule may need.
type Facts struct {
	// Project is the project the request acts in, and ProjectExists
	// whether there is one by that name.
	Project       string
	ProjectExists bool
	// MemberRole is the caller's role in Project as its members list it.
	MemberRole string
	// AllProjects is set when a list asks across every project; the
	// caller then sees what its roles let it read.
	AllProjects bool
	// Host is the host the request concerns (ScopeHost); "" when it
	// concerns an object of no host the caller may know of.
	Host string
	// User is the user the request names (ScopeSelf).
	User string
}

// Authorize is the single access decision of the API: whether id may make
// a request under rule, given the facts. It returns nil to allow, or an
// *api.Error: unauthorized for anonymous callers, not found for a project
// the caller may not see (so its existence does not leak), forbidden
// otherwise.
func Authorize(id Identity, rule Rule, f Facts) error {
	if rule.Scope == ScopePublic {
		return nil
	}
	if !id.Authenticated() {
		return unauthorized()
	}
	switch rule.Scope {
	case ScopeUser:
		if id.IsUser() {
			return nil
		}
	case ScopeSuperadmin:
		if id.IsSuperadmin() {
			return nil
		}
		return forbidden("%s may not do this: superadmin only", id)
	case ScopeSelf:
		if id.IsUser() && id.Narrowed() {
			return errNarrowed(id)
		}
		if id.IsSuperadmin() || (id.IsUser() && f.User != "" && id.Name == f.User) {
			return nil
		}
		if id.IsUser() {
			return forbidden("%s may only do this for itself", id)
		}
	case ScopeAccount:
		if id.IsUser() && id.Narrowed() {
			return errNarrowed(id)
		}
		if id.IsUser() {
			return nil
		}
	case ScopeHost:
		if id.Kind == KindHost && id.IsHost(f.Host) {
			return nil
		}
		if id.Kind == KindHost && f.Host == "" {
			// What is not the host's does not exist for it.
			return &api.Error{Code: api.CodeNotFound, Message: "not found on this host"}
		}
		if id.Kind == KindHost {
			return forbidden("%s may only act on its own host", id)
		}
	case ScopeAnyHost:
		if id.Kind == KindHost && id.Name != "" {
			return nil
		}
	case ScopeMetrics:
		if id.IsSuperadmin() || (id.Kind == KindMetrics && id.Name != "") {
			return nil
		}
	case ScopePeer:
		if id.Kind == KindServer && id.Name != "" {
			return nil
		}
	case ScopeProject:
		return authorizeProject(id, rule.Perm, f)
	default:
		return forbidden("no access rule")
	}
	return forbidden("%s may not do this", id)
}

func authorizeProject(id Identity, p Permission, f Facts) error {
	if !id.IsUser() {
		return forbidden("%s may not do this", id)
	}
	if f.AllProjects {
		return nil
	}
	role := EffectiveRole(id, f.Project, f.MemberRole)
	if !f.ProjectExists || !RoleAllows(role, PermProjectRead) {
		return api.NotFound("project", f.Project)
	}
	if !RoleAllows(role, p) {
		return forbidden("role %s in project %q does not allow %s", role, f.Project, p)
	}
	return nil
}

// errNarrowed refuses a narrowed token an account route: what it may do
// ends at its project, and its user's password or tokens would let it out.
func errNarrowed(id Identity) *api.Error {
	return forbidden("%s acts with a token narrowed to project %q: it cannot act on the user's account (password, tokens); use a token that is not narrowed, or log in", id, id.Project)
}

func unauthorized() *api.Error {
	return &api.Error{Code: api.CodeUnauthorized, Message: "authentication required"}
}

func forbidden(format string, args ...any) *api.Error {
	return &api.Error{Code: api.CodeForbidden, Message: fmt.Sprintf(format, args...)}
}
