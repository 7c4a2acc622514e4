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
		return &libvirtStream{p: s.Provider, key: d.Source.Ref, size: size}, nil
	}
}

type libvirtStream struct {
	p    *libvirt.Provider
	key  string
	size int64
}

func (s *libvirtStream) Size() int64 { return s.size }

// libvirtSegment is what one of a stream's downloads asks libvirt for: a
// reader closed before the end of a download has the rest of that
// download read and dropped (go-libvirt cannot abort one).
const libvirtSegment = 32 << 20

// Open downloads the volume from off in the background into a pipe, in
// downloads of libvirtSegment; closing the reader ends the download.
func (s *libvirtStream) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	if off < 0 || off > s.size {
		return nil, fmt.Errorf("offset %d outside the volume's %d bytes", off, s.size)
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		var err error
		for o := off; o < s.size && err == nil; o += libvirtSegment {
			err = s.p.DownloadVolumeRange(ctx, s.key, o, min(libvirtSegment, s.size-o), pw)
		}
		pw.CloseWithError(err)
	}()
	return &cancelReader{ReadCloser: pr, cancel: cancel}, nil
}

type cancelReader struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelReader) Close() error {
	c.cancel()
	return c.ReadCloser.Close()
}
