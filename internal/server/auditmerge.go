package server

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// Each server writes its own audit log, on its own disk: a request is
// recorded by the server that answered it, and no write of one server
// waits on another. A query is answered by merging every server's
// records: the answering server reads its own log and, through the peer
// route, each other server's, and merges them by time. (One shared
// location would need a shared file system every request's record waits
// on; asking the peers costs only the query.) A server that is down or
// unreachable is named in the answer (client.AuditPartialHeader), whose
// records then come from the others.

// auditSource is one server's records, in time order.
type auditSource struct {
	server string
	recs   <-chan api.AuditRecord
	errs   <-chan error
}

// auditSources opens the local log and every other server's, and names
// the servers whose logs cannot be read.
func (s *Server) auditSources(ctx context.Context, q api.AuditQuery, opts audit.QueryOptions) ([]auditSource, []string) {
	recs := make(chan api.AuditRecord, 64)
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		defer close(recs)
		if _, err := s.audit.QueryIn(ctx, q, opts, func(ar *api.AuditRecord) bool {
			select {
			case recs <- *ar:
				return true
			case <-ctx.Done():
				return false
			}
		}); err != nil {
			errs <- err
		}
	}()
	sources := []auditSource{{server: s.cfg.Name, recs: recs, errs: errs}}
	var missing []string
	peers, err := s.peers(ctx)
	if err != nil {
		s.log.Warn("finding the other servers' audit logs", "err", err)
	}
	reached := map[string]bool{s.cfg.Name: true}
	pq := q
	pq.Limit = 0
	for _, p := range peers {
		r, e := p.c.PeerAudit(ctx, pq, client.PeerAuditScope{Projects: opts.Projects, Whole: opts.MaxScanBytes == 0})
		reached[p.name] = true
		sources = append(sources, auditSource{server: p.name, recs: r, errs: e})
	}
	for _, rec := range listAll(s.servers, nil) {
		if !reached[rec.Name] {
			missing = append(missing, rec.Name)
		}
	}
	return sources, missing
}

// auditMerged calls fn with every server's records matching q, in time
// order, each naming its server, until fn returns false. Before the first
// record it calls start with the servers whose logs could not be opened;
// it returns those whose records could not all be read.
func (s *Server) auditMerged(ctx context.Context, q api.AuditQuery, opts audit.QueryOptions, start func(missing []string), fn func(*api.AuditRecord) bool) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sources, missing := s.auditSources(ctx, q, opts)
	type head struct {
		rec api.AuditRecord
		ok  bool
	}
	heads := make([]head, len(sources))
	var localErr error
	next := func(i int) {
		r, ok := <-sources[i].recs
		heads[i] = head{rec: r, ok: ok}
		if !ok {
			if err := <-sources[i].errs; err != nil && ctx.Err() == nil {
				if i == 0 {
					localErr = err
					return
				}
				s.log.Warn("reading a peer's audit records", "server", sources[i].server, "err", err)
				missing = append(missing, sources[i].server)
			}
		}
	}
	for i := range sources {
		next(i)
	}
	if localErr != nil {
		return nil, localErr
	}
	slices.Sort(missing)
	start(missing)
	for {
		best := -1
		for i, h := range heads {
			if h.ok && (best < 0 || earlier(h.rec.Time, sources[i].server, heads[best].rec.Time, sources[best].server)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		rec := heads[best].rec
		rec.Server = sources[best].server
		if opts.Projects != nil && !slices.Contains(opts.Projects, rec.Project) {
			// A peer scopes its answer as asked; what it sends beyond
			// the caller's projects is dropped here all the same.
			next(best)
			continue
		}
		if !fn(&rec) {
			break
		}
		next(best)
	}
	if localErr != nil {
		return nil, localErr
	}
	slices.Sort(missing)
	return slices.Compact(missing), nil
}

func earlier(a time.Time, as string, b time.Time, bs string) bool {
	if !a.Equal(b) {
		return a.Before(b)
	}
	return as < bs
}

// setAuditPartial names, on an answer, the servers whose records it lacks.
func setAuditPartial(h interface{ Set(string, string) }, missing []string) {
	if len(missing) > 0 {
		h.Set(client.AuditPartialHeader, strings.Join(missing, ","))
	}
}
