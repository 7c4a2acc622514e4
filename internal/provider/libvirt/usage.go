package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

var _ provider.UsageReader = (*Provider)(nil)

// Usage reads every running domain's CPU time and memory in one call
// (virConnectGetAllDomainStats): CPU as the cumulative cpu.time, which the
// sampler turns into cores between two readings; memory as the balloon's
// resident set (balloon.rss, what QEMU holds on the host), else the
// balloon's current size. The host's own use is not read: it is the sum
// of its domains'.
func (p *Provider) Usage(ctx context.Context) (*provider.Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, _, facts, err := p.conn()
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	recs, err := l.ConnectGetAllDomainStats(nil,
		uint32(golibvirt.DomainStatsCPUTotal|golibvirt.DomainStatsBalloon),
		uint32(golibvirt.ConnectGetAllDomainsStatsActive))
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", classify(err))
	}
	out := &provider.Usage{VMs: make([]provider.VMUsage, 0, len(recs))}
	for _, r := range recs {
		u, ok := domainUsage(r.Params)
		if !ok {
			continue // no CPU time: nothing to sample
		}
		u.ID, u.Host = uuidString(r.Dom.UUID), facts.id
		out.VMs = append(out.VMs, u)
	}
	return out, nil
}

// domainUsage reads one domain's statistics; ok is false without
// cpu.time.
func domainUsage(params []golibvirt.TypedParam) (u provider.VMUsage, ok bool) {
	var rss, current uint64
	for _, tp := range params {
		v, isU := tp.Value.I.(uint64)
		if !isU {
			continue
		}
		switch tp.Field {
		case "cpu.time": // ns
			u.CPUSeconds, u.Cumulative, ok = float64(v)/1e9, true, true
		case "balloon.rss": // KiB
			rss = v
		case "balloon.current": // KiB
			current = v
		}
	}
	mem := rss
	if mem == 0 {
		mem = current
	}
	u.MemoryBytes = int64(min(mem, 1<<43)) << 10
	return u, ok
}
