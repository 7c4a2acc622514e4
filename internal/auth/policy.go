package auth

import (
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// Policy decides whether id may make request r. It returns nil to allow,
// or an *api.Error: unauthorized when id is anonymous, forbidden when id is
// known but not allowed. The API's route table puts one Policy beside
// every route; it is the single access-control hook.
type Policy func(id Identity, r *http.Request) error

// Check applies the policy to the identity carried by r's context.
func (p Policy) Check(r *http.Request) error {
	return p(FromContext(r.Context()), r)
}

// Public allows everyone, anonymous included.
func Public(Identity, *http.Request) error { return nil }

// Admin allows admins only.
func Admin(id Identity, _ *http.Request) error {
	if !id.Authenticated() {
		return unauthorized()
	}
	if id.IsAdmin() {
		return nil
	}
	return forbidden("%s may not do this: admin only", id)
}

// AnyHost allows admins and the agent of any host.
func AnyHost(id Identity, _ *http.Request) error {
	if !id.Authenticated() {
		return unauthorized()
	}
	if id.IsAdmin() || (id.Kind == KindHost && id.Name != "") {
		return nil
	}
	return forbidden("%s may not do this: admin or host only", id)
}

// OwnHost allows admins, and the agent of the host named by the request's
// path parameter pathParam (as in "/v1/agent/hosts/{name}/status").
func OwnHost(pathParam string) Policy {
	return func(id Identity, r *http.Request) error {
		if !id.Authenticated() {
			return unauthorized()
		}
		if id.IsAdmin() {
			return nil
		}
		if target := r.PathValue(pathParam); id.IsHost(target) {
			return nil
		}
		return forbidden("%s may only act on its own host", id)
	}
}

func unauthorized() *api.Error {
	return &api.Error{Code: api.CodeUnauthorized, Message: "authentication required"}
}

func forbidden(format string, args ...any) *api.Error {
	return &api.Error{Code: api.CodeForbidden, Message: fmt.Sprintf(format, args...)}
}
