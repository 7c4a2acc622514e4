package api

// Image kinds.
const (
	ImageDisk   = "disk"
	ImageKernel = "kernel"
	ImageInitrd = "initrd"
)

// Image states.
const (
	ImageImporting = "importing"
	ImageReady     = "ready"
	ImageFailed    = "failed"
)

// Image is a stored image: a qcow2 disk image, or a kernel or initrd for
// direct kernel boot.
type Image struct {
	Meta
	Kind string `json:"kind"`
	// SourceFormat is the format detected on import (qcow2, raw, vmdk, vpc,
	// vhdx, vdi); disks are always stored as qcow2.
	SourceFormat     string `json:"sourceFormat,omitempty"`
	Format           string `json:"format"`
	SizeBytes        int64  `json:"sizeBytes"`
	VirtualSizeBytes int64  `json:"virtualSizeBytes,omitempty"`
	SHA256           string `json:"sha256"`
	State            string `json:"state"`
	Message          string `json:"message,omitempty"`
	Source           string `json:"source,omitempty"`
	// Public images can be used by VMs of every project.
	Public bool `json:"public,omitempty"`
}

// ImageCreate is the body of POST /v1/images when importing from a URL.
// An upload instead sends the file as application/octet-stream with
// ?name=&kind= in the query.
type ImageCreate struct {
	Name   string            `json:"name"`
	Kind   string            `json:"kind,omitempty"` // default disk
	URL    string            `json:"url"`
	Labels map[string]string `json:"labels,omitempty"`
	Public bool              `json:"public,omitempty"`
}
