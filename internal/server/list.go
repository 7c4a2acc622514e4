package server

import (
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

// listQuery is a parsed list request: the common query parameters and the
// label selector.
type listQuery struct {
	api.ListOptions
	sel labels.Selector
}

// serveList answers a list request from a collection's index: it parses
// the common query, keeps the objects match accepts, pages them, and
// writes each through view (which may add derived fields).
func serveList[T any](s *Server, w http.ResponseWriter, r *http.Request, c *store.Collection[T],
	match func(q listQuery, obj *T) bool, view func(*T) T) {
	opts, err := listOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := listQuery{ListOptions: opts}
	if q.sel, err = labels.Parse(opts.Selector); err != nil {
		s.writeError(w, r, api.Invalid("selector", "%v", err))
		return
	}
	items, next, err := c.List(store.ListOptions[T]{
		Limit: opts.Limit, Continue: opts.Continue,
		Filter: func(obj *T) bool { return match(q, obj) },
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.List[T]{Items: make([]T, len(items)), Continue: next}
	for i, obj := range items {
		if view != nil {
			out.Items[i] = view(obj)
		} else {
			out.Items[i] = *obj
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// listAll returns every object of a collection that passes filter.
func listAll[T any](c *store.Collection[T], filter func(*T) bool) []*T {
	return c.Select(filter)
}
