package libvirt

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Snapshots lists a domain's snapshots, oldest first, marking the current
// one.
func (p *Provider) Snapshots(ctx context.Context, id string) ([]provider.Snapshot, error) {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return nil, err
	}
	snaps, _, err := l.DomainListAllSnapshots(dom, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of vm %s: %w", dom.Name, classify(err))
	}
	current := ""
	if cur, err := l.DomainSnapshotCurrent(dom, 0); err == nil {
		current = cur.Name
	} else if !isCode(err, golibvirt.ErrNoDomainSnapshot) {
		return nil, fmt.Errorf("read current snapshot of vm %s: %w", dom.Name, classify(err))
	}
	out := make([]provider.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		raw, err := l.DomainSnapshotGetXMLDesc(s, 0)
		if err != nil {
			if isCode(err, golibvirt.ErrNoDomainSnapshot) {
				continue // deleted since the list
			}
			return nil, fmt.Errorf("describe snapshot %s of vm %s: %w", s.Name, dom.Name, classify(err))
		}
		var x snapshotXML
		if err := unmarshal(raw, &x); err != nil {
			return nil, fmt.Errorf("parse snapshot %s of vm %s: %w", s.Name, dom.Name, err)
		}
		snap := provider.Snapshot{Name: s.Name, Description: x.Description, Current: s.Name == current}
		if sec, err := strconv.ParseInt(x.CreationTime, 10, 64); err == nil {
			snap.CreatedAt = time.Unix(sec, 0).UTC()
		}
		out = append(out, snap)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// CreateSnapshot takes an internal snapshot: of the disks for a stopped
// domain, of the disks and memory for a running one. Every disk must be
// qcow2 (provider.ErrUnsupported otherwise); a name in use is
// provider.ErrExists.
func (p *Provider) CreateSnapshot(ctx context.Context, id, name, description string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("snapshot vm %s: the snapshot needs a name", dom.Name)
	}
	if _, err := l.DomainSnapshotLookupByName(dom, name, 0); err == nil {
		return fmt.Errorf("snapshot vm %s: snapshot %q: %w", dom.Name, name, provider.ErrExists)
	} else if !isCode(err, golibvirt.ErrNoDomainSnapshot) {
		return fmt.Errorf("snapshot vm %s: %w", dom.Name, classify(err))
	}
	raw, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return fmt.Errorf("describe vm %s: %w", dom.Name, classify(err))
	}
	d, err := parseDomain(raw)
	if err != nil {
		return fmt.Errorf("parse xml of vm %s: %w", dom.Name, err)
	}
	for _, disk := range d.Devices.Disks {
		if disk.Device != "" && disk.Device != "disk" {
			continue
		}
		if d.Type != "test" && disk.Driver.Type != "qcow2" {
			return fmt.Errorf("snapshot vm %s: disk %s is %q, internal snapshots need qcow2: %w",
				dom.Name, disk.Target.Dev, disk.Driver.Type, provider.ErrUnsupported)
		}
	}
	x := snapshotXML{Name: name, Description: description}
	if _, err := l.DomainSnapshotCreateXML(dom, marshal(x), 0); err != nil {
		return fmt.Errorf("snapshot vm %s as %q: %w", dom.Name, name, classify(err))
	}
	p.log.Info("created snapshot", "vm", dom.Name, "snapshot", name)
	return nil
}

// RevertSnapshot brings the domain back to the snapshot: its disks, and
// its memory and running state when the snapshot has them.
func (p *Provider) RevertSnapshot(ctx context.Context, id, name string) error {
	l, dom, snap, err := p.snapshot(ctx, id, name)
	if err != nil {
		return err
	}
	if err := l.DomainRevertToSnapshot(snap, 0); err != nil {
		return fmt.Errorf("revert vm %s to snapshot %q: %w", dom.Name, name, classify(err))
	}
	p.log.Info("reverted to snapshot", "vm", dom.Name, "snapshot", name)
	return nil
}

// DeleteSnapshot deletes one snapshot; its children are kept.
func (p *Provider) DeleteSnapshot(ctx context.Context, id, name string) error {
	l, dom, snap, err := p.snapshot(ctx, id, name)
	if err != nil {
		return err
	}
	if err := l.DomainSnapshotDelete(snap, 0); err != nil {
		return fmt.Errorf("delete snapshot %q of vm %s: %w", name, dom.Name, classify(err))
	}
	p.log.Info("deleted snapshot", "vm", dom.Name, "snapshot", name)
	return nil
}

func (p *Provider) snapshot(ctx context.Context, id, name string) (*golibvirt.Libvirt, golibvirt.Domain, golibvirt.DomainSnapshot, error) {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return nil, dom, golibvirt.DomainSnapshot{}, err
	}
	snap, err := l.DomainSnapshotLookupByName(dom, name, 0)
	if err != nil {
		return nil, dom, snap, fmt.Errorf("look up snapshot %q of vm %s: %w", name, dom.Name, classify(err))
	}
	return l, dom, snap, nil
}
