package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func (a *app) poolCommand() *cobra.Command {
	cmd := group("pool", "Manage storage pools (superadmins define them)", "pools")
	cmd.AddCommand(a.poolCreateCommand(), a.poolListCommand(), a.poolShowCommand(), a.poolGrantCommand(), a.poolImagesCommand(), a.poolDeleteCommand())
	return cmd
}

func (a *app) poolCreateCommand() *cobra.Command {
	var req api.PoolCreate
	cmd := &cobra.Command{
		Use:   "create NAME --kind dir|shared|nbd --path DIR --host H [--host H...] [--address IP:PORT] [--grant PROJECT...]",
		Short: "Define a pool: a directory on one host (dir), a path every one of its hosts sees (shared), or NBD exports served from its first host to all (nbd)",
		Example: "  polyvisor pool create local --kind dir --path /var/lib/polyvisor/pool --host node1 --grant default\n" +
			"  polyvisor pool create nfs --kind shared --path /mnt/nfs/pool --host node1 --host node2\n" +
			"  polyvisor pool create blk --kind nbd --path /srv/nbd --address 10.0.0.5:10809 --host store1 --host node1 --host node2",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.CreatePool(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.printPool(cmd, p)
		},
	}
	cmd.Flags().StringVar(&req.Kind, "kind", api.PoolDir, "dir, shared or nbd")
	cmd.Flags().BoolVar(&req.Images, "images", false, "shared: the pool's hosts keep their VMs' images in it (<path>/.images), one fetch for all, rather than each in its own cache")
	cmd.Flags().StringVar(&req.Address, "address", "", "nbd: the IP:port the first host's qemu-storage-daemon listens on, reachable from every host of the pool")
	cmd.Flags().StringVar(&req.Path, "path", "", "directory of the volumes' files on each host")
	cmd.Flags().StringArrayVar(&req.Hosts, "host", nil, "a host that sees the pool (repeat for shared pools)")
	cmd.Flags().StringArrayVar(&req.Projects, "grant", nil, "a project that may make volumes in the pool (repeat)")
	return cmd
}

func (a *app) poolListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the pools you may see",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			pools, err := c.ListPools(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Pool]{Items: nonNil(pools)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "KIND", "PATH", "HOSTS", "PROJECTS", "FREE", "TOTAL")
				for _, p := range pools {
					var free, total int64
					for _, h := range p.Status.Hosts {
						free, total = free+h.FreeMiB, total+h.TotalMiB
					}
					row(tw, p.Name, p.Spec.Kind, p.Spec.Path, strings.Join(p.Spec.Hosts, ","), orDash(strings.Join(p.Spec.Projects, ",")),
						formatMiB(free), formatMiB(total))
				}
			})
		},
	}
}

func (a *app) poolShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a pool and what its hosts report",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.GetPool(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printPool(cmd, p)
		},
	}
}

func (a *app) printPool(cmd *cobra.Command, p *api.Pool) error {
	return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
		row(tw, "Name:", p.Name)
		row(tw, "Kind:", p.Spec.Kind)
		row(tw, "Path:", p.Spec.Path)
		row(tw, "Hosts:", strings.Join(p.Spec.Hosts, ", "))
		row(tw, "Projects:", orDash(strings.Join(p.Spec.Projects, ", ")))
		if p.Spec.Address != "" {
			row(tw, "Address:", p.Spec.Address+" (served by "+p.Spec.Hosts[0]+")")
		}
		if p.Spec.Images {
			row(tw, "Images:", "kept in the pool for its hosts")
		}
		for _, h := range p.Status.Hosts {
			state := fmt.Sprintf("%s free of %s, volumes take %s", formatMiB(h.FreeMiB), formatMiB(h.TotalMiB), formatMiB(h.UsedMiB))
			switch {
			case p.Spec.Kind == api.PoolNBD && h.Host != p.Spec.Hosts[0] && h.Error == "":
				state = "reaches the nbd server"
			case h.Error != "":
				state = "error: " + h.Error
			}
			row(tw, "On "+h.Host+":", state)
		}
	})
}

func (a *app) poolGrantCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "grant NAME [PROJECT...]",
		Short: "Set the projects that may make volumes in a pool (none: no PROJECT)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ps := append([]string{}, args[1:]...)
			p, err := c.UpdatePool(cmd.Context(), args[0], api.PoolUpdate{Projects: &ps})
			if err != nil {
				return err
			}
			return a.printPool(cmd, p)
		},
	}
}

func (a *app) poolImagesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "images NAME on|off",
		Short: "Keep the images of a shared pool's hosts in the pool (on) or in each host's cache (off)",
		Args:  exactArgs(2, "NAME on|off"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[1] {
			case "on":
				on = true
			case "off":
			default:
				return usagef("images: say on or off, not %q", args[1])
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.UpdatePool(cmd.Context(), args[0], api.PoolUpdate{Images: &on})
			if err != nil {
				return err
			}
			return a.printPool(cmd, p)
		},
	}
}

func (a *app) poolDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a pool that holds no volumes",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeletePool(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "pool", Name: args[0], Result: "deleted"}, "pool "+args[0]+" deleted")
		},
	}
}

func (a *app) volumeCommand() *cobra.Command {
	cmd := group("volume", "Manage volumes: disks that outlive VMs", "volumes", "vol")
	cmd.AddCommand(a.volumeCreateCommand(), a.volumeListCommand(), a.volumeShowCommand(), a.volumeAttachCommand(),
		a.volumeDetachCommand(), a.volumeGrowCommand(), a.volumeSnapshotCommand(), a.volumeCloneCommand(),
		a.volumeLimitCommand(), a.volumeDeleteCommand())
	return cmd
}

// waitVolume waits until the volume's host has carried out its spec, and
// fails when it reports an error.
func waitVolume(ctx context.Context, c *client.Client, name string, attached func(*api.Volume) bool) (*api.Volume, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	for {
		v, err := c.GetVolume(ctx, name)
		if err != nil {
			return nil, err
		}
		if v.Status.ObservedGeneration >= v.Generation {
			if v.Status.State == api.VolumeError {
				return v, fmt.Errorf("volume %s: %s", name, v.Status.Error)
			}
			if attached == nil || attached(v) {
				return v, nil
			}
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("waiting for volume %s: %w", name, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitPlugged waits until the VM's host reports the volume plugged in
// (in) or out.
func waitPlugged(ctx context.Context, c *client.Client, vm, volume string, in bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		v, err := c.GetVM(ctx, vm)
		if err != nil {
			return err
		}
		plugged := false
		for _, s := range v.Status.Volumes {
			plugged = plugged || s.Volume == volume
		}
		if v.Status.Error != nil && v.Status.Error.Generation == v.Generation {
			return fmt.Errorf("vm %s: %s", vm, v.Status.Error.Message)
		}
		if plugged == in || (v.Status.PowerState != api.PowerRunning && v.Status.PowerState != api.PowerPaused) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for vm %s: %w", vm, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var req api.VolumeCreate
	var image, from string
	var noWait bool
	cmd := &cobra.Command{
		Use:   "create NAME --pool POOL [--size SIZE] [--image IMAGE | --from VOLUME[@SNAPSHOT]]",
		Short: "Create a volume: blank, from an image, or from a volume or one of its snapshots",
		Example: "  polyvisor volume create data --pool local --size 10G\n" +
			"  polyvisor volume create base --pool local --image debian-12\n" +
			"  polyvisor volume create copy --pool local --from data@monday",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if image != "" && from != "" {
				return usagef("--image and --from: give one")
			}
			if image != "" {
				req.Source = &api.VolumeSource{Image: image}
			}
			if from != "" {
				vol, snap, _ := strings.Cut(from, "@")
				req.Source = &api.VolumeSource{Volume: vol, Snapshot: snap}
			}
			return a.createVolume(cmd, req, noWait)
		},
	}
	cmd.Flags().StringVar(&req.Pool, "pool", "", "pool to make the volume in")
	cmd.Flags().Var(sizeValue{&req.SizeMiB}, "size", "size (512M, 10G); with a source, at least its size")
	cmd.Flags().StringVar(&image, "image", "", "disk image to copy")
	cmd.Flags().StringVar(&from, "from", "", "volume (VOLUME) or snapshot (VOLUME@SNAPSHOT) to copy")
	cmd.Flags().StringVar(&req.Host, "host", "", "host of a shared pool that makes the file")
	cmd.Flags().Int64Var(&req.Limits.IOPS, "iops", 0, "I/O operations per second (0: unlimited)")
	cmd.Flags().Int64Var(&req.Limits.BPS, "bps", 0, "bytes per second (0: unlimited)")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) createVolume(cmd *cobra.Command, req api.VolumeCreate, noWait bool) error {
	c, _, err := a.client()
	if err != nil {
		return err
	}
	v, err := c.CreateVolume(cmd.Context(), req)
	if err == nil && !noWait {
		v, err = waitVolume(cmd.Context(), c, req.Name, nil)
	}
	if err != nil {
		return err
	}
	return a.printVolume(cmd, v)
}

func (a *app) volumeCloneCommand() *cobra.Command {
	var noWait bool
	var size int64
	cmd := &cobra.Command{
		Use:   "clone SOURCE NAME",
		Short: "Copy a detached volume into a new volume of its pool",
		Args:  exactArgs(2, "SOURCE", "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			src, err := c.GetVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.createVolume(cmd, api.VolumeCreate{Name: args[1], Pool: src.Spec.Pool, SizeMiB: size,
				Source: &api.VolumeSource{Volume: args[0]}}, noWait)
		},
	}
	cmd.Flags().Var(sizeValue{&size}, "size", "size of the clone (default: the source's)")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) volumeListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List volumes",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vols, err := listItems(cmd.Context(), opts, c.ListVolumes, func(ctx context.Context, o api.ListOptions) ([]api.Volume, error) {
				var all []api.Volume
				for {
					l, err := c.ListVolumes(ctx, o)
					if err != nil {
						return nil, err
					}
					all = append(all, l.Items...)
					if l.Continue == "" {
						return all, nil
					}
					o.Continue = l.Continue
				}
			})
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Volume]{Items: nonNil(vols)}, func(tw *tabwriter.Writer) {
				head := []any{"NAME", "POOL", "SIZE", "STATE", "ATTACHED TO", "SNAPSHOTS", "AGE"}
				if opts.AllProjects {
					head = append([]any{"PROJECT"}, head...)
				}
				row(tw, head...)
				for _, v := range vols {
					cells := []any{v.Name, v.Spec.Pool, formatMiB(v.Spec.SizeMiB), v.Status.State, orDash(v.Spec.AttachedTo),
						strconv.Itoa(len(v.Spec.Snapshots)), age(v.CreatedAt)}
					if opts.AllProjects {
						cells = append([]any{v.Project}, cells...)
					}
					row(tw, cells...)
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	allProjectsFlag(cmd, &opts, "volumes")
	return cmd
}

func (a *app) volumeShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a volume",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.GetVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
}

func (a *app) printVolume(cmd *cobra.Command, v *api.Volume) error {
	return a.print(cmd.OutOrStdout(), v, func(tw *tabwriter.Writer) {
		row(tw, "Name:", v.Name)
		row(tw, "Project:", v.Project)
		row(tw, "Pool:", fmt.Sprintf("%s (file on host %s: %s)", v.Spec.Pool, v.Spec.Host, v.Spec.Path))
		row(tw, "Size:", formatMiB(v.Spec.SizeMiB))
		row(tw, "State:", v.Status.State)
		if v.Status.Error != "" {
			row(tw, "Error:", v.Status.Error)
		}
		row(tw, "Attached to:", orDash(v.Spec.AttachedTo))
		if s := v.Spec.Source; s != nil {
			from := "image " + s.Image
			if s.Volume != "" {
				from = "volume " + s.Volume
				if s.Snapshot != "" {
					from += " snapshot " + s.Snapshot
				}
			}
			row(tw, "Source:", from)
		}
		limits := "none"
		if l := v.Spec.Limits; l.IOPS > 0 || l.BPS > 0 {
			limits = fmt.Sprintf("%d iops, %d bytes/s (0: unlimited)", l.IOPS, l.BPS)
		}
		row(tw, "I/O limits:", limits)
		row(tw, "Snapshots:", orDash(strings.Join(v.Spec.Snapshots, ", ")))
		row(tw, "Labels:", labels(v.Labels))
		row(tw, "Created:", when(v.CreatedAt))
	})
}

func (a *app) volumeAttachCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "attach NAME VM",
		Short: "Attach a volume to a VM; a running VM gets it at once (hot-plug)",
		Args:  exactArgs(2, "NAME", "VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.AttachVolume(cmd.Context(), args[0], args[1])
			if err == nil && !noWait {
				err = waitPlugged(cmd.Context(), c, args[1], args[0], true)
			}
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) volumeDetachCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "detach NAME [VM]",
		Short: "Detach a volume from its VM; a running VM's guest is asked to let it go",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vm := ""
			if len(args) == 2 {
				vm = args[1]
			}
			before, _ := c.GetVolume(cmd.Context(), args[0])
			v, err := c.DetachVolume(cmd.Context(), args[0], vm)
			if err == nil && !noWait && before != nil {
				err = waitPlugged(cmd.Context(), c, before.Spec.AttachedTo, args[0], false)
			}
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) volumeGrowCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "grow NAME SIZE",
		Short: "Grow a volume (also while attached: the guest sees the new size)",
		Args:  exactArgs(2, "NAME", "SIZE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := parseMiB(args[1])
			if err != nil {
				return usagef("SIZE: %v", err)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.GrowVolume(cmd.Context(), args[0], size)
			if err == nil && !noWait {
				v, err = waitVolume(cmd.Context(), c, args[0], nil)
			}
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) volumeLimitCommand() *cobra.Command {
	var l api.VolumeLimits
	cmd := &cobra.Command{
		Use:   "limit NAME [--iops N] [--bps N]",
		Short: "Set a volume's I/O limits (0: unlimited); applied at once while attached",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.SetVolumeLimits(cmd.Context(), args[0], l)
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
	cmd.Flags().Int64Var(&l.IOPS, "iops", 0, "I/O operations per second")
	cmd.Flags().Int64Var(&l.BPS, "bps", 0, "bytes per second")
	return cmd
}

func (a *app) volumeSnapshotCommand() *cobra.Command {
	var noWait, del bool
	cmd := &cobra.Command{
		Use:   "snapshot NAME SNAPSHOT [--delete]",
		Short: "Take a snapshot of a detached volume (or delete one)",
		Args:  exactArgs(2, "NAME", "SNAPSHOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			var v *api.Volume
			if del {
				v, err = c.DeleteVolumeSnapshot(cmd.Context(), args[0], args[1])
			} else {
				v, err = c.SnapshotVolume(cmd.Context(), args[0], args[1])
			}
			if err == nil && !noWait {
				v, err = waitVolume(cmd.Context(), c, args[0], nil)
			}
			if err != nil {
				return err
			}
			return a.printVolume(cmd, v)
		},
	}
	cmd.Flags().BoolVar(&del, "delete", false, "delete the snapshot instead")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) volumeDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a detached volume and its snapshots",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.DeleteVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "volume", Name: args[0], Result: "deleting"}, "volume "+args[0]+" is being deleted")
		},
	}
}
