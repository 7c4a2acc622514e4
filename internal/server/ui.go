package server

import (
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/web"
)

// uiHandler serves the browser console: the files of the built app, and
// its index.html for every other path outside the API, so that the app's
// own URLs can be bookmarked and reloaded. The app is public content; all
// it shows comes from the API, which checks every request.
func (s *Server) uiHandler() http.Handler {
	fsys, built := web.Dist()
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") || r.URL.Path == "/v1" {
			s.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "+
			"style-src 'self' 'unsafe-inline'; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if !built {
			h.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("The web console was not built into this binary: run `npm ci && npm run build` in web/ and build polyvisor again.\n"))
			return
		}
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name != "" && name != "index.html" {
			if _, err := fs.Stat(fsys, name); err == nil {
				if strings.HasPrefix(name, "assets/") {
					// Vite names assets by their content hash.
					h.Set("Cache-Control", "public, max-age=31536000, immutable")
				}
				files.ServeHTTP(w, r)
				return
			} else if !errors.Is(err, fs.ErrNotExist) || path.Ext(name) != "" {
				// A missing asset is a 404, not the app.
				http.NotFound(w, r)
				return
			}
		}
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, fsys, "index.html")
	})
}
