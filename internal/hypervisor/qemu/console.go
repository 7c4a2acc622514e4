package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// OpenConsole connects to the VM's serial console ("serial", a byte stream
// to and from ttyS0) or its VNC server ("vnc", RFB). QEMU serves one client
// per console at a time; a second one waits until the first disconnects.
func (d *Driver) OpenConsole(ctx context.Context, h *hypervisor.Handle, kind string) (io.ReadWriteCloser, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	var path string
	switch kind {
	case "serial":
		path = h.Extra[extraSerial]
	case "vnc":
		path = h.Extra[extraVNC]
	default:
		return nil, fmt.Errorf("opening %q console: %w", kind, hypervisor.ErrNotSupported)
	}
	if !processAlive(h.PID, h.PIDStart) {
		return nil, fmt.Errorf("opening %s console of vm %s: %w", kind, h.UID, errNotRunning)
	}
	if err := ensureSockLink(h); err != nil {
		return nil, err
	}
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("opening %s console of vm %s: %w", kind, h.UID, err)
	}
	return c, nil
}

// ConsoleLog returns up to max bytes from the end of the serial output
// recorded in console.log (all that is kept when max <= 0: the driver
// keeps the newest Config.LogMaxBytes at most, see capLogs). A VM that
// never started has an empty log.
func (d *Driver) ConsoleLog(ctx context.Context, h *hypervisor.Handle, max int64) ([]byte, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	b, err := readTail(filepath.Join(h.Dir, consoleLog), max)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading console log of vm %s: %w", h.UID, err)
	}
	return b, nil
}

// tailFile is readTail for error messages: it never fails.
func tailFile(path string, max int64) string {
	b, err := readTail(path, max)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}
