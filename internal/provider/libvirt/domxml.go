package libvirt

import (
	"encoding/xml"
	"strings"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// domainXML is the part of a domain's XML description the provider reads.
type domainXML struct {
	XMLName xml.Name `xml:"domain"`
	Type    string   `xml:"type,attr"`
	Name    string   `xml:"name"`
	UUID    string   `xml:"uuid"`
	Memory  sizeXML  `xml:"memory"`
	VCPU    struct {
		Current int `xml:"current,attr"`
		Max     int `xml:",chardata"`
	} `xml:"vcpu"`
	OS struct {
		Type string `xml:"type"`
	} `xml:"os"`
	Metadata struct {
		Polyvisor *metaXML `xml:"https://polyvisor.dev/xmlns/libvirt/1 vm"`
		OSInfo    *struct {
			OS struct {
				ID string `xml:"id,attr"`
			} `xml:"os"`
		} `xml:"http://libosinfo.org/xmlns/libvirt/domain/1.0 libosinfo"`
	} `xml:"metadata"`
	Devices struct {
		Disks      []diskXML     `xml:"disk"`
		Interfaces []ifaceXML    `xml:"interface"`
		Graphics   []graphicsXML `xml:"graphics"`
	} `xml:"devices"`
}

type sizeXML struct {
	Unit  string `xml:"unit,attr"`
	Value uint64 `xml:",chardata"`
}

// bytes converts a libvirt size to bytes (libvirt's default unit is KiB
// for memory).
func (s sizeXML) bytes(defaultUnit string) uint64 {
	unit := s.Unit
	if unit == "" {
		unit = defaultUnit
	}
	mult := map[string]uint64{
		"b": 1, "bytes": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
	}[strings.ToLower(unit)]
	if mult == 0 {
		mult = 1 << 10
	}
	return s.Value * mult
}

type diskXML struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		File     string `xml:"file,attr"`
		Dev      string `xml:"dev,attr"`
		Pool     string `xml:"pool,attr"`
		Volume   string `xml:"volume,attr"`
		Protocol string `xml:"protocol,attr"`
		Name     string `xml:"name,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
}

// path is where the disk's data is: a file, a device, pool/volume or
// protocol:name.
func (d diskXML) path() string {
	s := d.Source
	switch {
	case s.File != "":
		return s.File
	case s.Dev != "":
		return s.Dev
	case s.Volume != "":
		return s.Pool + "/" + s.Volume
	case s.Name != "":
		return s.Protocol + ":" + s.Name
	}
	return ""
}

type ifaceXML struct {
	Type string `xml:"type,attr"`
	MAC  struct {
		Address string `xml:"address,attr"`
	} `xml:"mac"`
	Source struct {
		Network string `xml:"network,attr"`
		Bridge  string `xml:"bridge,attr"`
		Dev     string `xml:"dev,attr"`
	} `xml:"source"`
}

type graphicsXML struct {
	Type    string `xml:"type,attr"`
	Port    int    `xml:"port,attr"`
	Listen  string `xml:"listen,attr"`
	Passwd  string `xml:"passwd,attr"`
	Listens []struct {
		Type    string `xml:"type,attr"`
		Address string `xml:"address,attr"`
	} `xml:"listen"`
}

// metaXML is the provider's own domain metadata, in its own namespace: the volumes CreateVM
// made, which Delete removes.
type metaXML struct {
	XMLName xml.Name  `xml:"https://polyvisor.dev/xmlns/libvirt/1 vm"`
	Owner   string    `xml:"owner,attr,omitempty"`
	Volumes []volMeta `xml:"volume"`
}

type volMeta struct {
	Pool string `xml:"pool,attr"`
	Name string `xml:"name,attr"`
	Key  string `xml:"key,attr,omitempty"`
}

func parseDomain(raw string) (*domainXML, error) {
	var d domainXML
	if err := unmarshal(raw, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

func unmarshal(raw string, v any) error { return xml.Unmarshal([]byte(raw), v) }

// vm converts the parsed description to a provider VM (without its power
// state, host or disk sizes).
func (d *domainXML) vm(uri string) provider.VM {
	vm := provider.VM{
		ID:        d.UUID,
		Name:      d.Name,
		Path:      vmPath(uri, d.Name),
		VCPUs:     d.VCPU.Max,
		MemoryMiB: int64(d.Memory.bytes("KiB") >> 20),
		GuestOS:   d.OS.Type,
	}
	if d.VCPU.Current > 0 {
		vm.VCPUs = d.VCPU.Current
	}
	if o := d.Metadata.OSInfo; o != nil && o.OS.ID != "" {
		vm.GuestOS = o.OS.ID
	}
	for _, disk := range d.Devices.Disks {
		if disk.Device != "" && disk.Device != "disk" {
			continue // cdrom, floppy, lun
		}
		format := disk.Driver.Type
		if format == "" && disk.Type == "file" {
			format = "raw"
		}
		vm.Disks = append(vm.Disks, provider.Disk{Name: disk.Target.Dev, Format: format, Path: disk.path()})
	}
	for _, nic := range d.Devices.Interfaces {
		network := nic.Source.Network
		if network == "" {
			network = nic.Source.Bridge
		}
		if network == "" {
			network = nic.Source.Dev
		}
		if network == "" {
			network = nic.Type // "user"
		}
		vm.NICs = append(vm.NICs, provider.NIC{MAC: nic.MAC.Address, Network: network})
	}
	return vm
}

// snapshotXML is a domain snapshot's description.
type snapshotXML struct {
	XMLName      xml.Name `xml:"domainsnapshot"`
	Name         string   `xml:"name"`
	Description  string   `xml:"description,omitempty"`
	State        string   `xml:"state,omitempty"`
	CreationTime string   `xml:"creationTime,omitempty"`
}

// volumeXML describes a storage volume: what CreateVM asks for, and what
// it reads about a template image.
type volumeXML struct {
	XMLName  xml.Name `xml:"volume"`
	Name     string   `xml:"name"`
	Key      string   `xml:"key,omitempty"`
	Capacity *sizeXML `xml:"capacity"`
	Target   struct {
		Path   string `xml:"path,omitempty"`
		Format struct {
			Type string `xml:"type,attr"`
		} `xml:"format"`
	} `xml:"target"`
	BackingStore *backingXML `xml:"backingStore"`
}

type backingXML struct {
	Path   string `xml:"path"`
	Format struct {
		Type string `xml:"type,attr"`
	} `xml:"format"`
}

// poolXML describes a directory storage pool.
type poolXML struct {
	XMLName xml.Name `xml:"pool"`
	Type    string   `xml:"type,attr"`
	Name    string   `xml:"name"`
	Target  struct {
		Path string `xml:"path"`
	} `xml:"target"`
}

func marshal(v any) string {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		// The provider marshals only its own plain structs.
		panic("libvirt: marshal xml: " + err.Error())
	}
	return string(b)
}
