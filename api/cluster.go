package api

import "time"

// ClusterStatus is the control plane as the server that answered sees
// it: which server leads the controllers, and which one answered.
type ClusterStatus struct {
	// Leader is the server whose controllers act (operations, liveness,
	// leases, connected estates); absent while an election is under way.
	Leader *ClusterServer `json:"leader,omitempty"`
	// Self is the server that answered.
	Self ClusterServer `json:"self"`
}

// ClusterServer is one server of the control plane.
type ClusterServer struct {
	Name string `json:"name"`
	// URL is where its API is reached, when it listens on TCP.
	URL string `json:"url,omitempty"`
	// Leader is true for the server whose controllers act.
	Leader bool `json:"leader"`
	// LeaderSince is when its term as leader began (the leader only).
	LeaderSince time.Time `json:"leaderSince,omitzero"`
	// Term is the store revision its term began at, larger for each new
	// term (the leader only). Every write of the leader's controllers is
	// refused once another term began.
	Term int64 `json:"term,omitempty"`
}
