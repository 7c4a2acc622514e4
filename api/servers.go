package api

import "time"

// Server is one server of the control plane, as GET /v1/cluster/servers
// lists it.
type Server struct {
	Name string `json:"name"`
	// URL is where its API is reached.
	URL string `json:"url,omitempty"`
	// PeerURL is where its embedded etcd member is reached by the others
	// (empty when the servers share an external etcd).
	PeerURL string `json:"peerURL,omitempty"`
	// MemberID is its etcd member's id, in hex as etcd prints it (empty
	// with an external etcd, or before the member was added).
	MemberID string `json:"memberID,omitempty"`
	// Learner: its etcd member is still catching up and does not vote yet.
	Learner bool `json:"learner,omitempty"`
	// Healthy: the server runs and reaches a quorum of the store (its
	// presence is current).
	Healthy bool `json:"healthy"`
	// Leader: its controllers act (GET /v1/cluster).
	Leader bool `json:"leader"`
	// EtcdLeader: its etcd member leads the store's raft group.
	EtcdLeader bool      `json:"etcdLeader,omitempty"`
	JoinedAt   time.Time `json:"joinedAt,omitzero"`
	Version    string    `json:"version,omitempty"`
}

// ClusterJoin is the body of POST /v1/cluster/join: a new server asks to
// join the control plane with a server join token (POST
// /v1/cluster/join-tokens).
type ClusterJoin struct {
	JoinToken string `json:"joinToken"`
	// Name is the joining server's name, unique among the servers.
	Name string `json:"name"`
	// URL is where its API will be reached (https://host:port).
	URL string `json:"url"`
	// PeerURL is where its etcd member will be reached by the others
	// (https://host:port); required when the servers embed their etcd.
	PeerURL string `json:"peerURL,omitempty"`
}

// ClusterJoined answers a join: the servers' shared material (CA, secrets
// key, admin and metrics tokens), the joining server's own token and its
// place in the store's cluster, sealed (AES-256-GCM) under a key derived
// from the join token and bound to the server's name.
type ClusterJoined struct {
	Sealed string `json:"sealed"`
	// CAFingerprint is the SHA-256 of the servers' CA certificate.
	CAFingerprint string `json:"caFingerprint"`
}

// AgentServers answers GET /v1/agent/servers: every server's URL, the one
// answering first. An agent keeps them, and moves to another when the one
// it talks to is gone.
type AgentServers struct {
	URLs []string `json:"urls"`
}
