package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Relay passes host heartbeats between servers. An agent heartbeats the
// one server it talks to, but host liveness is judged by the leader: each
// server writes, every interval, the hosts that heartbeat it since its
// last write, under beats/<server>; every server reads the others' writes
// and counts each host named as heard at that moment, by its own clock
// (so the servers' clocks need not agree). A heartbeat reaches the leader
// at most an interval late.
type Relay struct {
	cli      *clientv3.Client
	prefix   string // of the beats keys
	self     string
	interval time.Duration
	heard    func(host string, t time.Time)
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]struct{}
}

// NewRelay makes the relay of server self in the store under prefix;
// heard is told of every host another server heard from. Run runs it.
func NewRelay(cli *clientv3.Client, storePrefix, self string, interval time.Duration, heard func(string, time.Time), log *slog.Logger) *Relay {
	return &Relay{cli: cli, prefix: storePrefix + "cluster/beats/", self: self, interval: interval, heard: heard, log: log,
		pending: map[string]struct{}{}}
}

// Beat records that host heartbeat this server.
func (r *Relay) Beat(host string) {
	r.mu.Lock()
	r.pending[host] = struct{}{}
	r.mu.Unlock()
}

// Run writes this server's heartbeats and reads the others' until ctx
// ends.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.follow(ctx) })
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			r.flush(ctx)
		}
	}
}

// beatsRecord is what a server writes.
type beatsRecord struct {
	Hosts []string `json:"hosts"`
}

func (r *Relay) flush(ctx context.Context) {
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return
	}
	hosts := make([]string, 0, len(r.pending))
	for h := range r.pending {
		hosts = append(hosts, h)
	}
	r.pending = map[string]struct{}{}
	r.mu.Unlock()
	slices.Sort(hosts)
	val, err := json.Marshal(beatsRecord{Hosts: hosts})
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, r.interval*4)
	defer cancel()
	if _, err := r.cli.Put(wctx, r.prefix+r.self, string(val)); err != nil && ctx.Err() == nil {
		r.log.Debug("relaying heartbeats", "err", err)
		// Keep them for the next round.
		r.mu.Lock()
		for _, h := range hosts {
			r.pending[h] = struct{}{}
		}
		r.mu.Unlock()
	}
}

// follow reads the other servers' heartbeats.
func (r *Relay) follow(ctx context.Context) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range r.cli.Watch(wctx, r.prefix, clientv3.WithPrefix()) {
			if resp.Err() != nil {
				break
			}
			now := time.Now()
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut || strings.TrimPrefix(string(ev.Kv.Key), r.prefix) == r.self {
					continue
				}
				var rec beatsRecord
				if json.Unmarshal(ev.Kv.Value, &rec) != nil {
					continue
				}
				for _, h := range rec.Hosts {
					r.heard(h, now)
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(r.interval):
		}
	}
}
