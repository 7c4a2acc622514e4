package libvirt

import "encoding/xml"

// newDomain is the domain CreateVM defines.
type newDomain struct {
	Name      string
	VirtType  string // kvm, qemu
	Arch      string // x86_64
	VCPUs     int
	MemoryMiB int64
	// Disk is the path of the overlay volume, a qcow2 file.
	Disk string
	// NICType is "network" (NICSource names a libvirt network), "user"
	// (QEMU's user networking) or "" for no NIC.
	NICType   string
	NICSource string
	// SerialLog records the serial console (a pty) in a file.
	SerialLog string
	// Volumes are recorded in the metadata for Delete.
	Volumes []volMeta
}

type defDomain struct {
	XMLName  xml.Name `xml:"domain"`
	Type     string   `xml:"type,attr"`
	Name     string   `xml:"name"`
	Metadata struct {
		VM metaXML
	} `xml:"metadata"`
	Memory sizeXML `xml:"memory"`
	VCPU   int     `xml:"vcpu"`
	OS     struct {
		Type struct {
			Arch    string `xml:"arch,attr,omitempty"`
			Machine string `xml:"machine,attr,omitempty"`
			Value   string `xml:",chardata"`
		} `xml:"type"`
		Boot struct {
			Dev string `xml:"dev,attr"`
		} `xml:"boot"`
	} `xml:"os"`
	Features   *defFeatures `xml:"features"`
	OnPoweroff string       `xml:"on_poweroff"`
	OnReboot   string       `xml:"on_reboot"`
	OnCrash    string       `xml:"on_crash"`
	Devices    struct {
		Disks      []defDisk     `xml:"disk"`
		Interfaces []defIface    `xml:"interface"`
		Serial     *defChar      `xml:"serial"`
		Console    *defChar      `xml:"console"`
		Graphics   []defGraphics `xml:"graphics"`
		Video      *defModel     `xml:"video"`
	} `xml:"devices"`
}

type defDisk struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Name string `xml:"name,attr"`
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		File string `xml:"file,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
}

type defFeatures struct {
	ACPI struct{} `xml:"acpi"`
	APIC struct{} `xml:"apic"`
}

type defModel struct {
	Model struct {
		Type string `xml:"type,attr"`
	} `xml:"model"`
}

type defIface struct {
	Type   string      `xml:"type,attr"`
	Source *defNetwork `xml:"source"`
	defModel
}

type defNetwork struct {
	Network string `xml:"network,attr"`
}

type defLog struct {
	File   string `xml:"file,attr"`
	Append string `xml:"append,attr"`
}

type defChar struct {
	Type   string  `xml:"type,attr"`
	Log    *defLog `xml:"log"`
	Target struct {
		Type string `xml:"type,attr,omitempty"`
		Port string `xml:"port,attr"`
	} `xml:"target"`
}

type defGraphics struct {
	Type     string `xml:"type,attr"`
	Port     string `xml:"port,attr"`
	Autoport string `xml:"autoport,attr"`
	Listen   struct {
		Type    string `xml:"type,attr"`
		Address string `xml:"address,attr"`
	} `xml:"listen"`
}

// xml renders the domain definition.
func (n newDomain) xml() string {
	var d defDomain
	d.Type = n.VirtType
	d.Name = n.Name
	d.Metadata.VM = metaXML{Owner: "polyvisor", Volumes: n.Volumes}
	d.Memory = sizeXML{Unit: "MiB", Value: uint64(n.MemoryMiB)}
	d.VCPU = n.VCPUs
	d.OS.Type.Arch = n.Arch
	d.OS.Type.Value = "hvm"
	if n.Arch == "x86_64" && (n.VirtType == "kvm" || n.VirtType == "qemu") {
		d.OS.Type.Machine = "q35"
		d.Features = &defFeatures{}
	}
	d.OS.Boot.Dev = "hd"
	d.OnPoweroff, d.OnReboot, d.OnCrash = "destroy", "restart", "destroy"

	disk := defDisk{Type: "file", Device: "disk"}
	disk.Driver.Name, disk.Driver.Type = "qemu", "qcow2"
	disk.Source.File = n.Disk
	disk.Target.Dev, disk.Target.Bus = "vda", "virtio"
	d.Devices.Disks = []defDisk{disk}

	switch n.NICType {
	case "network":
		nic := defIface{Type: "network", Source: &defNetwork{Network: n.NICSource}}
		nic.Model.Type = "virtio"
		d.Devices.Interfaces = []defIface{nic}
	case "user":
		nic := defIface{Type: "user"}
		nic.Model.Type = "virtio"
		d.Devices.Interfaces = []defIface{nic}
	}

	serial := &defChar{Type: "pty"}
	if n.SerialLog != "" {
		serial.Log = &defLog{File: n.SerialLog, Append: "on"}
	}
	serial.Target.Port = "0"
	d.Devices.Serial = serial
	console := &defChar{Type: "pty"}
	console.Target.Type, console.Target.Port = "serial", "0"
	d.Devices.Console = console

	g := defGraphics{Type: "vnc", Port: "-1", Autoport: "yes"}
	g.Listen.Type, g.Listen.Address = "address", "127.0.0.1"
	d.Devices.Graphics = []defGraphics{g}
	d.Devices.Video = &defModel{}
	d.Devices.Video.Model.Type = "vga"
	return marshal(d)
}
