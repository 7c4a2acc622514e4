package v2v

import (
	"context"
	"fmt"
	"io"

	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
)

// LibvirtSource reads VMs from a libvirt daemon: a domain's XML for the
// hardware, its disks' storage volumes through libvirt's download stream
// (so a remote daemon's disks are read as a local one's).
type LibvirtSource struct {
	Provider *libvirt.Provider
}

// Hardware reads the domain called name. A domain that runs is copied as
// it is, like a disk after a crash: the plan warns of it.
func (s LibvirtSource) Hardware(ctx context.Context, name string) (Hardware, bool, error) {
	vm, err := s.Provider.ExportVM(ctx, name)
	if err != nil {
		return Hardware{}, false, err
	}
	hw := Hardware{Name: vm.Name, VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, Firmware: vm.Firmware, GuestOS: vm.GuestOS}
	for _, d := range vm.Disks {
		hw.Disks = append(hw.Disks, Disk{Name: d.Target, Bus: d.Bus, CapacityBytes: d.Capacity,
			Source: DiskSource{Kind: SourceStream, Ref: d.Key, Format: d.Format}})
	}
	for _, n := range vm.NICs {
		hw.NICs = append(hw.NICs, NIC{Network: n.Network, MAC: n.MAC, Model: n.Model})
	}
	return hw, vm.Running, nil
}

// Streams opens the storage volumes of a plan's disks (their Ref, the
// volume's key).
func (s LibvirtSource) Streams() Streams {
	return func(ctx context.Context, vm string, d Disk) (Stream, error) {
		size, err := s.Provider.VolumeLength(ctx, d.Source.Ref)
		if err != nil {
			return nil, err
		}
		return &libvirtStream{p: s.Provider, key: d.Source.Ref, size: size, format: d.Source.Format}, nil
	}
}

type libvirtStream struct {
	p      *libvirt.Provider
	key    string
	size   int64
	format string
}

func (s *libvirtStream) Size() int64 { return s.size }

// Open downloads the volume from off in the background into a pipe;
// closing the reader ends the download: libvirt's stream goes on to its
// end, dropped (go-libvirt cannot abort a download without hanging its
// connection), so a stream is closed early only when it must be.
func (s *libvirtStream) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	if off < 0 || off > s.size {
		return nil, fmt.Errorf("offset %d outside the volume's %d bytes", off, s.size)
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(s.p.DownloadVolumeRange(ctx, s.key, off, 0, pw))
	}()
	return &cancelReader{ReadCloser: pr, cancel: cancel}, nil
}

// DeclaredFormat is the volume's format as libvirt knows it: a stream
// that is not declared raw is not tried as one (closing it early costs
// reading it whole).
func (s *libvirtStream) DeclaredFormat() string { return s.format }

type cancelReader struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelReader) Close() error {
	c.cancel()
	return c.ReadCloser.Close()
}
