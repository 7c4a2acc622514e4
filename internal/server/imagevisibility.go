package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// updateImage changes an image of ?project= (default the default
// project): its visibility, which only a superadmin sets. A public image
// is usable by VMs of every project: by its name when it is in the
// default project, as "<project>/<name>" otherwise.
func (s *Server) updateImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImageUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	project := r.URL.Query().Get("project")
	if project == "" {
		project = api.DefaultProject
	}
	name := r.PathValue("name")
	rq := requestOf(r)
	rq.project = project
	rq.resource = api.Ref{Kind: "image", Name: name, Project: project}
	if _, ok := s.projects.Get(project); !ok {
		s.writeError(w, r, api.NotFound("project", project))
		return
	}
	if req.Public == nil {
		s.writeError(w, r, api.Invalid("public", "nothing to change: give public (true or false)"))
		return
	}
	for range 10 {
		cur, ok := s.images.Get(api.Key(project, name))
		if !ok {
			s.writeError(w, r, api.NotFound("image", name))
			return
		}
		if cur.State == api.ImageImporting {
			s.writeError(w, r, api.Conflict("image %q is being imported; change it once it is ready", name))
			return
		}
		next := store.Clone(cur)
		next.Public = *req.Public
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.images.Update(r.Context(), next.Key(), next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			s.writeError(w, r, fmt.Errorf("updating image %q: %w", name, err))
			return
		}
		rq.message = fmt.Sprintf("visibility %s -> %s", visibility(cur.Public), visibility(next.Public))
		writeJSON(w, http.StatusOK, next)
		return
	}
	s.writeError(w, r, api.Conflict("image %q is being changed concurrently", name))
}

func visibility(public bool) string {
	if public {
		return "public"
	}
	return "private"
}
