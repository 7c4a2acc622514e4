package auth

import "context"

// Identity kinds.
const (
	KindAdmin     = "admin"
	KindHost      = "host"
	KindAnonymous = "anonymous"
)

// Identity is who a request comes from: an admin, a host's agent (Name is
// the host's name), or nobody known.
type Identity struct {
	Kind string
	Name string
}

// Anonymous is the identity of a request without valid credentials.
var Anonymous = Identity{Kind: KindAnonymous}

// Authenticated tells whether the identity is someone known. The zero
// Identity is anonymous.
func (id Identity) Authenticated() bool {
	return id.Kind != "" && id.Kind != KindAnonymous
}

// IsAdmin tells whether the identity is an admin.
func (id Identity) IsAdmin() bool { return id.Kind == KindAdmin }

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
