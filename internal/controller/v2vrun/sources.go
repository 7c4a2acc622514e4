package v2vrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
	"github.com/polyvisor/polyvisor/internal/provider/vsphere"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// Kinds of source VM, for what a run may do to it.
const (
	kindVSphere = "vsphere"
	kindLibvirt = "libvirt"
)

// SourceVM is one VM of a migration's source as read.
type SourceVM struct {
	// ID is the provider's id ("" for a package or files); Name the
	// Polyvisor VM asked for ("": from the source's name).
	ID, Name string
	HW       v2v.Hardware
	Running  bool
	// Kind is vsphere, libvirt or "" (a package or files).
	Kind string
	// Err says why the VM could not be read.
	Err error
}

// Source is a migration's source, open.
type Source interface {
	// Read reads the source VMs' hardware, in the migration's order.
	Read(ctx context.Context) ([]SourceVM, error)
	// Streams opens streamed disks (nil for files).
	Streams() v2v.Streams
	// AfterVM releases what a VM's copy held (a vSphere export lease;
	// its snapshot once copied).
	AfterVM(ctx context.Context, vm string, err error)
	// ChangeTracking says whether a vSphere VM offers changed-block
	// tracking, and why not.
	ChangeTracking(ctx context.Context, name string) (bool, string)
	PowerOff(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	Close()
}

// Opener opens a migration's source; dir is its job directory.
type Opener interface {
	Open(ctx context.Context, m *api.VMMigration, dir string) (Source, error)
}

// Sources opens the sources a migration names: providers through a
// connection of their own made with the binding's credentials, uploads
// in the job directory, OVA URLs fetched there under the image import's
// rules.
type Sources struct {
	// Provider connects to the provider called name.
	Provider func(ctx context.Context, name string) (provider.Provider, error)
	// FetchPolicy is the image import's rule of what a URL may reach.
	FetchPolicy func() images.FetchPolicy
	// MaxDiskBytes bounds a disk (default v2v.DefaultMaxDiskBytes).
	MaxDiskBytes int64
}

// Open opens m's source.
func (s *Sources) Open(ctx context.Context, m *api.VMMigration, dir string) (Source, error) {
	maxDisk := s.MaxDiskBytes
	if maxDisk <= 0 {
		maxDisk = v2v.DefaultMaxDiskBytes
	}
	src := m.Spec.Source
	files := filepath.Join(dir, "files")
	switch src.Kind {
	case api.MigrationSourceProvider:
		if s.Provider == nil {
			return nil, errors.New("this server connects to no providers")
		}
		p, err := s.Provider(ctx, src.Provider)
		if err != nil {
			return nil, err
		}
		return &providerSource{p: p, vms: src.VMs}, nil
	case api.MigrationSourceURL:
		if err := os.MkdirAll(files, 0o700); err != nil {
			return nil, fmt.Errorf("making the job directory: %w", err)
		}
		ova := filepath.Join(files, "source.ova")
		if _, err := os.Stat(ova); err != nil {
			var policy images.FetchPolicy
			if s.FetchPolicy != nil {
				policy = s.FetchPolicy()
			}
			part := ova + ".part"
			if _, err := images.Fetch(ctx, src.URL, part, nil, images.WithPolicy(policy), images.WithMaxBytes(maxDisk)); err != nil {
				os.Remove(part)
				return nil, fmt.Errorf("fetching the OVA: %w", err)
			}
			if err := os.Rename(part, ova); err != nil {
				return nil, fmt.Errorf("fetching the OVA: %w", err)
			}
		}
		return &fileSource{read: func(context.Context) (v2v.Hardware, error) { return v2v.ReadOVA(ova, maxDisk) }}, nil
	case api.MigrationSourceUpload:
		if src.Format == api.MigrationFormatOVA {
			ova := filepath.Join(files, src.Files[0].Name)
			return &fileSource{read: func(context.Context) (v2v.Hardware, error) { return v2v.ReadOVA(ova, maxDisk) }}, nil
		}
		return &fileSource{read: func(ctx context.Context) (v2v.Hardware, error) { return diskHardware(ctx, src, files, maxDisk) }}, nil
	}
	return nil, fmt.Errorf("source kind %q", src.Kind)
}

// diskHardware is the VM of uploaded disk files: the hardware the
// migration gives, the disks as the image import's checks see them.
func diskHardware(ctx context.Context, src api.VMMigrationSource, dir string, maxDisk int64) (v2v.Hardware, error) {
	hw := *src.Hardware
	out := v2v.Hardware{Name: hw.Name, VCPUs: hw.VCPUs, MemoryMiB: hw.MemoryMiB, Firmware: hw.Firmware, GuestOS: hw.GuestOS}
	if out.Name == "" {
		first := src.Files[0].Name
		out.Name = strings.TrimSuffix(first, filepath.Ext(first))
	}
	if out.VCPUs == 0 {
		out.VCPUs = 1
	}
	if out.MemoryMiB == 0 {
		out.MemoryMiB = 1024
	}
	if out.Firmware == "" {
		out.Firmware = v2v.FirmwareBIOS
	}
	for i, f := range src.Files {
		path := filepath.Join(dir, f.Name)
		info, err := images.Inspect(ctx, path, api.ImageDisk, images.WithMaxVirtualBytes(maxDisk))
		if err != nil {
			return out, fmt.Errorf("disk file %s: %w", f.Name, err)
		}
		out.Disks = append(out.Disks, v2v.Disk{Name: fmt.Sprintf("disk%d", i), Bus: hw.DiskBus, CapacityBytes: info.VirtualSizeBytes,
			Source: v2v.DiskSource{Kind: v2v.SourceFile, Path: path, Format: info.Format}})
	}
	for _, mac := range hw.MACs {
		out.NICs = append(out.NICs, v2v.NIC{MAC: mac})
	}
	return out, nil
}

// fileSource is an OVA or disk files in the job directory.
type fileSource struct {
	read func(context.Context) (v2v.Hardware, error)
}

func (f *fileSource) Read(ctx context.Context) ([]SourceVM, error) {
	hw, err := f.read(ctx)
	if err != nil {
		return nil, err
	}
	return []SourceVM{{HW: hw}}, nil
}
func (f *fileSource) Streams() v2v.Streams                                  { return nil }
func (f *fileSource) AfterVM(context.Context, string, error)                {}
func (f *fileSource) ChangeTracking(context.Context, string) (bool, string) { return false, "" }
func (f *fileSource) PowerOff(context.Context, string) error {
	return errors.New("a package or disk file has no VM to power off")
}
func (f *fileSource) Delete(context.Context, string) error {
	return errors.New("a package or disk file has no VM to delete")
}
func (f *fileSource) Close() {}

// hardwareReader is a provider's view of its VMs' hardware, by name.
type hardwareReader interface {
	Hardware(ctx context.Context, name string) (v2v.Hardware, bool, error)
	Streams() v2v.Streams
}

// providerSource is VMs of a connected vSphere or libvirt provider.
type providerSource struct {
	p    provider.Provider
	vms  []api.VMMigrationSourceVM
	kind string
	hr   hardwareReader
	vs   *v2v.VSphereSource
}

func (s *providerSource) reader() (hardwareReader, error) {
	if s.hr != nil {
		return s.hr, nil
	}
	switch p := s.p.(type) {
	case *libvirt.Provider:
		s.kind, s.hr = kindLibvirt, v2v.LibvirtSource{Provider: p}
	case *vsphere.Provider:
		c, err := p.Client()
		if err != nil {
			return nil, err
		}
		s.vs = &v2v.VSphereSource{Client: c}
		s.kind, s.hr = kindVSphere, s.vs
	default:
		return nil, fmt.Errorf("a provider of type %q cannot be migrated from (vSphere and libvirt can)", s.p.Type())
	}
	return s.hr, nil
}

func (s *providerSource) Read(ctx context.Context) ([]SourceVM, error) {
	hr, err := s.reader()
	if err != nil {
		return nil, err
	}
	inv, err := s.p.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the provider's inventory: %w", err)
	}
	names := map[string]string{}
	for _, vm := range inv.VMs {
		names[vm.ID] = vm.Name
	}
	out := make([]SourceVM, len(s.vms))
	for i, want := range s.vms {
		out[i] = SourceVM{ID: want.ID, Name: want.Name, Kind: s.kind}
		name, ok := names[want.ID]
		if !ok {
			out[i].Err = fmt.Errorf("the provider has no VM %q", want.ID)
			out[i].HW.Name = want.ID
			continue
		}
		out[i].HW, out[i].Running, out[i].Err = hr.Hardware(ctx, name)
		if out[i].HW.Name == "" {
			out[i].HW.Name = name
		}
	}
	return out, nil
}

func (s *providerSource) Streams() v2v.Streams {
	if s.hr == nil {
		return nil
	}
	return s.hr.Streams()
}

func (s *providerSource) AfterVM(ctx context.Context, vm string, err error) {
	if s.vs != nil {
		_ = s.vs.Finish(ctx, vm, err == nil)
	}
}

func (s *providerSource) ChangeTracking(ctx context.Context, name string) (bool, string) {
	if s.vs == nil {
		return false, "the source is not vSphere"
	}
	return s.vs.ChangeTracking(ctx, name)
}

func (s *providerSource) PowerOff(ctx context.Context, id string) error { return s.p.PowerOff(ctx, id) }
func (s *providerSource) Delete(ctx context.Context, id string) error   { return s.p.Delete(ctx, id) }
func (s *providerSource) Close()                                        { _ = s.p.Close() }
