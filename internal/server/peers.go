package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/cluster"
)

// The routes the servers of one control plane use among themselves, each
// with its own server token (auth.Peer): a server answering an audit query
// reads the others' logs, a server missing an image's file copies it from
// one that has it, and a console asked of one server reaches a host whose
// agent watches another.
func (s *Server) peerRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/cluster/peer/audit", rule: auth.Peer, handler: s.peerAudit},
		{method: "GET", path: "/v1/cluster/peer/images/{uid}", rule: auth.Peer, handler: s.peerImageBlob},
		{method: "POST", path: "/v1/cluster/peer/streams/{host}", rule: auth.Peer, handler: s.peerStream},
	}
}

// peerServer is another server, reachable now.
type peerServer struct {
	name string
	c    *client.Client
}

// peers are the other servers present now, by name.
func (s *Server) peers(ctx context.Context) ([]peerServer, error) {
	present, err := cluster.Present(ctx, s.st.Client(), s.st.Prefix())
	if err != nil {
		return nil, err
	}
	var out []peerServer
	for name, p := range present {
		if name == s.cfg.Name || p.URL == "" {
			continue
		}
		c, err := s.peerClient(p.URL)
		if err != nil {
			s.log.Warn("reaching a peer", "server", name, "url", p.URL, "err", err)
			continue
		}
		out = append(out, peerServer{name: name, c: c})
	}
	slices.SortFunc(out, func(a, b peerServer) int { return cmpString(a.name, b.name) })
	return out, nil
}

// peerClients caches one client per peer URL.
type peerClients struct {
	mu sync.Mutex
	m  map[string]*client.Client
}

// peerClient is the client of the server at url, with this server's
// token, trusting the servers' CA.
func (s *Server) peerClient(url string) (*client.Client, error) {
	s.peerCs.mu.Lock()
	defer s.peerCs.mu.Unlock()
	if c, ok := s.peerCs.m[url]; ok {
		return c, nil
	}
	c, err := client.New(client.Config{URL: url, Token: s.peerToken, CACert: s.caPEM, UserAgent: "polyvisor-server/" + s.cfg.Name,
		DialTimeout: 3 * time.Second})
	if err != nil {
		return nil, err
	}
	if s.peerCs.m == nil {
		s.peerCs.m = map[string]*client.Client{}
	}
	s.peerCs.m[url] = c
	return c, nil
}

// peerAudit streams this server's own audit records matching the query,
// within the projects and the part of the log the asking server names for
// its caller (which it filters again).
func (s *Server) peerAudit(w http.ResponseWriter, r *http.Request) {
	q, _, err := parseAuditQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q.Project = r.URL.Query().Get("project")
	q.Limit = 0
	scope := client.ParsePeerAuditScope(r.URL.Query())
	opts := audit.QueryOptions{Projects: scope.Projects, MaxScanBytes: s.cfg.AuditQueryMaxBytes}
	if scope.Whole {
		opts.MaxScanBytes = 0
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := jsonLineEncoder(w)
	if _, err := s.audit.QueryIn(r.Context(), q, opts, func(ar *api.AuditRecord) bool { return enc(ar) == nil }); err != nil {
		s.log.Warn("serving audit records to a peer", "err", err)
	}
}

// peerImageBlob serves the stored file of an image this server holds.
func (s *Server) peerImageBlob(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	imgs := listAll(s.images, func(i *api.Image) bool { return i.UID == uid && i.State == api.ImageReady })
	if len(imgs) == 0 {
		s.writeError(w, r, api.NotFound("image", uid))
		return
	}
	img := imgs[0]
	f, err := os.Open(s.ctl.Imports.Path(img))
	if os.IsNotExist(err) {
		s.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("image %s: no copy on server %s", uid, s.cfg.Name)})
		return
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("opening image %q: %w", img.Name, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Polyvisor-SHA256", img.SHA256)
	http.ServeContent(w, r, "", img.UpdatedAt, f)
}

// peerStream hands a console stream request to a host's agent whose
// watch this server holds.
func (s *Server) peerStream(w http.ResponseWriter, r *http.Request) {
	var req api.StreamRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.ID == "" || req.Server == "" {
		s.writeError(w, r, api.Invalid("server", "a forwarded stream names its id and the server that waits for it"))
		return
	}
	host := r.PathValue("host")
	if err := s.streams.deliver(host, req); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
