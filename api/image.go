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

// ImageUpdate is the body of PATCH /v1/images/{name}?project=: the fields
// present are changed. Only a superadmin changes an image's visibility.
type ImageUpdate struct {
	// Public makes the image usable by VMs of every project (true), or of
	// its own project only (false, "private"). VMs of other projects
	// that already use it keep their disks.
	Public *bool `json:"public,omitempty"`
}

// Defaults of ImageSettings.
const (
	DefaultImageMaxVirtualBytes      int64 = 256 << 30
	DefaultImageMaxImportsPerProject       = 2
	DefaultImageConvertTimeoutSecs   int64 = 3600
)

// ImageSettings are the installation's rules for image imports (GET and
// PUT /v1/image-settings, superadmins only). A zero number means its
// default; GET shows the values in force.
type ImageSettings struct {
	// MaxVirtualBytes refuses disks whose virtual size is larger, before
	// anything is converted (default 256 GiB). It also bounds an upload
	// or a download, with room for the format's metadata.
	MaxVirtualBytes int64 `json:"maxVirtualBytes"`
	// MaxImportsPerProject bounds the imports running at once in one
	// project, uploads being received included (default 2); more are
	// refused with 429.
	MaxImportsPerProject int `json:"maxImportsPerProject"`
	// ConvertTimeoutSeconds bounds the conversion of one disk (default
	// 3600).
	ConvertTimeoutSeconds int64 `json:"convertTimeoutSeconds"`
	// FetchAllowNetworks are networks (CIDR) that URL imports may reach
	// although they are not public: by default the server fetches only
	// from public internet addresses. Cloud metadata addresses are never
	// reached; the server's own addresses only through a network of that
	// one address (/32, /128).
	FetchAllowNetworks []string `json:"fetchAllowNetworks,omitempty"`
	// FetchAllowHosts are host names ("mirror.internal", or
	// "*.internal") whose addresses URL imports may reach whatever they
	// are.
	FetchAllowHosts []string `json:"fetchAllowHosts,omitempty"`
}
