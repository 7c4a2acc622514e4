// Package v2v moves VMs from other hypervisors into Polyvisor: it reads a
// source VM's hardware (from flags, an OVF envelope, libvirt domain XML or
// a vSphere VM's config), maps it onto what a Polyvisor VM has (Plan),
// and copies each disk into a qcow2 in a job directory (Run): streamed,
// zero ranges skipped, checkpointed per disk so that a restarted job
// resumes, checked by the same hostile-image checks as an image import,
// and verified against its source, before the disks become images and
// the VM is created on its destination host.
package v2v

// Firmware a source VM boots with.
const (
	FirmwareBIOS = "bios"
	FirmwareEFI  = "efi"
)

// Disk buses a source may attach a disk to.
const (
	BusVirtio = "virtio"
	BusSCSI   = "scsi"
	BusSATA   = "sata"
	BusIDE    = "ide"
	BusNVMe   = "nvme"
)

// Hardware is what a source VM is made of, as its hypervisor describes
// it.
type Hardware struct {
	Name      string `json:"name"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int64  `json:"memoryMiB"`
	// Firmware is bios or efi.
	Firmware string `json:"firmware"`
	// GuestOS is the source's name for the guest's system (vSphere's
	// guestId, an OVF OperatingSystemSection's description, libvirt's
	// libosinfo id), "" when unknown.
	GuestOS string `json:"guestOS,omitempty"`
	Disks   []Disk `json:"disks"`
	NICs    []NIC  `json:"nics,omitempty"`
}

// Disk is one disk of a source VM.
type Disk struct {
	Name string `json:"name"`
	// Bus is the controller the source attaches it to (Bus* values).
	Bus string `json:"bus,omitempty"`
	// CapacityBytes is the size the guest sees, as the source declares
	// it; the image's own virtual size is checked against it.
	CapacityBytes int64      `json:"capacityBytes,omitempty"`
	Source        DiskSource `json:"source"`
}

// Kinds of disk source.
const (
	// SourceFile is a disk image file on the machine running the job.
	SourceFile = "file"
	// SourceOVA is a member of an OVA (tar) package on that machine.
	SourceOVA = "ova"
	// SourceStream is a disk read through its hypervisor's API (libvirt's
	// volume download, vSphere's NFC lease), resumable at an offset.
	SourceStream = "stream"
)

// DiskSource says where a disk's bytes come from.
type DiskSource struct {
	Kind string `json:"kind"`
	// Path is the file, or the OVA holding Member.
	Path   string `json:"path,omitempty"`
	Member string `json:"member,omitempty"`
	// Ref names a streamed disk for its source (a libvirt volume's key,
	// a vSphere disk's device key).
	Ref string `json:"ref,omitempty"`
	// Format is the disk's format when it is known before the disk is
	// read (qemu-img's names); the image's own header decides.
	Format string `json:"format,omitempty"`
	// Digest is an OVA member's digest as the package's manifest lists
	// it: the member is checked against it as it is extracted.
	Digest *Digest `json:"digest,omitempty"`
}

// NIC is one network interface of a source VM.
type NIC struct {
	// Network is the source's network (port group, libvirt network or
	// bridge, OVF network name).
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
	// Model is the source's device model (vmxnet3, e1000, virtio...).
	Model string `json:"model,omitempty"`
}
