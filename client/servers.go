package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/polyvisor/polyvisor/api"
)

// ListServers lists the servers of the control plane: their addresses,
// etcd members, health, and who leads (superadmin).
func (c *Client) ListServers(ctx context.Context) ([]api.Server, error) {
	var l api.List[api.Server]
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/cluster/servers"}, &l); err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return l.Items, nil
}

// RemoveServer takes a server out of the control plane, its etcd member
// with it (superadmin). The last server, and one whose removal would
// cost the store its quorum, are refused.
func (c *Client) RemoveServer(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/cluster/servers/%s", name)}, nil); err != nil {
		return fmt.Errorf("remove server %q: %w", name, err)
	}
	return nil
}

// CreateServerJoinToken makes a single-use token a new server joins the
// control plane with (superadmin).
func (c *Client) CreateServerJoinToken(ctx context.Context, req api.JoinTokenCreate) (*api.JoinToken, error) {
	var t api.JoinToken
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/cluster/join-tokens", body: req}, &t); err != nil {
		return nil, fmt.Errorf("create server join token: %w", err)
	}
	return &t, nil
}

// JoinCluster asks to join the control plane as a new server; the answer
// is sealed for the holder of the join token.
func (c *Client) JoinCluster(ctx context.Context, req api.ClusterJoin) (*api.ClusterJoined, error) {
	var out api.ClusterJoined
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/cluster/join", body: req, noAuth: true}, &out); err != nil {
		return nil, fmt.Errorf("join the control plane as server %q: %w", req.Name, err)
	}
	return &out, nil
}

// AgentServers returns every server's URL, for a host's agent to fail
// over to.
func (c *Client) AgentServers(ctx context.Context) ([]string, error) {
	var out api.AgentServers
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/agent/servers"}, &out); err != nil {
		return nil, fmt.Errorf("list the servers: %w", err)
	}
	return out.URLs, nil
}

// AuditPartialHeader, on an answer of GET /v1/audit, names the servers
// whose audit logs could not be read (comma-separated): the answer holds
// the records of the others.
const AuditPartialHeader = "Polyvisor-Audit-Partial"

// ListAuditPartial is ListAudit, also naming the servers whose audit logs
// could not be read (down, or unreachable): the records are those of the
// other servers.
func (c *Client) ListAuditPartial(ctx context.Context, q api.AuditQuery) ([]api.AuditRecord, []string, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/audit", query: auditQuery(q, true)})
	if err != nil {
		return nil, nil, fmt.Errorf("list audit records: %w", err)
	}
	defer resp.Body.Close()
	var l api.List[api.AuditRecord]
	if err := decodeJSONBody(resp.Body, &l); err != nil {
		return nil, nil, fmt.Errorf("list audit records: %w", err)
	}
	return l.Items, splitList(resp.Header.Get(AuditPartialHeader)), nil
}

func decodeJSONBody(r io.Reader, out any) error {
	return json.NewDecoder(r).Decode(out)
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// The routes the servers of one control plane use among themselves, with
// a server's token.

// PeerAudit streams the audit records of the server asked, from its own
// log only, matching q (every project); the answering server merges them.
func (c *Client) PeerAudit(ctx context.Context, q api.AuditQuery, scope PeerAuditScope) (<-chan api.AuditRecord, <-chan error) {
	v := auditQuery(q, false)
	v.Set("format", "jsonl")
	scope.set(v)
	return streamNDJSON[api.AuditRecord](ctx, c, request{method: http.MethodGet, path: "/v1/cluster/peer/audit", query: v}, "peer audit records")
}

// PeerImageBlob reads the stored file of image uid from the server asked,
// which has it; the caller checks its SHA-256.
func (c *Client) PeerImageBlob(ctx context.Context, uid string) (io.ReadCloser, int64, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: route("/v1/cluster/peer/images/%s", uid), accept: "application/octet-stream"})
	if err != nil {
		return nil, 0, fmt.Errorf("get image file %s from a peer: %w", uid, err)
	}
	return resp.Body, resp.ContentLength, nil
}

// PeerStream asks the server asked to hand a console stream request to
// host's agent, whose watch it holds; a 404 says it holds none.
func (c *Client) PeerStream(ctx context.Context, host string, req api.StreamRequest) error {
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/cluster/peer/streams/%s", host), body: req}, nil); err != nil {
		return fmt.Errorf("hand a stream to host %q through a peer: %w", host, err)
	}
	return nil
}

// PeerAuditScope is what a server asks of a peer's audit log for its
// caller: only the records of Projects (all when nil; none when empty but
// not nil), and the whole log or only the peer's bounded newest part.
type PeerAuditScope struct {
	Projects []string
	Whole    bool
}

func (sc PeerAuditScope) set(v url.Values) {
	if sc.Projects != nil {
		v.Set("scoped", "1")
		v.Set("projects", strings.Join(sc.Projects, ","))
	}
	if sc.Whole {
		v.Set("whole", "1")
	}
}

// ParsePeerAuditScope reads the scope a server put on a peer audit query.
func ParsePeerAuditScope(v url.Values) PeerAuditScope {
	var sc PeerAuditScope
	if v.Get("scoped") == "1" {
		sc.Projects = []string{}
		for _, p := range strings.Split(v.Get("projects"), ",") {
			if p != "" {
				sc.Projects = append(sc.Projects, p)
			}
		}
	}
	sc.Whole = v.Get("whole") == "1"
	return sc
}
