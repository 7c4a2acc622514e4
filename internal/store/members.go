package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
)

// The embedded etcd of several servers is one etcd cluster: each server's
// store embeds one member, which talks to the other members over TLS on
// its peer address (certificates issued by the servers' shared CA, each
// peer's certificate checked), and serves its own server only, on its
// unix socket. A server joins as k3s and Incus servers do: a member of the
// running cluster adds it as a learner (AddLearner), it starts with the
// cluster's member list and initial-cluster-state=existing, catches up
// from the others, and promotes itself to a voting member.

// Raft timing of a member with peers: etcd's defaults, a heartbeat every
// 100ms and an election after a second of silence.
const (
	memberTickMs     = 100
	memberElectionMs = 1000
	// promoteInterval is how often a learner asks to be promoted.
	promoteInterval = 300 * time.Millisecond
)

// MemberConfig makes the embedded etcd one member of the servers' etcd
// cluster.
type MemberConfig struct {
	// Name is the member's name: the server's name.
	Name string
	// PeerListen is the address the member listens on for its peers
	// (host:port).
	PeerListen string
	// PeerURL is the https URL its peers reach it at.
	PeerURL string
	// CertFile and KeyFile are the member's peer certificate (server and
	// client authentication), CAFile the CA every peer's certificate
	// must be issued by.
	CertFile, KeyFile, CAFile string
	// InitialCluster names the cluster's members when this one joined
	// ("name=url,..."); empty for the first member, which starts a
	// cluster of its own. Only the first start reads it.
	InitialCluster string
	// Join says the member was added to a running cluster and starts
	// from the other members' data.
	Join bool
	// ElectionTimeout is how long the members wait without hearing the
	// raft leader before electing another (default 1s); they hear from it
	// ten times as often.
	ElectionTimeout time.Duration
}

// apply sets cfg up for the member.
func (m *MemberConfig) apply(cfg *embed.Config) error {
	if m.Name == "" {
		return errors.New("etcd member: no name")
	}
	host, port, err := net.SplitHostPort(m.PeerListen)
	if err != nil {
		return fmt.Errorf("etcd member: peer listen address %q: %w", m.PeerListen, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 {
		return fmt.Errorf("etcd member: peer listen address %q needs a port", m.PeerListen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	adv, err := ParsePeerURL(m.PeerURL)
	if err != nil {
		return fmt.Errorf("etcd member: %w", err)
	}
	cfg.Name = m.Name
	cfg.ListenPeerUrls = []url.URL{{Scheme: "https", Host: net.JoinHostPort(host, port)}}
	cfg.AdvertisePeerUrls = []url.URL{*adv}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile: m.CertFile, KeyFile: m.KeyFile, TrustedCAFile: m.CAFile,
		// Only holders of a certificate of the servers' CA are peers.
		ClientCertAuth: true,
	}
	cfg.InitialClusterToken = "polyvisor"
	cfg.InitialCluster = m.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	if m.Join {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.TickMs = memberTickMs
	cfg.ElectionMs = memberElectionMs
	if m.ElectionTimeout > 0 {
		cfg.ElectionMs = uint(max(m.ElectionTimeout/time.Millisecond, 100))
		cfg.TickMs = cfg.ElectionMs / 10
	}
	// Refuse a change of members that would leave the cluster without a
	// quorum of started members.
	cfg.StrictReconfigCheck = true
	return nil
}

// ParsePeerURL checks an etcd peer URL: https, a host and a port.
func ParsePeerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("peer URL %q: want https://host:port", s)
	}
	u.Path = ""
	return u, nil
}

// waitPromoted returns once the member is a voting member: a learner asks
// the raft leader to promote it until the leader finds it caught up.
func waitPromoted(ctx context.Context, e *embed.Etcd, timeout time.Duration, log *slog.Logger) error {
	if !e.Server.IsLearner() {
		return nil
	}
	log.Info("joined the etcd cluster as a learner; catching up before becoming a voting member")
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(promoteInterval)
	defer tick.Stop()
	var last error
	for e.Server.IsLearner() {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := e.Server.PromoteMember(pctx, uint64(e.Server.MemberID()))
		cancel()
		switch {
		case err == nil, errors.Is(err, membership.ErrMemberNotLearner):
		default:
			last = err
		}
		select {
		case <-tick.C:
		case err := <-e.Err():
			return fmt.Errorf("embedded etcd failed while catching up: %w", err)
		case <-deadline.C:
			return fmt.Errorf("embedded etcd still a learner after %v (last: %v): the cluster's leader did not find it caught up", timeout, last)
		case <-ctx.Done():
			return fmt.Errorf("waiting to become a voting etcd member: %w", ctx.Err())
		}
	}
	log.Info("promoted to a voting etcd member")
	return nil
}

// Member is one member of the embedded etcd cluster.
type Member struct {
	ID       uint64
	Name     string // empty until the member first started
	PeerURLs []string
	Learner  bool
}

// IDString is the member's id as etcd prints it (hex).
func (m Member) IDString() string { return strconv.FormatUint(m.ID, 16) }

// ErrNotEmbedded is returned by the member operations of a store over an
// external etcd: its members are its operators' to manage.
var ErrNotEmbedded = errors.New("the etcd cluster is external; its operators manage its members")

// Embedded tells whether the store embeds its etcd member.
func (s *Store) Embedded() bool { return s.etcd != nil }

// Clustered tells whether the embedded etcd is a member that talks to
// peers (false for a lone member, or an external etcd).
func (s *Store) Clustered() bool { return s.etcd != nil && s.etcd.member != nil }

// LocalMember is the id of this store's own etcd member (0 for an
// external etcd).
func (s *Store) LocalMember() uint64 {
	if s.etcd == nil {
		return 0
	}
	return uint64(s.etcd.etcd.Server.MemberID())
}

// EtcdLeader is the id of the member the local member follows as raft
// leader (0 when it knows none, or for an external etcd).
func (s *Store) EtcdLeader() uint64 {
	if s.etcd == nil {
		return 0
	}
	return s.etcd.etcd.Server.Lead()
}

// Members lists the embedded etcd cluster's members, as a quorum of them
// agrees.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	if s.etcd == nil {
		return nil, ErrNotEmbedded
	}
	resp, err := s.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing etcd members: %w", err)
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, Learner: m.IsLearner})
	}
	return out, nil
}

// ErrMemberBusy is returned when etcd refuses a change of its members for
// now: another member is still joining, or the change would cost the
// cluster its quorum.
var ErrMemberBusy = errors.New("etcd refuses the change of members now")

// AddLearner adds a member at peerURL to the cluster as a learner: it
// takes no part in the quorum until it caught up and promoted itself. It
// returns the new member's id and every member, the new one with its
// name as the cluster's initial list must give it.
func (s *Store) AddLearner(ctx context.Context, name, peerURL string) (uint64, []Member, error) {
	if s.etcd == nil {
		return 0, nil, ErrNotEmbedded
	}
	if s.etcd.member == nil {
		return 0, nil, errors.New("adding an etcd member: this server's etcd listens for no peers (start it with --peer-listen)")
	}
	resp, err := s.client.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		if isMemberBusy(err) {
			return 0, nil, fmt.Errorf("adding an etcd member: %w: %w", ErrMemberBusy, err)
		}
		return 0, nil, fmt.Errorf("adding an etcd member: %w", err)
	}
	var members []Member
	for _, m := range resp.Members {
		mm := Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, Learner: m.IsLearner}
		if m.ID == resp.Member.ID {
			mm.Name = name
		}
		members = append(members, mm)
	}
	return resp.Member.ID, members, nil
}

// RemoveMember removes a member from the cluster. etcd refuses (with
// ErrMemberBusy) a removal that would leave too few started members for a
// quorum.
func (s *Store) RemoveMember(ctx context.Context, id uint64) error {
	if s.etcd == nil {
		return ErrNotEmbedded
	}
	if _, err := s.client.MemberRemove(ctx, id); err != nil {
		if isMemberBusy(err) {
			return fmt.Errorf("removing etcd member %x: %w: %w", id, ErrMemberBusy, err)
		}
		return fmt.Errorf("removing etcd member %x: %w", id, err)
	}
	return nil
}

// SetPeerURL makes the local member's advertised peer URL the one it is
// configured with: a lone member that starts listening for peers was
// known by a placeholder until then.
func (s *Store) SetPeerURL(ctx context.Context) error {
	if s.etcd == nil || s.etcd.member == nil {
		return nil
	}
	id := s.LocalMember()
	ms, err := s.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.ID == id && (len(m.PeerURLs) != 1 || m.PeerURLs[0] != s.etcd.member.PeerURL) {
			if _, err := s.client.MemberUpdate(ctx, id, []string{s.etcd.member.PeerURL}); err != nil {
				return fmt.Errorf("advertising the etcd peer URL %s: %w", s.etcd.member.PeerURL, err)
			}
			s.log.Info("etcd member now advertises its peer URL", "url", s.etcd.member.PeerURL, "was", m.PeerURLs)
		}
	}
	return nil
}

// PeerURL is the local member's peer URL ("" when it listens for no
// peers).
func (s *Store) PeerURL() string {
	if s.etcd == nil || s.etcd.member == nil {
		return ""
	}
	return s.etcd.member.PeerURL
}

// Removed returns a channel closed when the embedded etcd stopped on its
// own: this member was removed from the cluster, or etcd failed. It is
// nil for an external etcd.
func (s *Store) Removed() <-chan struct{} {
	if s.etcd == nil {
		return nil
	}
	return s.etcd.etcd.Server.StopNotify()
}

// isMemberBusy tells whether etcd refused a change of members for now.
func isMemberBusy(err error) bool {
	return errors.Is(err, rpctypes.ErrTooManyLearners) || errors.Is(err, rpctypes.ErrUnhealthy)
}

// InitialCluster renders members as etcd's initial cluster list. A member
// that has not started yet has no name: it is named by its id.
func InitialCluster(members []Member) string {
	var parts []string
	for _, m := range members {
		name := m.Name
		if name == "" {
			name = "pending-" + m.IDString()
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}
