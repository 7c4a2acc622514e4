package libvirt

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Defaults for a CreateSpec that leaves them out.
const (
	defaultVCPUs     = 1
	defaultMemoryMiB = 512
	// serialLogDir is where libvirtd keeps its QEMU logs; the serial
	// console's recording goes beside them, as <name>-serial.log.
	serialLogDir = "/var/log/libvirt/qemu"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CreateVM makes a domain whose disk is a new qcow2 volume backed by the
// image spec.Template (a path on the libvirt host), in the pool
// spec.Datastore or the provider's own pool. The first NIC joins the
// libvirt network spec.Network, or QEMU's user networking when it is
// "user" and no network has that name; an empty spec.Network means the
// "default" network when it is active, else no NIC. The domain is started
// when spec.PowerOn. A name in use (by a domain, or by a leftover volume)
// is provider.ErrExists; a failure after the volume was made removes what
// was made.
func (p *Provider) CreateVM(ctx context.Context, spec provider.CreateSpec) (*provider.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !nameRE.MatchString(spec.Name) {
		return nil, fmt.Errorf("create vm %q: a name is 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", spec.Name)
	}
	if !path.IsAbs(spec.Template) {
		return nil, fmt.Errorf("create vm %s: the template must be the absolute path of a disk image on the libvirt host, not %q", spec.Name, spec.Template)
	}
	l, ep, facts, err := p.conn()
	if err != nil {
		return nil, err
	}
	if err := checkPlacement(l, facts, spec); err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, err)
	}
	if _, err := l.DomainLookupByName(spec.Name); err == nil {
		return nil, fmt.Errorf("create vm %s: a vm of that name: %w", spec.Name, provider.ErrExists)
	} else if !isCode(err, golibvirt.ErrNoDomain) {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, classify(err))
	}
	nicType, nicSource, err := nicFor(l, spec.Network)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, err)
	}
	pool, err := storagePool(l, spec.Datastore)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, err)
	}
	volName := spec.Name + ".qcow2"
	if _, err := l.StorageVolLookupByName(pool, volName); err == nil {
		return nil, fmt.Errorf("create vm %s: volume %s in pool %s: %w", spec.Name, volName, pool.Name, provider.ErrExists)
	} else if !isCode(err, golibvirt.ErrNoStorageVol) {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, classify(err))
	}
	format, capacity, err := imageInfo(l, spec.Template)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// From here on, a failure undoes what was made.
	var undo []func()
	done := false
	defer func() {
		if done {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}()
	vol, diskPath, err := createOverlay(l, pool, volName, spec.Template, format, capacity)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.Name, err)
	}
	undo = append(undo, func() {
		if err := l.StorageVolDelete(vol, 0); err != nil {
			p.log.Error("cannot remove the volume of a failed create", "vm", spec.Name, "volume", volName, "err", err)
		}
	})
	p.log.Info("created overlay volume", "vm", spec.Name, "pool", pool.Name, "path", diskPath, "base", spec.Template, "baseFormat", format)

	nd := newDomain{
		Name:      spec.Name,
		VirtType:  facts.virtType,
		Arch:      facts.arch,
		VCPUs:     spec.VCPUs,
		MemoryMiB: spec.MemoryMiB,
		Disk:      diskPath,
		NICType:   nicType,
		NICSource: nicSource,
		SerialLog: path.Join(serialLogDir, spec.Name+"-serial.log"),
		Volumes:   []volMeta{{Pool: pool.Name, Name: volName, Key: vol.Key}},
	}
	if nd.VCPUs <= 0 {
		nd.VCPUs = defaultVCPUs
	}
	if nd.MemoryMiB <= 0 {
		nd.MemoryMiB = defaultMemoryMiB
	}
	dom, err := l.DomainDefineXML(nd.xml())
	if err != nil {
		if _, lerr := l.DomainLookupByName(spec.Name); lerr == nil {
			return nil, fmt.Errorf("create vm %s: a vm of that name: %w: %w", spec.Name, provider.ErrExists, err)
		}
		return nil, fmt.Errorf("define vm %s: %w", spec.Name, classify(err))
	}
	undo = append(undo, func() {
		if err := undefine(l, dom); err != nil {
			p.log.Error("cannot undefine the domain of a failed create", "vm", spec.Name, "err", err)
		}
	})
	if spec.PowerOn {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.DomainCreate(dom); err != nil {
			return nil, fmt.Errorf("start vm %s: %w", spec.Name, classify(err))
		}
		undo = append(undo, func() { l.DomainDestroy(dom) })
	}
	vm, err := p.describe(l, ep, facts, dom, "")
	if err != nil {
		return nil, err
	}
	done = true
	p.log.Info("created vm", "vm", spec.Name, "id", vm.ID, "virt", facts.virtType, "poweredOn", spec.PowerOn)
	return vm, nil
}

// checkPlacement refuses placement the host cannot match: libvirt has no
// datacenters or clusters, and one host.
func checkPlacement(l *golibvirt.Libvirt, facts hostFacts, spec provider.CreateSpec) error {
	if spec.Datacenter != "" || spec.Cluster != "" {
		return fmt.Errorf("libvirt has no datacenters or clusters (asked for %q/%q): %w",
			spec.Datacenter, spec.Cluster, provider.ErrNotFound)
	}
	if spec.Host == "" || spec.Host == facts.id {
		return nil
	}
	name, err := l.ConnectGetHostname()
	if err != nil {
		return fmt.Errorf("read libvirt hostname: %w", classify(err))
	}
	if spec.Host != name {
		return fmt.Errorf("host %q: this libvirt host is %s (%s): %w", spec.Host, name, facts.id, provider.ErrNotFound)
	}
	return nil
}

// nicFor decides the first NIC: its type ("network", "user" or "" for
// none) and the network it joins.
func nicFor(l *golibvirt.Libvirt, network string) (string, string, error) {
	name := network
	if name == "" {
		name = "default"
	}
	n, err := l.NetworkLookupByName(name)
	switch {
	case err == nil && network == "":
		if active, err := l.NetworkIsActive(n); err != nil || active != 1 {
			return "", "", nil
		}
		return "network", name, nil
	case err == nil:
		return "network", name, nil
	case network == "" && (isCode(err, golibvirt.ErrNoNetwork) || isCode(err, golibvirt.ErrNoSupport)):
		return "", "", nil
	case network == "user" && (isCode(err, golibvirt.ErrNoNetwork) || isCode(err, golibvirt.ErrNoSupport)):
		return "user", "", nil
	}
	err = classify(err)
	if errors.Is(err, provider.ErrNotFound) || errors.Is(err, provider.ErrUnsupported) {
		return "", "", fmt.Errorf("network %q: %w", network, provider.ErrNotFound)
	}
	return "", "", fmt.Errorf("look up network %q: %w", network, err)
}
