package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Watch follows libvirt's domain lifecycle events: a domain defined,
// started, stopped, suspended, resumed, shut down or crashed is reported
// as Change{VM} with the domain as it is now; an undefined domain (or one
// gone before it could be described, like a transient domain that
// stopped) as Change{DeletedVM}. fn runs on Watch's goroutine, one change
// at a time. Watch returns nil when ctx ends, and an error wrapping
// provider.ErrUnreachable as soon as the connection to libvirtd is lost.
func (p *Provider) Watch(ctx context.Context, fn func(provider.Change)) error {
	if err := ctx.Err(); err != nil {
		return nil
	}
	l, _, _, err := p.conn()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	events, err := l.LifecycleEvents(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("register for libvirt lifecycle events: %w", classify(err))
	}
	defer func() {
		cancel()
		// go-libvirt's forwarder may be blocked handing over one more
		// event: take it so that its goroutine ends.
		go func() {
			for range events {
			}
		}()
	}()
	lost := l.Disconnected()
	p.log.Debug("watching libvirt lifecycle events")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch libvirt %s: connection lost: %w", p.cfg.URL, provider.ErrUnreachable)
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch libvirt %s: event stream closed: %w", p.cfg.URL, provider.ErrUnreachable)
			}
			if ch, ok := p.change(l, ev); ok {
				fn(ch)
			}
		}
	}
}

// change turns a lifecycle event into a Change. ok is false when the
// event could not be turned into one because the connection is gone
// (Watch then returns).
func (p *Provider) change(l *golibvirt.Libvirt, ev golibvirt.DomainEventLifecycleMsg) (provider.Change, bool) {
	id := uuidString(ev.Dom.UUID)
	kind := golibvirt.DomainEventType(ev.Event)
	p.log.Debug("libvirt lifecycle event", "vm", ev.Dom.Name, "id", id, "event", eventName(kind), "detail", ev.Detail)
	if kind == golibvirt.DomainEventUndefined {
		return provider.Change{DeletedVM: id}, true
	}
	dom, err := l.DomainLookupByUUID(ev.Dom.UUID)
	if err == nil {
		var vm *provider.VM
		if vm, err = p.vmByDomain(l, dom); err == nil {
			return provider.Change{VM: vm}, true
		}
	}
	if isCode(err, golibvirt.ErrNoDomain) {
		return provider.Change{DeletedVM: id}, true
	}
	if !l.IsConnected() {
		return provider.Change{}, false
	}
	p.log.Warn("cannot describe domain after event: asking for a resync", "vm", ev.Dom.Name, "err", err)
	return provider.Change{Resync: true}, true
}

func eventName(t golibvirt.DomainEventType) string {
	switch t {
	case golibvirt.DomainEventDefined:
		return "defined"
	case golibvirt.DomainEventUndefined:
		return "undefined"
	case golibvirt.DomainEventStarted:
		return "started"
	case golibvirt.DomainEventSuspended:
		return "suspended"
	case golibvirt.DomainEventResumed:
		return "resumed"
	case golibvirt.DomainEventStopped:
		return "stopped"
	case golibvirt.DomainEventShutdown:
		return "shutdown"
	case golibvirt.DomainEventPmsuspended:
		return "pmsuspended"
	case golibvirt.DomainEventCrashed:
		return "crashed"
	}
	return fmt.Sprintf("event-%d", t)
}
