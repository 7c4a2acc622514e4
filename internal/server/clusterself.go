package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/cluster"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/version"
)

// This file is the server's own place among the servers of the control
// plane: its etcd member, the checks that it shares the others' CA, its
// server token, its record and its presence.

// serverRecord is a server of the control plane as the store keeps it
// (servers/<name>); whether it is up is its presence.
type serverRecord struct {
	Name     string    `json:"name"`
	URL      string    `json:"url,omitempty"`
	PeerURL  string    `json:"peerURL,omitempty"`
	MemberID uint64    `json:"memberId,omitempty"`
	JoinedAt time.Time `json:"joinedAt"`
	Version  int64     `json:"-"`
}

// tokenKindServer is the kind of a server's token: it calls the routes
// the servers use among themselves (auth.Peer), nothing else.
const tokenKindServer = "server"

// PeerTokenFile is where a server keeps its own server token (0600).
func (s *Server) PeerTokenFile() string { return filepath.Join(s.cfg.DataDir, "peer.token") }

// memberConfig says how the embedded etcd takes part in the servers'
// etcd cluster: from the data dir's cluster state (a server that joined,
// or one already clustered), and --peer-listen. Nil keeps a lone member.
func (s *Server) memberConfig() (*store.MemberConfig, error) {
	st, ok, err := cluster.LoadState(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if ok && st.Name != s.cfg.Name {
		return nil, fmt.Errorf("the data dir %s belongs to server %q: start it with --name %s (a server cannot be renamed)", s.cfg.DataDir, st.Name, st.Name)
	}
	if len(s.cfg.EtcdEndpoints) > 0 {
		if s.cfg.PeerListen != "" {
			return nil, errors.New("--peer-listen: the servers share the external etcd of --etcd-endpoints; there is no embedded etcd member to listen for peers")
		}
		if !ok {
			st = &cluster.State{Name: s.cfg.Name}
		}
		s.clusterState = st
		return nil, nil
	}
	if s.cfg.PeerListen == "" {
		if ok && st.PeerURL != "" {
			return nil, fmt.Errorf("--peer-listen: this server's etcd is a member of a cluster of servers (peer URL %s); give the address it listens on for its peers", st.PeerURL)
		}
		if !ok {
			st = &cluster.State{Name: s.cfg.Name}
		}
		s.clusterState = st
		return nil, nil
	}
	peerURL, err := s.peerURL()
	if err != nil {
		return nil, err
	}
	if !ok {
		st = &cluster.State{Name: s.cfg.Name}
	}
	if st.PeerURL != "" && st.PeerURL != peerURL && st.Joined {
		return nil, fmt.Errorf("--peer-listen, --advertise-address: this server's etcd member is known to the others at %s, not %s; keep the same peer address", st.PeerURL, peerURL)
	}
	if st.PeerURL != peerURL {
		st.PeerURL = peerURL
		if err := cluster.SaveState(s.cfg.DataDir, st); err != nil {
			return nil, err
		}
	}
	s.clusterState = st
	dir := filepath.Join(s.cfg.DataDir, "pki")
	u, _ := url.Parse(peerURL)
	hosts := append(append([]string(nil), s.certHosts...), u.Hostname())
	if _, err := pki.EnsurePeerCert(dir, hosts, s.cfg.Edge.Cert); err != nil {
		return nil, fmt.Errorf("preparing the etcd peer certificate: %w", err)
	}
	return &store.MemberConfig{
		Name: s.cfg.Name, PeerListen: s.cfg.PeerListen, PeerURL: peerURL,
		CertFile: filepath.Join(dir, pki.PeerCertFile), KeyFile: filepath.Join(dir, pki.PeerKeyFile), CAFile: filepath.Join(dir, pki.CACertFile),
		InitialCluster: st.InitialCluster, Join: st.Joined, ElectionTimeout: s.cfg.EtcdElectionTimeout,
	}, nil
}

// peerURL is the https URL the other servers' etcd members reach this
// one at: the host of --advertise-address (the first), else the host of
// --peer-listen when it names one, else this host's name; and the port of
// --peer-listen.
func (s *Server) peerURL() (string, error) {
	host, port, err := net.SplitHostPort(s.cfg.PeerListen)
	if err != nil {
		return "", fmt.Errorf("--peer-listen %q: want host:port or :port: %w", s.cfg.PeerListen, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("--peer-listen %q: the port must be a number from 1 to 65535 (the others must know it)", s.cfg.PeerListen)
	}
	switch {
	case len(s.cfg.AdvertiseAddresses) > 0:
		host = s.cfg.AdvertiseAddresses[0]
	case host != "" && !net.ParseIP(host).IsUnspecified():
	default:
		hn, err := os.Hostname()
		if err != nil || hn == "" {
			return "", errors.New("--peer-listen: give --advertise-address: this host has no name the other servers could reach it at")
		}
		host = hn
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// caIdentityKey holds the fingerprint of the servers' CA: every server of
// one store must hold that CA, or agents and clients would trust some
// servers and not others, and passwords sealed by one would not open on
// another.
const caIdentityKey = "cluster/ca"

// checkCA records the CA's fingerprint at the first start, and refuses a
// server whose CA is another: it was started on a store that already has
// servers, without joining them.
func (s *Server) checkCA(ctx context.Context) error {
	fp := pki.Fingerprint(s.caPEM)
	err := s.st.CreateKey(ctx, caIdentityKey, []byte(fp), 0)
	if err == nil || !errors.Is(err, store.ErrExists) {
		if err != nil {
			return fmt.Errorf("recording the servers' CA: %w", err)
		}
		return nil
	}
	have, err := s.st.GetKey(ctx, caIdentityKey)
	if err != nil {
		return fmt.Errorf("reading the servers' CA: %w", err)
	}
	if string(have) != fp {
		return fmt.Errorf("this server's CA (fingerprint %s, in %s) is not the one the other servers of this store hold (%s): "+
			"a server joins a control plane with 'polyvisor server --join URL --join-token T' (T from 'polyvisor cluster join-token'), "+
			"which hands it their CA; start it again from an empty data dir that way", fp, s.CAFile(), have)
	}
	return nil
}

// ensurePeerToken makes sure this server holds a working token of its
// own, minting one the first time (a joined server received its own).
func (s *Server) ensurePeerToken(ctx context.Context) error {
	path := s.PeerTokenFile()
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if id, err := s.identify(tok); err == nil && id.Kind == auth.KindServer && id.Name == s.cfg.Name {
			s.peerToken = tok
			return nil
		}
		s.log.Warn("the server token file does not match the store; minting a new one", "path", path)
	}
	tok, err := s.mintServerToken(ctx, s.cfg.Name)
	if err != nil {
		return err
	}
	if err := writeSecretFile(path, tok); err != nil {
		return fmt.Errorf("writing the server token: %w", err)
	}
	s.peerToken = tok
	return nil
}

// mintServerToken makes the token of server name, ending its earlier
// ones.
func (s *Server) mintServerToken(ctx context.Context, name string) (string, error) {
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindServer && t.Name == name }) {
		s.deleteToken(ctx, t)
	}
	tok, _, err := s.mintToken(ctx, auth.PrefixPeer, &tokenRecord{Kind: tokenKindServer, Name: name})
	if err != nil {
		return "", fmt.Errorf("creating the token of server %q: %w", name, err)
	}
	return tok, nil
}

// writeSecretFile writes a token to a 0600 file, atomically.
func writeSecretFile(path, tok string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// presenceTTL is how long after a server stopped renewing its presence
// the others see it gone.
func (s *Server) presenceTTL() time.Duration {
	if s.cfg.LeaderTTL > 0 {
		return s.cfg.LeaderTTL
	}
	return 5 * time.Second
}

// runCluster keeps this server's record and presence in the store and
// copies images from the others, until ctx ends; it stops the server when its etcd
// member was removed from the cluster.
func (s *Server) runCluster(ctx context.Context, url string) {
	if err := s.st.SetPeerURL(ctx); err != nil {
		s.log.Error("advertising the etcd peer URL", "err", err)
	}
	s.recordSelf(ctx, url)
	s.goBG(func() {
		cluster.Announce(ctx, s.st.Client(), s.st.Prefix(), cluster.Presence{Name: s.cfg.Name, URL: url, Since: time.Now().UTC(), Version: version.Get().Version},
			s.presenceTTL(), s.log.With("component", "cluster"))
	})
	s.goBG(func() { s.replicateImages(ctx) })
	if removed := s.st.Removed(); removed != nil {
		s.goBG(func() {
			select {
			case <-ctx.Done():
			case <-removed:
				if ctx.Err() == nil {
					s.fail(errors.New("the embedded etcd stopped: this server was removed from the cluster (polyvisor cluster remove), or its etcd failed (its log says which); to take part again, join with an empty data dir"))
				}
			}
		})
	}
}

// recordSelf writes this server's record: its URLs and etcd member as
// they are now.
func (s *Server) recordSelf(ctx context.Context, url string) {
	for range 10 {
		cur, ok := s.servers.Get(s.cfg.Name)
		next := &serverRecord{Name: s.cfg.Name, URL: url, PeerURL: s.st.PeerURL(), MemberID: s.st.LocalMember(), JoinedAt: time.Now().UTC()}
		var err error
		if !ok {
			_, err = s.servers.Create(ctx, s.cfg.Name, next)
		} else {
			next.JoinedAt = cur.JoinedAt
			if *next == (serverRecord{Name: cur.Name, URL: cur.URL, PeerURL: cur.PeerURL, MemberID: cur.MemberID, JoinedAt: cur.JoinedAt}) {
				return
			}
			_, err = s.servers.Update(ctx, s.cfg.Name, next, cur.Version)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrExists) {
			s.log.Warn("recording this server among the servers", "err", err)
			return
		}
	}
}

// fail stops the server for a reason the daemon reports.
func (s *Server) fail(err error) {
	s.log.Error("stopping the server", "err", err)
	select {
	case s.fatal <- err:
	default:
	}
}

// Fatal yields an error when the server stopped on its own (its etcd
// member was removed from the cluster).
func (s *Server) Fatal() <-chan error { return s.fatal }

// marshalJSON is json.Marshal for values that always encode.
func marshalJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// JoinURLs are the URLs a server started with cfg will be reached at, as
// a server that joins tells the one it joins: its API's, and its etcd
// member's (empty with an external etcd).
func JoinURLs(cfg Config) (apiURL, peerURL string, err error) {
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil || port == "" || port == "0" {
		return "", "", fmt.Errorf("--listen %q: a server that joins others listens on a fixed TCP port they can reach", cfg.Listen)
	}
	switch {
	case len(cfg.AdvertiseAddresses) > 0:
		host = cfg.AdvertiseAddresses[0]
	case host != "" && !net.ParseIP(host).IsUnspecified():
	default:
		hn, herr := os.Hostname()
		if herr != nil || hn == "" {
			return "", "", errors.New("--advertise-address: give the address the other servers reach this one at")
		}
		host = hn
	}
	apiURL = "https://" + net.JoinHostPort(host, port)
	if len(cfg.EtcdEndpoints) > 0 {
		return apiURL, "", nil
	}
	if cfg.PeerListen == "" {
		return "", "", errors.New("--peer-listen: a server that joins others with the embedded etcd needs an address its etcd member listens on for the others (e.g. :7444)")
	}
	s := &Server{cfg: cfg}
	peerURL, err = s.peerURL()
	return apiURL, peerURL, err
}
