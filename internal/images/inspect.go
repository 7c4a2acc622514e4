package images

import (
	"context"
	"fmt"
	"os"

	"github.com/polyvisor/polyvisor/api"
)

// Info is what Inspect learnt of an image.
type Info struct {
	// Format is the detected format (raw for kernels and initrds).
	Format string
	// VirtualSizeBytes is the disk size the guest would see (disks only).
	VirtualSizeBytes int64
	// MaxSizeBytes is the most the stored file can take: for a disk,
	// qemu-img's measure of its qcow2 conversion with a small margin
	// (Import stops a conversion that writes more); for a kernel or
	// initrd, its size.
	MaxSizeBytes int64
}

// Inspect runs the checks of Import on the image at src without storing
// it: a disk's format is detected, its header checked for references to
// other files, qemu-img's view of it checked to agree, its virtual size
// held against WithMaxVirtualBytes, and its converted size measured and
// held against WithMaxStoredBytes. It is quick, so the API can refuse a
// bad upload, or one over a quota, before it accepts the import. Problems
// with the image are *RejectError.
func Inspect(ctx context.Context, src, kind string, opts ...ImportOption) (Info, error) {
	var cfg importConfig
	for _, o := range opts {
		o(&cfg)
	}
	switch kind {
	case api.ImageDisk, "":
	case api.ImageKernel, api.ImageInitrd:
		fi, err := os.Stat(src)
		if err != nil {
			return Info{}, fmt.Errorf("opening image: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return Info{}, fmt.Errorf("opening image: %s is not a regular file", src)
		}
		if fi.Size() == 0 {
			return Info{}, rejectf("image is empty")
		}
		if cfg.maxStoredBytes > 0 && fi.Size() > cfg.maxStoredBytes {
			return Info{}, rejectf("image is %d bytes, over the limit of %d", fi.Size(), cfg.maxStoredBytes)
		}
		return Info{Format: FormatRaw, MaxSizeBytes: fi.Size()}, nil
	default:
		return Info{}, rejectf("unknown image kind %q: want %s, %s or %s", kind, api.ImageDisk, api.ImageKernel, api.ImageInitrd)
	}
	s, err := fileSource(src)
	if err != nil {
		return Info{}, err
	}
	return inspectDisk(ctx, s, cfg)
}

// inspectDisk checks a disk image and measures its conversion.
func inspectDisk(ctx context.Context, src diskSource, cfg importConfig) (Info, error) {
	format, err := src.detect()
	if err != nil {
		return Info{}, err
	}
	info, err := qemuInfoOf(ctx, format, src.arg(format))
	if err != nil {
		return Info{}, asReject(err, "image is not a valid %s image", format)
	}
	if err := checkInfoOf(format, src.ownExtent, info); err != nil {
		return Info{}, err
	}
	if cfg.maxVirtualBytes > 0 && info.VirtualSize > cfg.maxVirtualBytes {
		return Info{}, rejectf("image's virtual size of %d bytes is over the limit of %d", info.VirtualSize, cfg.maxVirtualBytes)
	}
	measured, err := qemuMeasure(ctx, format, src.arg(format))
	if err != nil {
		return Info{}, asReject(err, "image is not a valid %s image", format)
	}
	in := Info{Format: format, VirtualSizeBytes: info.VirtualSize, MaxSizeBytes: measured + storedMargin(measured)}
	if cfg.maxStoredBytes > 0 && measured > cfg.maxStoredBytes {
		return Info{}, rejectf("image needs %d bytes once converted, over the limit of %d", measured, cfg.maxStoredBytes)
	}
	return in, nil
}
