package images

import (
	"context"

	"github.com/polyvisor/polyvisor/api"
)

// Inspect runs the checks of Import on the image at src without storing
// it: a disk's format is detected, its header checked for references to
// other files and qemu-img's view of it checked to agree. It is quick, so
// the API can refuse a bad upload before it accepts the import. Problems
// with the image are *RejectError.
func Inspect(ctx context.Context, src, kind string) error {
	switch kind {
	case api.ImageDisk, "":
	case api.ImageKernel, api.ImageInitrd:
		return nil
	default:
		return rejectf("unknown image kind %q: want %s, %s or %s", kind, api.ImageDisk, api.ImageKernel, api.ImageInitrd)
	}
	format, err := detect(src)
	if err != nil {
		return err
	}
	info, err := qemuInfo(ctx, format, src)
	if err != nil {
		return asReject(err, "image is not a valid %s image", format)
	}
	return checkInfo(format, src, info)
}
