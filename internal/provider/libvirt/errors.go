package libvirt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// classify wraps a libvirt error with the provider error that says what it
// means, keeping the original in the chain: errors.Is finds both.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if sentinel := sentinelFor(err); sentinel != nil {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return err
}

func sentinelFor(err error) error {
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrNoDomain, golibvirt.ErrNoDomainSnapshot, golibvirt.ErrNoStorageVol,
			golibvirt.ErrNoStoragePool, golibvirt.ErrNoNetwork:
			return provider.ErrNotFound
		case golibvirt.ErrDomExist, golibvirt.ErrStorageVolExist:
			return provider.ErrExists
		case golibvirt.ErrOperationInvalid:
			return provider.ErrBadState
		case golibvirt.ErrAuthFailed, golibvirt.ErrAuthCancelled, golibvirt.ErrAuthUnavailable,
			golibvirt.ErrAccessDenied:
			return provider.ErrAuth
		case golibvirt.ErrNoSupport, golibvirt.ErrOperationUnsupported, golibvirt.ErrConfigUnsupported,
			golibvirt.ErrArgumentUnsupported:
			return provider.ErrUnsupported
		case golibvirt.ErrNoConnect:
			return provider.ErrUnreachable
		case golibvirt.ErrRPC:
			// The daemon refuses calls before authentication with this
			// generic code (kept for old clients); its message is the only
			// sign of the cause.
			if strings.Contains(le.Message, "authentication") {
				return provider.ErrAuth
			}
		}
		return nil
	}
	switch {
	case errors.Is(err, golibvirt.ErrUnsupported):
		return provider.ErrUnsupported
	case errors.Is(err, golibvirt.ErrInterrupted), errors.Is(err, syscall.EINVAL),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		// go-libvirt answers EINVAL on a connection it saw close.
		return provider.ErrUnreachable
	}
	return nil
}

// classifyOpen classifies an error of the connection handshake, in which
// anything that is not a libvirt answer means the daemon is not there.
func classifyOpen(err error) error {
	if s := sentinelFor(err); s != nil {
		return fmt.Errorf("%w: %w", s, err)
	}
	var le golibvirt.Error
	if errors.As(err, &le) {
		return err
	}
	return fmt.Errorf("%w: %w", provider.ErrUnreachable, err)
}

// isCode says whether err is a libvirt error with that code.
func isCode(err error, code golibvirt.ErrorNumber) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && golibvirt.ErrorNumber(le.Code) == code
}

// parseUUID parses a UUID in its canonical text form.
func parseUUID(s string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 2*len(u) {
		return u, fmt.Errorf("%q is not a uuid", s)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, fmt.Errorf("%q is not a uuid", s)
	}
	return u, nil
}

// uuidString formats a UUID canonically: 8-4-4-4-12 lowercase hex.
func uuidString(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
