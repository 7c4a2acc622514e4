package scheduler

import (
	"fmt"
	"strings"
)

// HostReason says why one host cannot take a VM.
type HostReason struct {
	Host   string
	Reason string
}

func (r HostReason) String() string { return r.Host + ": " + r.Reason }

// NoRoomError means the request is valid but no host can take it now: the
// API answers 422. Reasons has one entry per host considered, by name.
type NoRoomError struct {
	Request Request
	Reasons []HostReason
}

func (e *NoRoomError) Error() string {
	if e.Request.Host != "" && len(e.Reasons) == 1 {
		return fmt.Sprintf("host %q cannot take the vm: %s", e.Request.Host, e.Reasons[0].Reason)
	}
	if len(e.Reasons) == 0 {
		return "no host to place the vm on: there are no hosts"
	}
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r.String()
	}
	return fmt.Sprintf("no host has room for %d vcpus and %d MiB: %s",
		e.Request.VCPUs, e.Request.MemoryMiB, strings.Join(parts, "; "))
}

// Details returns the reasons keyed by host name, for api.Error.Details.
func (e *NoRoomError) Details() map[string]string {
	d := make(map[string]string, len(e.Reasons))
	for _, r := range e.Reasons {
		d[r.Host] = r.Reason
	}
	return d
}

// UnknownHostError means the request pins a host that does not exist: the
// API answers 404 (or 400 naming the field).
type UnknownHostError struct {
	Host string
}

func (e *UnknownHostError) Error() string {
	return fmt.Sprintf("host %q not found", e.Host)
}
