// Package registry is the one place provider types are registered: it
// maps a provider type to its implementation.
package registry

import (
	"fmt"
	"log/slog"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
	"github.com/polyvisor/polyvisor/internal/provider/vsphere"
)

// Types lists the provider types Polyvisor can connect to.
var Types = []string{"vsphere", "libvirt"}

// New makes an unconnected provider of the given type.
func New(typ string, cfg provider.Config, log *slog.Logger) (provider.Provider, error) {
	switch typ {
	case "vsphere":
		return vsphere.New(cfg, log), nil
	case "libvirt":
		return libvirt.New(cfg, log), nil
	}
	return nil, fmt.Errorf("provider type %q (known: vsphere, libvirt): %w", typ, provider.ErrUnsupported)
}
