package vsphere

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// kindError gives an error from govmomi one of the provider's meanings
// while keeping the original, so that both errors.Is(err, provider.ErrX)
// and govmomi's fault.Is work on it.
type kindError struct {
	kind error // nil when the error has no provider meaning
	err  error
}

func (e *kindError) Error() string {
	if e.kind == nil {
		return describe(e.err)
	}
	return e.kind.Error() + ": " + describe(e.err)
}

func (e *kindError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// faultKinds maps vSphere faults to the provider's errors. fault.Is matches
// exact fault types (and the fault's causes), so subtypes are listed.
var faultKinds = []struct {
	kind   error
	faults []types.BaseMethodFault
}{
	{provider.ErrAuth, []types.BaseMethodFault{&types.InvalidLogin{}, &types.NotAuthenticated{}}},
	{provider.ErrNotFound, []types.BaseMethodFault{&types.ManagedObjectNotFound{}, &types.NotFound{}}},
	{provider.ErrExists, []types.BaseMethodFault{&types.DuplicateName{}, &types.AlreadyExists{}}},
	{provider.ErrBadState, []types.BaseMethodFault{&types.InvalidPowerState{}, &types.InvalidState{},
		&types.InvalidHostState{}, &types.TaskInProgress{}, &types.ToolsUnavailable{}}},
	{provider.ErrUnsupported, []types.BaseMethodFault{&types.NotSupported{}, &types.NotImplemented{},
		&types.MethodNotFound{}, &types.MethodDisabled{}}},
}

// classify wraps err with the provider error that says what it means:
// a vSphere fault, an untrusted certificate or a network failure. Errors
// it cannot place are returned as they are.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return err
	}
	if kind := kindOf(err); kind != nil {
		return &kindError{kind: kind, err: err}
	}
	if strings.TrimSpace(err.Error()) == "" {
		return &kindError{err: err}
	}
	return err
}

func kindOf(err error) error {
	if isCertificateError(err) {
		return provider.ErrCertificate
	}
	if faultOf(err) != nil {
		for _, k := range faultKinds {
			for _, f := range k.faults {
				if fault.Is(err, f) {
					return k.kind
				}
			}
		}
		return nil
	}
	if isNetworkError(err) {
		return provider.ErrUnreachable
	}
	return nil
}

func isCertificateError(err error) bool {
	var (
		unknown   x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verifying *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verifying)
}

// isNetworkError says whether err is a failure to reach the endpoint or a
// connection lost on the way: a refused or timed-out dial, a name that
// does not resolve, a reset or closed connection.
func isNetworkError(err error) bool {
	var (
		op  *net.OpError
		dns *net.DNSError
		ne  net.Error
	)
	switch {
	case errors.As(err, &op), errors.As(err, &dns):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	return false
}

// faultOf returns the vSphere fault err carries, or nil.
func faultOf(err error) types.BaseMethodFault {
	var f types.BaseMethodFault
	if _, ok := fault.As(err, &f); ok {
		return f
	}
	return nil
}

// describe is err's message, with the fault's type added: vCenter's
// localized messages are often empty or vague ("A general system error").
func describe(err error) string {
	msg := strings.TrimSpace(err.Error())
	f := faultOf(err)
	if f == nil {
		return msg
	}
	name := reflect.TypeOf(f).Elem().Name()
	switch {
	case msg == "":
		return name
	case strings.Contains(msg, name):
		return msg
	}
	return msg + " (" + name + ")"
}
