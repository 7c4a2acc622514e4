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
// that is not http(s), leads where the server does not fetch from or
// answers an error, a size over the limit. Other errors are the server's
// own failures.
//
// Its Error is safe to show to the user who asked; Detail adds what only
// administrators and the server's log may see.
type RejectError struct {
	Msg string
	// Err is the underlying cause, if any.
	Err error
	// detail is what Msg leaves out.
	detail string
}

func (e *RejectError) Error() string { return e.Msg }

func (e *RejectError) Unwrap() error { return e.Err }

// Detail is Msg with what it leaves out.
func (e *RejectError) Detail() string {
	if e.detail == "" {
		return e.Msg
	}
	return e.Msg + " (" + e.detail + ")"
}

// FetchError is a download that failed for the network's or the remote
// server's sake. Its Error names no address, port or status and is safe
// to show to whoever asked for the download; Detail adds the cause.
type FetchError struct {
	Msg string
	Err error
}

func (e *FetchError) Error() string { return e.Msg }

func (e *FetchError) Unwrap() error { return e.Err }

// Detail is Msg with its cause.
func (e *FetchError) Detail() string { return e.Msg + ": " + e.Err.Error() }

func rejectf(format string, args ...any) *RejectError {
	return &RejectError{Msg: fmt.Sprintf(format, args...)}
}

// IsReject tells whether err is, or wraps, a *RejectError.
func IsReject(err error) bool {
	var r *RejectError
	return errors.As(err, &r)
}

// Detail tells the whole story of err, for administrators and the
// server's log: the addresses, statuses and causes that the Error of a
// *RejectError or *FetchError leaves out.
func Detail(err error) string {
	var d interface{ Detail() string }
	if errors.As(err, &d) {
		return d.Detail()
	}
	return err.Error()
}
