package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/internal/v2v"
)

// providerHardware reads the hardware of --from's VMs.
func (a *app) providerHardware(cmd *cobra.Command, f *planFlags, maxDisk int64) (string, []v2v.Hardware, error) {
	if len(f.vms) == 0 {
		return "", nil, errors.New("--from needs --vm NAME (repeat)")
	}
	switch f.provider {
	default:
		return "", nil, fmt.Errorf("--from %q: want libvirt", f.provider)
	}
}

// planStreams opens the streamed disks of a plan's source.
func (a *app) planStreams(cmd *cobra.Command, plan v2v.Plan) (v2v.Streams, error) {
	return nil, nil
}
