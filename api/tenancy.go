package api

import "time"

// DefaultProject is the project every request uses when it names none, and
// the home of everything that existed before projects did.
const DefaultProject = "default"

// Project roles, from least to most privileged. A role includes every
// permission of the roles before it. Superadmin is not a project role: it
// is a flag on a user (User.Superadmin) that allows everything everywhere.
const (
	RoleViewer   = "viewer"   // read everything in the project
	RoleOperator = "operator" // power actions and consoles
	RoleMember   = "member"   // create and delete within quota
	RoleAdmin    = "admin"    // project settings and members
)

// Roles lists the project roles in order of privilege.
var Roles = []string{RoleViewer, RoleOperator, RoleMember, RoleAdmin}

// Project is a tenant: it owns VMs, images, provider bindings and
// operations, and holds its members' roles and its quota.
type Project struct {
	Meta
	Spec   ProjectSpec   `json:"spec"`
	Status ProjectStatus `json:"status"`
}

// ProjectSpec is a project's settings.
type ProjectSpec struct {
	Description string `json:"description,omitempty"`
	// Quota limits what the project's VMs may use together.
	Quota Quota `json:"quota"`
	// MaxLeaseSeconds, when above zero, is the longest lease a VM of the
	// project may carry (at create or when extended); every VM created in
	// the project then gets a lease, the maximum when none is asked for.
	MaxLeaseSeconds int64 `json:"maxLeaseSeconds,omitempty"`
	// LeaseGraceSeconds is how long a VM stays stopped after its lease
	// expired before it is deleted (default 86400, one day).
	LeaseGraceSeconds int64 `json:"leaseGraceSeconds,omitempty"`
	// HADefault is the HA policy (restart or none) of the project's VMs
	// created without one, applied to those whose disks are all on
	// shared storage.
	HADefault string `json:"haDefault,omitempty"`
	// Members maps user names to their role in the project.
	Members map[string]string `json:"members,omitempty"`
}

// Quota limits a project's resources. A nil limit is unlimited.
type Quota struct {
	VCPUs     *int64 `json:"vcpus,omitempty"`
	MemoryMiB *int64 `json:"memoryMiB,omitempty"`
	DiskMiB   *int64 `json:"diskMiB,omitempty"`
	VMs       *int64 `json:"vms,omitempty"`
	// ImageStorageMiB limits the project's stored images together (their
	// files, and the room held by imports under way).
	ImageStorageMiB *int64 `json:"imageStorageMiB,omitempty"`
	// Networks, Ports and FloatingIPs limit the project's network objects.
	Networks    *int64 `json:"networks,omitempty"`
	Ports       *int64 `json:"ports,omitempty"`
	FloatingIPs *int64 `json:"floatingIPs,omitempty"`
	// VolumeMiB limits the sizes of the project's volumes together.
	VolumeMiB *int64 `json:"volumeMiB,omitempty"`
}

// Usage is what a project's VMs use: the sum over its VMs (those being
// deleted included, until they are gone); and what its images take.
type Usage struct {
	VCPUs     int64 `json:"vcpus"`
	MemoryMiB int64 `json:"memoryMiB"`
	DiskMiB   int64 `json:"diskMiB"`
	VMs       int64 `json:"vms"`
	// ImageStorageMiB is what the project's images take, with the room
	// held by its imports under way.
	ImageStorageMiB int64 `json:"imageStorageMiB"`
	// Networks, Ports and FloatingIPs count the project's network objects.
	Networks    int64 `json:"networks"`
	Ports       int64 `json:"ports"`
	FloatingIPs int64 `json:"floatingIPs"`
	// VolumeMiB is the sum of the sizes of the project's volumes.
	VolumeMiB int64 `json:"volumeMiB"`
}

// ProjectStatus is computed when a project is read.
type ProjectStatus struct {
	Usage Usage `json:"usage"`
}

// ProjectCreate is the body of POST /v1/projects.
type ProjectCreate struct {
	Name              string            `json:"name"`
	Description       string            `json:"description,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Quota             Quota             `json:"quota,omitzero"`
	MaxLeaseSeconds   int64             `json:"maxLeaseSeconds,omitempty"`
	LeaseGraceSeconds int64             `json:"leaseGraceSeconds,omitempty"`
	HADefault         string            `json:"haDefault,omitempty"`
}

// ProjectUpdate is the body of PATCH /v1/projects/{project}: the fields
// present are changed. The quota is changed through PUT .../quota, which
// only a superadmin may do.
type ProjectUpdate struct {
	Description       *string `json:"description,omitempty"`
	MaxLeaseSeconds   *int64  `json:"maxLeaseSeconds,omitempty"`
	LeaseGraceSeconds *int64  `json:"leaseGraceSeconds,omitempty"`
	HADefault         *string `json:"haDefault,omitempty"`
}

// Member is one user's role in a project.
type Member struct {
	User string `json:"user"`
	Role string `json:"role"`
}

// MemberSet is the body of PUT /v1/projects/{project}/members/{user}.
type MemberSet struct {
	Role string `json:"role"`
}

// QuotaReport is the body of GET /v1/projects/{project}/quota.
type QuotaReport struct {
	Project string `json:"project"`
	Limits  Quota  `json:"limits"`
	Usage   Usage  `json:"usage"`
}

// User is a local user. Its password is never part of it.
type User struct {
	Meta
	DisplayName string `json:"displayName,omitempty"`
	// Superadmin users may do everything in every project.
	Superadmin bool `json:"superadmin,omitempty"`
	// Disabled users cannot log in and their tokens are refused.
	Disabled bool `json:"disabled,omitempty"`
	// HasPassword tells whether the user can log in with a password.
	HasPassword bool `json:"hasPassword"`
	// Roles maps the projects the user belongs to to the role held there
	// (filled in when read).
	Roles map[string]string `json:"roles,omitempty"`
}

// UserCreate is the body of POST /v1/users.
type UserCreate struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
	Password    string `json:"password,omitempty"`
	Superadmin  bool   `json:"superadmin,omitempty"`
}

// UserUpdate is the body of PATCH /v1/users/{user}.
type UserUpdate struct {
	DisplayName *string `json:"displayName,omitempty"`
	Superadmin  *bool   `json:"superadmin,omitempty"`
	Disabled    *bool   `json:"disabled,omitempty"`
}

// PasswordSet is the body of PUT /v1/users/{user}/password. A user
// changing their own password gives the current one; a superadmin setting
// another's does not need to.
type PasswordSet struct {
	Current  string `json:"current,omitempty"`
	Password string `json:"password"`
}

// Login is the body of POST /v1/login.
type Login struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// Session is the answer to a login: a short-lived token.
type Session struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Token kinds.
const (
	TokenAPI     = "api"     // made with POST /v1/tokens
	TokenSession = "session" // made by a login
)

// Token describes an API or session token. The secret is shown once, in
// TokenCreated, and stored only as a hash.
type Token struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"`
	User string `json:"user"`
	// Project and Role, when set, narrow the token: it acts only in that
	// project, with at most that role.
	Project   string    `json:"project,omitempty"`
	Role      string    `json:"role,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// TokenCreate is the body of POST /v1/tokens.
type TokenCreate struct {
	Name string `json:"name"`
	// User the token acts as; default the caller. Only a superadmin may
	// make tokens for someone else.
	User    string `json:"user,omitempty"`
	Project string `json:"project,omitempty"`
	Role    string `json:"role,omitempty"`
	// ExpiresInSeconds bounds the token's life; 0 never expires (or, where
	// the installation sets a maximum lifetime, lives that long).
	ExpiresInSeconds int64 `json:"expiresInSeconds,omitempty"`
	// Current is the caller's password, required when the request comes
	// with a login session (re-authentication). Such a token ends when
	// that password changes.
	Current string `json:"current,omitempty"`
}

// TokenCreated is the answer to POST /v1/tokens: the token's secret, shown
// this once.
type TokenCreated struct {
	Token
	Secret string `json:"secret"`
}

// WhoAmI is the body of GET /v1/whoami.
type WhoAmI struct {
	Kind       string            `json:"kind"` // user, host
	Name       string            `json:"name"`
	Superadmin bool              `json:"superadmin,omitempty"`
	TokenID    string            `json:"tokenId,omitempty"`
	Project    string            `json:"project,omitempty"` // a narrowed token's project
	Role       string            `json:"role,omitempty"`    // a narrowed token's role
	Roles      map[string]string `json:"roles,omitempty"`   // project -> role
}

// Role describes a project role and what it allows (GET /v1/roles).
type Role struct {
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
}

// Audit outcomes.
const (
	AuditSuccess = "success" // the request was carried out (or accepted as an operation)
	AuditFailure = "failure" // the request was allowed but failed
	AuditDenied  = "denied"  // authentication or authorization refused it
)

// AuditActor is who made an audited request.
type AuditActor struct {
	Kind string `json:"kind"` // user, host, anonymous, system
	Name string `json:"name,omitempty"`
	// Token is the id of the token used, when one was.
	Token string `json:"token,omitempty"`
}

// AuditRecord is one entry of the audit log.
type AuditRecord struct {
	ID        string     `json:"id"`
	Time      time.Time  `json:"time"`
	Actor     AuditActor `json:"actor"`
	Remote    string     `json:"remote,omitempty"` // client address
	RequestID string     `json:"requestId,omitempty"`
	Method    string     `json:"method,omitempty"`
	Path      string     `json:"path,omitempty"`
	// Action names what was asked, as "<kind>.<verb>" ("vm.start").
	Action      string `json:"action"`
	Project     string `json:"project,omitempty"`
	Resource    Ref    `json:"resource,omitzero"`
	OperationID string `json:"operationId,omitempty"`
	Outcome     string `json:"outcome"`
	Status      int    `json:"status,omitempty"` // HTTP status
	Message     string `json:"message,omitempty"`
	// Seq is the record's place in the log: 1 for the first record
	// written with a sequence number, one more for each after.
	Seq uint64 `json:"seq,omitempty"`
	// Prev is the SHA-256, in hex, of the previous record's line as
	// stored: the records form one hash chain across segments.
	Prev string `json:"prev,omitempty"`
	// Count, on a record that stands for several, is how many: repeated
	// refusals of the same caller, address and route, or records that
	// could not be written. First and Last bound their times.
	Count int64     `json:"count,omitempty"`
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// Removed, on a record of the log's retention (action audit.prune),
	// names the segment it removed and the records that segment held.
	Removed *AuditSpan `json:"removed,omitempty"`
	// Server, in an answer to a query, is the server whose log holds the
	// record (each server writes its own); it is not stored in the record.
	Server string `json:"server,omitempty"`
}

// AuditQuery filters GET /v1/audit (as query parameters since=, until=,
// actor=, project=, resource=, action=, outcome=, limit=).
type AuditQuery struct {
	Since    time.Time
	Until    time.Time
	Actor    string // actor name
	Project  string
	Resource string // "<kind>/<name>" or a name
	Action   string
	Outcome  string
	Limit    int
}

// Lease is a VM's expiry: at ExpiresAt it is stopped, and DeleteAt (after
// the project's grace period) it is deleted.
type Lease struct {
	ExpiresAt time.Time `json:"expiresAt"`
	DeleteAt  time.Time `json:"deleteAt"`
	// StoppedAt is set once the expiry stop was issued.
	StoppedAt time.Time `json:"stoppedAt,omitzero"`
}

// LeaseSet is the body of PUT /v1/vms/{name}/lease: the lease is renewed
// to end DurationSeconds from now (within the project's maximum); 0
// removes it where the project allows VMs without a lease.
type LeaseSet struct {
	DurationSeconds int64 `json:"durationSeconds"`
}
