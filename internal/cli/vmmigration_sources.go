package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// libvirtSourcePrefix begins a plan's source read from libvirt; the URI
// follows.
const libvirtSourcePrefix = "libvirt:"

// providerHardware reads the hardware of --from's VMs.
func (a *app) providerHardware(cmd *cobra.Command, f *planFlags, _ int64) (string, []v2v.Hardware, []string, error) {
	if len(f.vms) == 0 {
		return "", nil, nil, errors.New("--from needs --vm NAME (repeat)")
	}
	switch f.provider {
	case "libvirt":
		src, err := connectLibvirt(cmd.Context(), f.providerURI)
		if err != nil {
			return "", nil, nil, err
		}
		var hws []v2v.Hardware
		var running []string
		for _, name := range f.vms {
			hw, up, err := src.Hardware(cmd.Context(), name)
			if err != nil {
				return "", nil, nil, fmt.Errorf("--vm %s: %w", name, err)
			}
			if up {
				running = append(running, hw.Name)
			}
			hws = append(hws, hw)
		}
		return libvirtSourcePrefix + f.providerURI, hws, running, nil
	default:
		return "", nil, nil, fmt.Errorf("--from %q: want libvirt (vSphere VMs: export them as an OVA and use --from-ova)", f.provider)
	}
}

func connectLibvirt(ctx context.Context, uri string) (v2v.LibvirtSource, error) {
	p := libvirt.New(provider.Config{URL: uri}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := p.Connect(ctx); err != nil {
		return v2v.LibvirtSource{}, fmt.Errorf("--libvirt-uri %s: %w", uri, err)
	}
	return v2v.LibvirtSource{Provider: p}, nil
}

// planStreams opens the streamed disks of a plan's source.
func (a *app) planStreams(cmd *cobra.Command, plan v2v.Plan) (v2v.Streams, error) {
	if uri, ok := strings.CutPrefix(plan.Source, libvirtSourcePrefix); ok {
		src, err := connectLibvirt(cmd.Context(), uri)
		if err != nil {
			return nil, err
		}
		return src.Streams(), nil
	}
	return nil, nil
}
