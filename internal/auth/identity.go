package auth

import "context"

// Identity kinds.
const (
	KindUser      = "user"
	KindHost      = "host"
	KindAnonymous = "anonymous"
	// KindSystem is Polyvisor itself acting on its own (lease expiry).
	KindSystem = "system"
	// KindMetrics is a metrics scraper: it may read /metrics, nothing else.
	KindMetrics = "metrics"
	// KindServer is another server of the control plane: it may use the
	// routes the servers use among themselves, nothing else.
	KindServer = "server"
)

// Identity is who a request comes from: a user (through a session or API
// token, or local root on the unix socket), a host's agent (Name is the
// host's name), or nobody known.
type Identity struct {
	Kind string
	Name string
	// Superadmin is set for superadmin users; what they may do also
	// depends on narrowing (see IsSuperadmin).
	Superadmin bool
	// TokenID is the id of the token presented, if any.
	TokenID string
	// Project and Role narrow a token: it acts only in Project, with at
	// most Role there.
	Project string
	Role    string
}

// Anonymous is the identity of a request without credentials.
var Anonymous = Identity{Kind: KindAnonymous}

// Authenticated tells whether the identity is someone known. The zero
// Identity is anonymous.
func (id Identity) Authenticated() bool {
	return id.Kind != "" && id.Kind != KindAnonymous
}

// IsUser tells whether the identity is a user.
func (id Identity) IsUser() bool { return id.Kind == KindUser && id.Name != "" }

// IsSuperadmin tells whether the identity may do everything everywhere:
// a superadmin user whose token is not narrowed to a project or role.
func (id Identity) IsSuperadmin() bool {
	return id.IsUser() && id.Superadmin && !id.Narrowed()
}

// Narrowed tells whether the identity's token is narrowed to a project or
// a role. A narrowed token acts for its user only inside its project: it
// never acts on the user's account (password, tokens, the user itself).
func (id Identity) Narrowed() bool { return id.Project != "" || id.Role != "" }

// IsHost tells whether the identity is the agent of the named host.
func (id Identity) IsHost(name string) bool {
	return id.Kind == KindHost && id.Name != "" && id.Name == name
}

func (id Identity) String() string {
	if !id.Authenticated() {
		return KindAnonymous
	}
	if id.Name == "" {
		return id.Kind
	}
	return id.Kind + " " + id.Name
}

type contextKey struct{}

// WithIdentity returns a context carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, contextKey{}, id)
}

// FromContext returns the identity carried by ctx, or Anonymous.
func FromContext(ctx context.Context) Identity {
	if id, ok := ctx.Value(contextKey{}).(Identity); ok && id.Authenticated() {
		return id
	}
	return Anonymous
}
