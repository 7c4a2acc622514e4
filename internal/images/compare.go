package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
)

// Compare reads the disks a (of format formatA) and b (formatB) back
// through qemu-img compare and returns nil when the guest would see the
// same bytes in both, *MismatchError when it would not. It runs under the
// limits of a conversion, at the lowest priority.
func Compare(ctx context.Context, formatA, a, formatB, b string) error {
	a, err := safePath(a)
	if err != nil {
		return err
	}
	if b, err = safePath(b); err != nil {
		return err
	}
	return compare(ctx, formatA, a, formatB, b)
}

// compare is Compare of what qemu-img opens by the names a and b (each
// an absolute path or a member's json: name).
func compare(ctx context.Context, formatA, a, formatB, b string) error {
	var out bytes.Buffer
	err := runQemuImg(ctx, &out, limits{addressSpace: convertAddressSpace}, "compare", "-U", "-f", formatA, "-F", formatB, a, b)
	var q *qemuImgError
	var exit *exec.ExitError
	if errors.As(err, &q) && errors.As(q.Err, &exit) && exit.ExitCode() == 1 {
		// Exit status 1: the images differ; stdout says where.
		return &MismatchError{Detail: string(bytes.TrimSpace(out.Bytes()))}
	}
	if err != nil {
		return fmt.Errorf("comparing disks: %w", err)
	}
	return nil
}

// MismatchError is two disks that differ.
type MismatchError struct{ Detail string }

func (e *MismatchError) Error() string { return "disks differ: " + e.Detail }
