package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

var eventTypes = []string{api.EventVM, api.EventHost, api.EventImage, api.EventOperation, api.EventProvider,
	api.EventNetwork, api.EventSubnet, api.EventPort, api.EventSecurityGroup, api.EventFloatingIP}

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
	events := make(chan api.Event, 256)
	// Each event is shown only to those who may read its object: the
	// stream of a project member carries nothing of other projects.
	visible := func(project string, p auth.Permission) bool { return s.can(r, project, p) }
	if want[api.EventVM] {
		go forward(ctx, s.vms.Subscribe(ctx), events, func(c store.Change[api.VM]) (api.Event, bool) {
			return api.Event{Type: api.EventVM, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "vm", Name: c.Obj.Name, UID: c.Obj.UID, Project: c.Obj.Project}, VM: s.vmView(r, c.Obj)},
				visible(c.Obj.Project, auth.PermVMRead)
		})
	}
	if want[api.EventHost] {
		go forward(ctx, s.hosts.Subscribe(ctx), events, func(c store.Change[api.Host]) (api.Event, bool) {
			h := s.withAllocation(c.Obj) // as GET /v1/hosts shows it
			return api.Event{Type: api.EventHost, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "host", Name: c.Name, UID: c.Obj.UID}, Host: &h}, true
		})
	}
	if want[api.EventImage] {
		go forward(ctx, s.images.Subscribe(ctx), events, func(c store.Change[api.Image]) (api.Event, bool) {
			return api.Event{Type: api.EventImage, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "image", Name: c.Obj.Name, UID: c.Obj.UID, Project: c.Obj.Project}, Image: c.Obj},
				c.Obj.Public || visible(c.Obj.Project, auth.PermImageRead)
		})
	}
	if want[api.EventOperation] {
		go forward(ctx, s.ops.Subscribe(ctx), events, func(c store.Change[api.Operation]) (api.Event, bool) {
			return api.Event{Type: api.EventOperation, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "operation", Name: c.Name, Project: c.Obj.Target.Project}, Operation: c.Obj},
				visible(c.Obj.Target.Project, auth.PermOperationRead)
		})
	}
	if want[api.EventProvider] {
		go forward(ctx, s.providers.Subscribe(ctx), events, func(c store.Change[api.Provider]) (api.Event, bool) {
			return api.Event{Type: api.EventProvider, Action: action(c.Type, c.Prev != nil), Object: api.Ref{Kind: "provider", Name: c.Name, UID: c.Obj.UID}, Provider: c.Obj},
				visible(providerBinding(c.Obj), auth.PermProviderRead)
		})
	}
	s.forwardNetworkEvents(ctx, want, events, visible)
	w.Header().Set("Content-Type", "application/x-ndjson")
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
		case ev := <-events:
			if err := enc.Encode(ev); err != nil {
				return
			}
			if flusher != nil && len(events) == 0 {
				flusher.Flush()
			}
		}
	}
}

// forward turns store changes into events until the subscription ends.
func forward[T any](ctx interface{ Done() <-chan struct{} }, ch <-chan store.Change[T], out chan<- api.Event, mk func(store.Change[T]) (api.Event, bool)) {
	for c := range ch {
		ev, ok := mk(c)
		if !ok {
			continue
		}
		ev.Time = time.Now().UTC()
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		}
	}
}
