package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/vim25/soap"

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
		if f.providerURI == "" {
			f.providerURI = "qemu:///system"
		}
		src, err := connectLibvirt(cmd.Context(), f.providerURI)
		if err != nil {
			return "", nil, nil, err
		}
		hws, running, err := hardwareOf(cmd.Context(), src, f.vms)
		if err != nil {
			return "", nil, nil, err
		}
		return libvirtSourcePrefix + f.providerURI, hws, running, nil
	case "vsphere":
		if f.providerURI == "" {
			return "", nil, nil, errors.New("--from vsphere needs --uri https://USER@HOST/sdk")
		}
		src, err := connectVSphere(cmd.Context(), f.providerURI)
		if err != nil {
			return "", nil, nil, err
		}
		hws, running, err := hardwareOf(cmd.Context(), src, f.vms)
		if err != nil {
			return "", nil, nil, err
		}
		return vsphereSourcePrefix + redactedURL(f.providerURI), hws, running, nil
	default:
		return "", nil, nil, fmt.Errorf("--from %q: want libvirt or vsphere", f.provider)
	}
}

// vsphereSourcePrefix begins a plan's source read from vSphere; the SDK
// URL follows, without its password.
const vsphereSourcePrefix = "vsphere:"

// vsphereURL is the SDK URL rawURL (https://USER@HOST/sdk) with the
// password of POLYVISOR_VSPHERE_PASSWORD. A URL holding a password is
// refused: a plan keeps the URL it was made from, and a password in it
// would be written to the plan's file (and the migration's record).
func vsphereURL(rawURL string) (*url.URL, error) {
	u, err := soap.ParseURL(rawURL)
	if err != nil || u == nil {
		return nil, fmt.Errorf("--uri %q: not a vSphere SDK URL: %v", redactedURL(rawURL), err)
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, fmt.Errorf("--uri %s: names no user: give https://USER@HOST/sdk", redactedURL(rawURL))
	}
	if _, set := u.User.Password(); set {
		return nil, fmt.Errorf("--uri %s: holds a password: give it in POLYVISOR_VSPHERE_PASSWORD instead, which is never stored (a plan made from such a URL keeps it as xxxxx: make the plan again)", redactedURL(rawURL))
	}
	pw := os.Getenv("POLYVISOR_VSPHERE_PASSWORD")
	if pw == "" {
		return nil, errors.New("POLYVISOR_VSPHERE_PASSWORD is not set: the vSphere password of --uri's user is read from it")
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u, nil
}

// connectVSphere logs in to the vCenter or ESXi at rawURL (vsphereURL);
// the server's certificate is checked unless POLYVISOR_VSPHERE_INSECURE=1.
// hardwareSource is a connected estate's view of its VMs' hardware.
type hardwareSource interface {
	Hardware(ctx context.Context, name string) (v2v.Hardware, bool, error)
}

// hardwareOf reads the hardware of each named VM, and which of them run.
func hardwareOf(ctx context.Context, src hardwareSource, vms []string) ([]v2v.Hardware, []string, error) {
	var hws []v2v.Hardware
	var running []string
	for _, name := range vms {
		hw, up, err := src.Hardware(ctx, name)
		if err != nil {
			return nil, nil, fmt.Errorf("--vm %s: %w", name, err)
		}
		if up {
			running = append(running, hw.Name)
		}
		hws = append(hws, hw)
	}
	return hws, running, nil
}

func connectVSphere(ctx context.Context, rawURL string) (*v2v.VSphereSource, error) {
	u, err := vsphereURL(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := govmomi.NewClient(ctx, u, os.Getenv("POLYVISOR_VSPHERE_INSECURE") == "1")
	if err != nil {
		return nil, fmt.Errorf("--uri %s: logging in: %w", redactedURL(rawURL), err)
	}
	return &v2v.VSphereSource{Client: c.Client}, nil
}

// redactedURL is rawURL without its password.
func redactedURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func connectLibvirt(ctx context.Context, uri string) (v2v.LibvirtSource, error) {
	p := libvirt.New(provider.Config{URL: uri}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := p.Connect(ctx); err != nil {
		return v2v.LibvirtSource{}, fmt.Errorf("--libvirt-uri %s: %w", uri, err)
	}
	return v2v.LibvirtSource{Provider: p}, nil
}

// planStreams opens the streamed disks of a plan's source.
func (a *app) planStreams(cmd *cobra.Command, plan v2v.Plan) (v2v.Streams, func(context.Context, string, error), error) {
	if uri, ok := strings.CutPrefix(plan.Source, vsphereSourcePrefix); ok {
		src, err := connectVSphere(cmd.Context(), uri)
		if err != nil {
			return nil, nil, err
		}
		return src.Streams(), func(ctx context.Context, vm string, err error) {
			if ferr := src.Finish(ctx, vm, err == nil); ferr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "  %s: %s\n", termSafe(vm, true), termSafe(ferr.Error(), true))
			}
		}, nil
	}
	if uri, ok := strings.CutPrefix(plan.Source, libvirtSourcePrefix); ok {
		src, err := connectLibvirt(cmd.Context(), uri)
		if err != nil {
			return nil, nil, err
		}
		return src.Streams(), nil, nil
	}
	return nil, nil, nil
}
