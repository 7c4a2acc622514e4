package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// A server is present while its key under the presence prefix lives: the
// key is bound to a session lease the server keeps alive, so it goes
// when the server dies or loses the store's quorum (a TTL later).

// Presence is one server's entry.
type Presence struct {
	Name string `json:"name"`
	// URL is where its API is reached ("" when it listens on no TCP
	// address).
	URL     string    `json:"url,omitempty"`
	Since   time.Time `json:"since"`
	Version string    `json:"version,omitempty"`
}

// PresencePrefix is the key prefix of the servers' presence under the
// store's prefix.
func PresencePrefix(storePrefix string) string { return storePrefix + "cluster/presence/" }

// Announce keeps self present until ctx ends, renewing its session when
// it is lost (the server was cut off from the quorum for longer than
// ttl).
func Announce(ctx context.Context, cli *clientv3.Client, prefix string, self Presence, ttl time.Duration, log *slog.Logger) {
	key := PresencePrefix(prefix) + self.Name
	secs := max(1, int((ttl+time.Second-1)/time.Second))
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := func() error {
			sess, err := concurrency.NewSession(cli, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
			if err != nil {
				return fmt.Errorf("opening a session: %w", err)
			}
			defer sess.Close()
			val, err := json.Marshal(self)
			if err != nil {
				return err
			}
			if _, err := cli.Put(ctx, key, string(val), clientv3.WithLease(sess.Lease())); err != nil {
				return fmt.Errorf("announcing the server: %w", err)
			}
			pause = 100 * time.Millisecond
			select {
			case <-ctx.Done():
			case <-sess.Done():
				log.Warn("the server's presence lapsed (cut off from the store); announcing it again", "server", self.Name)
			}
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			log.Warn("announcing the server's presence", "err", err, "retry_in", pause)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// Present lists the servers present now, by name.
func Present(ctx context.Context, cli *clientv3.Client, prefix string) (map[string]Presence, error) {
	p := PresencePrefix(prefix)
	resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading which servers are present: %w", err)
	}
	out := make(map[string]Presence, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var pr Presence
		if err := json.Unmarshal(kv.Value, &pr); err != nil {
			continue
		}
		pr.Name = strings.TrimPrefix(string(kv.Key), p)
		out[pr.Name] = pr
	}
	return out, nil
}
