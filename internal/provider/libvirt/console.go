package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Console returns the VNC display of a running domain, from its live XML.
// A listen address of 0.0.0.0 or :: is reported as the URI's host (or
// 127.0.0.1 for a local daemon); a password, when set, is the Ticket.
func (p *Provider) Console(ctx context.Context, id string) (*provider.Console, error) {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return nil, err
	}
	_, ep, _, err := p.conn()
	if err != nil {
		return nil, err
	}
	st, err := state(l, dom)
	if err != nil {
		return nil, err
	}
	if powerState(st) == provider.PowerStopped {
		return nil, fmt.Errorf("console of vm %s: it is stopped: %w", dom.Name, provider.ErrBadState)
	}
	raw, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLSecure)
	if err != nil {
		return nil, fmt.Errorf("describe vm %s: %w", dom.Name, classify(err))
	}
	d, err := parseDomain(raw)
	if err != nil {
		return nil, fmt.Errorf("parse xml of vm %s: %w", dom.Name, err)
	}
	for _, g := range d.Devices.Graphics {
		if g.Type != "vnc" || g.Port <= 0 {
			continue
		}
		host := g.Listen
		for _, li := range g.Listens {
			if li.Type == "address" && li.Address != "" {
				host = li.Address
			}
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = ep.host
			if host == "" {
				host = "127.0.0.1"
			}
		}
		return &provider.Console{Type: "vnc", Host: host, Port: g.Port, Ticket: g.Passwd}, nil
	}
	return nil, fmt.Errorf("console of vm %s: it has no vnc display: %w", dom.Name, provider.ErrUnsupported)
}
