package libvirt

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// ExportedVM is a domain as a migration out of libvirt reads it.
type ExportedVM struct {
	Name      string
	UUID      string
	VCPUs     int
	MemoryMiB int64
	// Firmware is bios or efi.
	Firmware string
	// GuestOS is the domain's libosinfo id, "" when it has none.
	GuestOS string
	// Running: the domain is not shut off.
	Running bool
	Disks   []ExportedDisk
	NICs    []ExportedNIC
}

// ExportedDisk is a disk of an exported domain: a storage volume, read
// through DownloadVolume.
type ExportedDisk struct {
	// Target is the guest's name for it (vda, sda).
	Target string
	// Bus is virtio, scsi, sata, ide...
	Bus string
	// Key is the storage volume's key; Path where its file is.
	Key  string
	Path string
	// Format is the volume's format (raw, qcow2); Capacity the guest's
	// size; Size the bytes DownloadVolume streams (the file's length).
	Format   string
	Capacity int64
	Size     int64
}

// ExportedNIC is a NIC of an exported domain.
type ExportedNIC struct {
	// Network is the libvirt network, or the bridge or device it is on.
	Network string
	MAC     string
	Model   string
}

// exportXML is the part of a domain's XML an export reads.
type exportXML struct {
	Name   string  `xml:"name"`
	UUID   string  `xml:"uuid"`
	Memory sizeXML `xml:"memory"`
	VCPU   int     `xml:"vcpu"`
	OS     struct {
		Firmware string `xml:"firmware,attr"`
		Loader   *struct {
			Type string `xml:"type,attr"`
		} `xml:"loader"`
	} `xml:"os"`
	Metadata struct {
		OSInfo *struct {
			OS struct {
				ID string `xml:"id,attr"`
			} `xml:"os"`
		} `xml:"http://libosinfo.org/xmlns/libvirt/domain/1.0 libosinfo"`
	} `xml:"metadata"`
	Devices struct {
		Disks []struct {
			diskXML
			Target struct {
				Dev string `xml:"dev,attr"`
				Bus string `xml:"bus,attr"`
			} `xml:"target"`
			BackingStore *struct {
				Type string `xml:"type,attr"`
			} `xml:"backingStore"`
		} `xml:"disk"`
		Interfaces []struct {
			ifaceXML
			Model struct {
				Type string `xml:"type,attr"`
			} `xml:"model"`
		} `xml:"interface"`
	} `xml:"devices"`
}

// ExportVM reads the domain called name: its hardware and, for each of
// its disks, the storage volume it is. A disk that is not a volume of a
// storage pool (a block device, a network disk, a file outside every
// pool) cannot be read remotely and is an error naming it.
func (p *Provider) ExportVM(ctx context.Context, name string) (*ExportedVM, error) {
	l, _, _, err := p.conn()
	if err != nil {
		return nil, err
	}
	dom, err := l.DomainLookupByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up domain %q: %w", name, classify(err))
	}
	raw, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
	if err != nil {
		return nil, fmt.Errorf("read domain %q: %w", name, classify(err))
	}
	var d exportXML
	if err := xml.Unmarshal([]byte(raw), &d); err != nil {
		return nil, fmt.Errorf("parse domain %q: %w", name, err)
	}
	state, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return nil, fmt.Errorf("read state of domain %q: %w", name, classify(err))
	}
	vm := &ExportedVM{Name: d.Name, UUID: d.UUID, VCPUs: d.VCPU, MemoryMiB: int64(d.Memory.bytes("KiB") >> 20),
		Firmware: "bios", Running: golibvirt.DomainState(state) != golibvirt.DomainShutoff}
	if d.OS.Firmware == "efi" || d.OS.Loader != nil && d.OS.Loader.Type == "pflash" {
		vm.Firmware = "efi"
	}
	if o := d.Metadata.OSInfo; o != nil {
		vm.GuestOS = o.OS.ID
	}
	for _, disk := range d.Devices.Disks {
		if disk.Device != "" && disk.Device != "disk" {
			continue // cdrom, floppy, lun
		}
		if disk.BackingStore != nil && disk.BackingStore.Type != "" {
			return nil, fmt.Errorf("domain %q disk %s has a backing chain: flatten it first (virsh blockpull)", name, disk.Target.Dev)
		}
		var vol golibvirt.StorageVol
		switch {
		case disk.Source.Volume != "":
			pool, perr := l.StoragePoolLookupByName(disk.Source.Pool)
			if perr != nil {
				return nil, fmt.Errorf("domain %q disk %s: look up pool %q: %w", name, disk.Target.Dev, disk.Source.Pool, classify(perr))
			}
			vol, err = l.StorageVolLookupByName(pool, disk.Source.Volume)
		case disk.Source.File != "":
			vol, err = l.StorageVolLookupByPath(disk.Source.File)
		default:
			return nil, fmt.Errorf("domain %q disk %s is %q, not a storage volume: it cannot be read through libvirt", name, disk.Target.Dev, disk.path())
		}
		if err != nil {
			return nil, fmt.Errorf("domain %q disk %s (%s) is not a volume of a storage pool: %w", name, disk.Target.Dev, disk.path(), classify(err))
		}
		xd, err := l.StorageVolGetXMLDesc(vol, 0)
		if err != nil {
			return nil, fmt.Errorf("read volume %s: %w", vol.Key, classify(err))
		}
		var vx volumeXML
		if err := xml.Unmarshal([]byte(xd), &vx); err != nil {
			return nil, fmt.Errorf("parse volume %s: %w", vol.Key, err)
		}
		if vx.BackingStore != nil && vx.BackingStore.Path != "" {
			return nil, fmt.Errorf("domain %q disk %s has a backing file %s: flatten it first (virsh blockpull)", name, disk.Target.Dev, vx.BackingStore.Path)
		}
		_, capacity, _, err := l.StorageVolGetInfo(vol)
		if err != nil {
			return nil, fmt.Errorf("read volume %s: %w", vol.Key, classify(err))
		}
		// The stream is the file: its physical length, not the
		// allocation (sparse) nor the capacity (qcow2).
		size, err := volumeLength(l, vol)
		if err != nil {
			return nil, err
		}
		vm.Disks = append(vm.Disks, ExportedDisk{Target: disk.Target.Dev, Bus: disk.Target.Bus, Key: vol.Key, Path: disk.path(),
			Format: vx.Target.Format.Type, Capacity: int64(capacity), Size: size})
	}
	for _, n := range d.Devices.Interfaces {
		net := n.Source.Network
		if net == "" {
			net = n.Source.Bridge
		}
		if net == "" {
			net = n.Source.Dev
		}
		if net == "" {
			net = n.Type
		}
		vm.NICs = append(vm.NICs, ExportedNIC{Network: net, MAC: n.MAC.Address, Model: n.Model.Type})
	}
	return vm, nil
}

// volumeLength is the bytes a download of vol streams: its physical
// size where libvirt reports it (StorageVolGetInfoFlags with
// VIR_STORAGE_VOL_GET_PHYSICAL), else its capacity.
func volumeLength(l *golibvirt.Libvirt, vol golibvirt.StorageVol) (int64, error) {
	_, _, physical, err := l.StorageVolGetInfoFlags(vol, 1)
	if err != nil {
		return 0, fmt.Errorf("read length of volume %s: %w", vol.Key, classify(err))
	}
	return int64(physical), nil
}

// DownloadVolume writes the bytes of the storage volume whose key is key
// to w, from offset to its end, through libvirt's stream (which works for
// a remote daemon as for a local one). Ending ctx ends the download.
func (p *Provider) DownloadVolume(ctx context.Context, key string, offset int64, w io.Writer) error {
	l, _, _, err := p.conn()
	if err != nil {
		return err
	}
	vol, err := l.StorageVolLookupByKey(key)
	if err != nil {
		return fmt.Errorf("look up volume %s: %w", key, classify(err))
	}
	err = l.StorageVolDownload(vol, ctxWriter{ctx, w}, uint64(offset), 0, 0)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("download volume %s at %d: %w", key, offset, err)
	}
	return nil
}

// ctxWriter stops writing once ctx ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// VolumeLength is the bytes DownloadVolume streams of the volume whose key
// is key.
func (p *Provider) VolumeLength(ctx context.Context, key string) (int64, error) {
	l, _, _, err := p.conn()
	if err != nil {
		return 0, err
	}
	vol, err := l.StorageVolLookupByKey(key)
	if err != nil {
		return 0, fmt.Errorf("look up volume %s: %w", key, classify(err))
	}
	return volumeLength(l, vol)
}

// DownloadVolumeRange writes length bytes (0: to its end) of the storage
// volume whose key is key to w, from offset. A write to w that fails, or
// ctx ending, does not abort libvirt's stream, which go-libvirt cannot
// do without hanging the connection: the rest of the range is read and
// dropped, and the error returned.
func (p *Provider) DownloadVolumeRange(ctx context.Context, key string, offset, length int64, w io.Writer) error {
	l, _, _, err := p.conn()
	if err != nil {
		return err
	}
	vol, err := l.StorageVolLookupByKey(key)
	if err != nil {
		return fmt.Errorf("look up volume %s: %w", key, classify(err))
	}
	dw := &drainWriter{ctx: ctx, w: w}
	err = l.StorageVolDownload(vol, dw, uint64(offset), uint64(length), 0)
	if dw.err != nil {
		return dw.err
	}
	if err != nil {
		return fmt.Errorf("download volume %s at %d: %w", key, offset, err)
	}
	return nil
}

// drainWriter writes to w until a write fails or ctx ends, then drops
// what it is given, keeping the first error.
type drainWriter struct {
	ctx context.Context
	w   io.Writer
	err error
}

func (d *drainWriter) Write(p []byte) (int, error) {
	if d.err == nil {
		d.err = d.ctx.Err()
	}
	if d.err == nil {
		_, d.err = d.w.Write(p)
	}
	return len(p), nil
}
