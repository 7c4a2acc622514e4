package server

import (
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/leader"
)

func (s *Server) clusterRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/cluster", rule: auth.Superadmin, handler: s.getCluster},
	}
}

// getCluster says which server leads the controllers (read from etcd,
// not from this server's memory) and which server answered.
func (s *Server) getCluster(w http.ResponseWriter, r *http.Request) {
	term, ok, err := s.ctl.Leader(r.Context())
	if err != nil {
		s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: "the store cannot say who leads: " + err.Error()})
		return
	}
	self := s.ctl.Self()
	out := api.ClusterStatus{Self: api.ClusterServer{Name: self.Name, URL: self.URL}}
	if ok {
		l := clusterServer(term)
		out.Leader = &l
		// The store is the judge: this server answers as the leader
		// once it has won the key etcd names, even in the moment before
		// its controllers start.
		if s.ctl.Holds(term) {
			out.Self = l
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func clusterServer(t leader.Term) api.ClusterServer {
	return api.ClusterServer{Name: t.Name, URL: t.URL, Leader: true, LeaderSince: t.Since, Term: t.Fence.Rev}
}
