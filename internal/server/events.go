package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

var eventTypes = []string{api.EventVM, api.EventHost, api.EventImage, api.EventOperation, api.EventProvider,
	api.EventNetwork, api.EventSubnet, api.EventPort, api.EventSecurityGroup, api.EventFloatingIP, api.EventMigration}

func action(c store.ChangeType, prev bool) string {
	switch {
	case c == store.Delete:
		return "deleted"
	case prev:
		return "updated"
	}
	return "created"
}

// streamEvents streams lifecycle and operation events as NDJSON.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	want := map[string]bool{}
	if v := r.URL.Query().Get("types"); v != "" {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			ok := false
			for _, known := range eventTypes {
				ok = ok || t == known
			}
			if !ok {
				s.writeError(w, r, api.Invalid("types", "unknown event type %q (known: %s)", t, strings.Join(eventTypes, ", ")))
				return
			}
			want[t] = true
		}
	} else {
		for _, t := range eventTypes {
			want[t] = true
		}
	}
	// The stream ends when the caller's credentials or roles change, and
	// each user may hold only so many open.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	release, err := s.guard.open(r, streamEvents, s.rolesAccess(auth.FromContext(ctx)), func(string) { cancel() })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	since, err := sinceParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// h turns each kind's records into events. Each event is shown only
	// to those who may read its object: the stream of a project member
	// carries nothing of other projects.
	h := recordHandlers{}
	visible := func(project string, p auth.Permission) bool { return s.can(r, project, p) }
	if want[api.EventVM] {
		on(h, s.vms, func(c store.Change[api.VM]) (api.Event, bool) {
			return api.Event{Type: api.EventVM, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "vm", Name: c.Obj.Name, UID: c.Obj.UID, Project: c.Obj.Project}, VM: s.vmView(r, c.Obj)},
				visible(c.Obj.Project, auth.PermVMRead)
		})
	}
	if want[api.EventHost] {
		on(h, s.hosts, func(c store.Change[api.Host]) (api.Event, bool) {
			h := s.hostView(r, c.Obj) // as GET /v1/hosts shows it
			return api.Event{Type: api.EventHost, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "host", Name: c.Name, UID: c.Obj.UID}, Host: &h}, true
		})
	}
	if want[api.EventImage] {
		on(h, s.images, func(c store.Change[api.Image]) (api.Event, bool) {
			return api.Event{Type: api.EventImage, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "image", Name: c.Obj.Name, UID: c.Obj.UID, Project: c.Obj.Project}, Image: c.Obj},
				c.Obj.Public || visible(c.Obj.Project, auth.PermImageRead)
		})
	}
	if want[api.EventOperation] {
		on(h, s.ops, func(c store.Change[api.Operation]) (api.Event, bool) {
			return api.Event{Type: api.EventOperation, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "operation", Name: c.Name, Project: c.Obj.Target.Project}, Operation: c.Obj},
				visible(c.Obj.Target.Project, auth.PermOperationRead)
		})
	}
	if want[api.EventProvider] {
		on(h, s.providers, func(c store.Change[api.Provider]) (api.Event, bool) {
			return api.Event{Type: api.EventProvider, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "provider", Name: c.Name, UID: c.Obj.UID}, Provider: c.Obj},
				visible(providerBinding(c.Obj), auth.PermProviderRead)
		})
	}
	s.networkEventHandlers(want, h, visible)
	if want[api.EventMigration] {
		on(h, s.vmMigrations, func(c store.Change[api.VMMigration]) (api.Event, bool) {
			return api.Event{Type: api.EventMigration, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "migration", Name: c.Obj.Name, UID: c.Obj.UID, Project: c.Obj.Project}, Migration: c.Obj},
				visible(c.Obj.Project, auth.PermVMRead)
		})
	}
	// The events come from etcd's history, in revision order, not from
	// this server's memory: every server of a cluster tells the same
	// events with the same revisions, so a client cut off from one
	// resumes at another with ?since= and misses nothing.
	recs, _, after, err := s.st.Follow(ctx, since, h.kinds()...)
	switch {
	case errors.Is(err, store.ErrCompacted):
		s.writeError(w, r, &api.Error{Code: api.CodeGone, Message: fmt.Sprintf("the events after revision %d are no longer kept: read the objects again and follow from now", since)})
		return
	case errors.Is(err, store.ErrFutureRevision):
		s.writeError(w, r, api.Invalid("since", "revision %d has not been reached yet", since))
		return
	case err != nil:
		s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: "cannot follow the store's changes: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(api.HeaderRevision, strconv.FormatInt(after, 10))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-ctx.Done():
			return
		case rec, ok := <-recs:
			if !ok {
				// The watch ended (this server lost its store): the
				// client resumes elsewhere from the last revision.
				return
			}
			mk := h[rec.Kind]
			if mk == nil {
				continue
			}
			ev, show := mk(rec)
			if !show {
				continue
			}
			ev.Time = time.Now().UTC()
			ev.Revision = rec.Rev
			if err := enc.Encode(ev); err != nil {
				return
			}
			if flusher != nil && len(recs) == 0 {
				flusher.Flush()
			}
		}
	}
}

// sinceParam reads ?since=, the revision of the last event a client got
// (0 when absent: from now).
func sinceParam(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, api.Invalid("since", "a revision is a whole number ≥ 0, not %q", v)
	}
	return n, nil
}

// recordHandlers turn the store's records of one kind (keyed by kind)
// into the event a caller may see, or say it may not.
type recordHandlers map[string]func(store.Record) (api.Event, bool)

func (h recordHandlers) kinds() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// on makes the records of c's kind into events through mk.
func on[T any](h recordHandlers, c *store.Collection[T], mk func(store.Change[T]) (api.Event, bool)) {
	h[c.Kind()] = func(r store.Record) (api.Event, bool) {
		ch, ok := c.ChangeOf(r)
		if !ok {
			return api.Event{}, false
		}
		return mk(ch)
	}
}
