package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/cluster"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/server"
)

// joinServers makes a new server one of a running control plane's: it
// asks the server at joinURL, trusted through the CA fingerprint the
// server join token carries, to add it, and installs what comes back
// (sealed for the token's holder): the servers' CA, secrets key, admin
// and metrics tokens, its own server token, and its etcd member's place
// in the cluster. A data dir that already joined is left as it is.
func joinServers(ctx context.Context, cfg server.Config, joinURL, joinToken string, log *slog.Logger) error {
	st, ok, err := cluster.LoadState(cfg.DataDir)
	if err != nil {
		return err
	}
	if ok && (st.Joined || st.JoinedFrom != "") {
		log.Info("this server joined the control plane before; --join and --join-token are not needed any more", "server", st.Name, "joinedFrom", st.JoinedFrom)
		return nil
	}
	if joinToken == "" {
		return errors.New("--join-token: give the server join token from 'polyvisor cluster join-token' with --join")
	}
	for _, p := range []string{filepath.Join("etcd", "member"), filepath.Join("pki", pki.CAKeyFile), "secret.key"} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, p)); err == nil {
			return fmt.Errorf("--join: the data dir %s already holds a control plane of its own (%s); a server joins others from an empty data dir", cfg.DataDir, p)
		}
	}
	tok, fp := server.SplitJoinToken(joinToken)
	if fp == "" {
		return errors.New("--join-token: this token carries no CA fingerprint; copy it whole from 'polyvisor cluster join-token'")
	}
	tc, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		return fmt.Errorf("--join-token: %w", err)
	}
	apiURL, peerURL, err := server.JoinURLs(cfg)
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{URL: joinURL, TLSConfig: tc})
	if err != nil {
		return fmt.Errorf("--join: %w", err)
	}
	// The store takes one new member at a time, and only once its members
	// have been connected for a few seconds: a 503 is tried again.
	var ans *api.ClusterJoined
	for deadline := time.Now().Add(joinPatience); ; {
		ans, err = c.JoinCluster(ctx, api.ClusterJoin{JoinToken: joinToken, Name: cfg.Name, URL: apiURL, PeerURL: peerURL})
		if err == nil || client.ErrorCode(err) != api.CodeUnavailable || time.Now().After(deadline) {
			break
		}
		log.Info("the store takes no new member now; trying again", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return err
	}
	b, err := cluster.Open(ans.Sealed, tok, cfg.Name)
	if err != nil {
		return err
	}
	if got := pki.Fingerprint(b.CACert); got != fp {
		return fmt.Errorf("--join: the CA handed over (fingerprint %s) is not the one the join token pins (%s)", got, fp)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	if err := pki.InstallCA(filepath.Join(cfg.DataDir, "pki"), b.CACert, b.CAKey); err != nil {
		return err
	}
	if err := secrets.InstallKey(filepath.Join(cfg.DataDir, "secret.key"), b.SecretKey); err != nil {
		return err
	}
	for file, tok := range map[string]string{"admin.token": b.AdminToken, "metrics.token": b.MetricsToken, "peer.token": b.PeerToken} {
		if err := writeToken(filepath.Join(cfg.DataDir, file), tok); err != nil {
			return err
		}
	}
	state := &cluster.State{Name: cfg.Name, PeerURL: peerURL, Joined: peerURL != "", InitialCluster: b.InitialCluster,
		MemberID: b.MemberID, JoinedFrom: joinURL}
	if err := cluster.SaveState(cfg.DataDir, state); err != nil {
		return err
	}
	log.Info("joined the control plane", "server", cfg.Name, "through", joinURL, "member", cluster.FormatMemberID(b.MemberID))
	return nil
}

// joinPatience is how long a join waits for the store to take a new
// member.
const joinPatience = time.Minute

func writeToken(path, tok string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}
