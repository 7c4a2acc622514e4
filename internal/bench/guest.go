package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// guestMarker is the line the tiny guest prints on ttyS0 once it is up.
const guestMarker = "POLYVISOR-GUEST-READY"

// The files of the tiny guest, as scripts/build-guest.sh writes them.
const (
	guestKernel = "vmlinuz"
	guestInitrd = "initrd.img"
	guestDisk   = "disk.qcow2"
)

// guestScript builds the tiny guest; it is looked up from the working
// directory (the repository's root).
const guestScript = "scripts/build-guest.sh"

// resolveGuestDir returns the directory of the tiny guest: flag, else
// $POLYVISOR_GUEST_DIR, else .cache/guest. A directory without the guest
// is filled by scripts/build-guest.sh, whose output goes to log.
func resolveGuestDir(ctx context.Context, flag string, log io.Writer) (string, error) {
	dir := flag
	if dir == "" {
		dir = os.Getenv("POLYVISOR_GUEST_DIR")
	}
	if dir == "" {
		dir = filepath.Join(".cache", "guest")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving guest dir: %w", err)
	}
	if guestComplete(dir) {
		return dir, nil
	}
	if _, err := os.Stat(guestScript); err != nil {
		return "", fmt.Errorf("guest dir %s has no %s, %s and %s, and %s is not here to build them (run from the repository root or give --guest-dir): %w",
			dir, guestKernel, guestInitrd, guestDisk, guestScript, err)
	}
	fmt.Fprintf(log, "building the tiny guest in %s with %s\n", dir, guestScript)
	cmd := exec.CommandContext(ctx, guestScript, dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the tiny guest: %w", err)
	}
	if !guestComplete(dir) {
		return "", fmt.Errorf("%s ran but %s still lacks the guest's files", guestScript, dir)
	}
	return dir, nil
}

func guestComplete(dir string) bool {
	for _, f := range []string{guestKernel, guestInitrd, guestDisk} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// markerTimes are what a markerWatch saw, as absolute times.
type markerTimes struct {
	// FileAt is when the serial output file was first seen: QEMU made it
	// while setting up its character devices, so it is a close upper bound
	// of "QEMU is running".
	FileAt time.Time
	// MarkerAt is when the marker was first seen in the file.
	MarkerAt time.Time
}

// watchMarker polls path every interval until marker appears in it, and
// returns when the file and the marker were first seen. It reads the file
// incrementally and finds a marker split across two reads. It costs one
// stat or one read per interval, and nothing of the system under test.
func watchMarker(ctx context.Context, path, marker string, interval, timeout time.Duration) (markerTimes, error) {
	var (
		mt      markerTimes
		f       *os.File
		carry   []byte
		buf     = make([]byte, 64<<10)
		pattern = []byte(marker)
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	deadline := time.Now().Add(timeout)
	for {
		if f == nil {
			var err error
			f, err = os.Open(path)
			switch {
			case err == nil:
				mt.FileAt = time.Now()
			case !errors.Is(err, os.ErrNotExist):
				return mt, fmt.Errorf("opening serial output %s: %w", path, err)
			}
		}
		if f != nil {
			for {
				n, err := f.Read(buf)
				if n > 0 {
					data := append(carry, buf[:n]...)
					if bytes.Contains(data, pattern) {
						mt.MarkerAt = time.Now()
						return mt, nil
					}
					keep := min(len(pattern)-1, len(data))
					carry = append(carry[:0:0], data[len(data)-keep:]...)
				}
				if err == io.EOF || n == 0 {
					break
				}
				if err != nil {
					return mt, fmt.Errorf("reading serial output %s: %w", path, err)
				}
			}
		}
		if time.Now().After(deadline) {
			if f == nil {
				return mt, fmt.Errorf("serial output %s did not appear within %v", path, timeout)
			}
			return mt, fmt.Errorf("no %q in %s within %v; it ends with:\n%s", marker, path, timeout, tailFile(path, 1500))
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return mt, fmt.Errorf("watching %s for %q: %w", path, marker, ctx.Err())
		case <-t.C:
		}
	}
}
