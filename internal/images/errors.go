// Package images imports images into Polyvisor's store: disk images of the
// common formats, converted to qcow2 with qemu-img, and kernels and
// initrds, kept byte for byte. It also fetches image sources from http(s)
// URLs.
//
// An uploaded image is untrusted input. Disk formats that can name other
// files (qcow2 backing and external data files, vmdk extents and parents,
// differencing VHDs) are inspected by this package before any qemu-img
// call, and refused when they name anything; qemu-img is always told the
// format (-f) so it never probes. Problems with the input are returned as
// *RejectError, so the API can tell the user's mistakes (400) from its own
// failures (500).
package images

import (
	"errors"
	"fmt"
)

// RejectError means the image or URL given by the user is unacceptable:
// an unsupported or malformed format, a reference to another file, a URL
// that is not http(s) or answers an error, a size over the limit. Other
// errors are the server's own failures.
type RejectError struct {
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *RejectError) Error() string { return e.Msg }

func (e *RejectError) Unwrap() error { return e.Err }

func rejectf(format string, args ...any) *RejectError {
	return &RejectError{Msg: fmt.Sprintf(format, args...)}
}

// IsReject tells whether err is, or wraps, a *RejectError.
func IsReject(err error) bool {
	var r *RejectError
	return errors.As(err, &r)
}
