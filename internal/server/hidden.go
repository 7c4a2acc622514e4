package server

import (
	"errors"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// notFoundAs is the notFound of a route whose path parameter param names
// an object of kind.
func notFoundAs(kind, param string) func(r *http.Request) error {
	return func(r *http.Request) error { return api.NotFound(kind, r.PathValue(param)) }
}

func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound
}

// asMissing is the answer to a request naming an object (an operation, a
// provider) that exists in a project the caller may not see: the answer
// the same request gets when no such object exists. The route is then
// authorized in the request's own project, and if that passes, the
// handler would have found nothing. So the answer names neither the
// object's project nor that the object exists.
func (s *Server) asMissing(rt route, r *http.Request, id auth.Identity, list bool) error {
	own := rt
	own.projectOf = nil
	f, err := s.facts(own, r, id, list)
	if err == nil {
		err = auth.Authorize(id, rt.rule, f)
	}
	if err != nil {
		return err
	}
	return rt.notFound(r)
}
