package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// Quota resources as --unset names them.
const (
	quotaVCPUs  = "vcpus"
	quotaMemory = "memory"
	quotaDisk   = "disk"
	quotaVMs    = "vms"
	// quotaImages is the image storage quota.
	quotaImages = "image-storage"
	// The network objects.
	quotaNetworks    = "networks"
	quotaPorts       = "ports"
	quotaFloatingIPs = "floating-ips"
)

// quotaResources lists the resources in the order they are shown.
var quotaResources = []string{quotaVCPUs, quotaMemory, quotaDisk, quotaVMs, quotaImages, quotaNetworks, quotaPorts, quotaFloatingIPs}

// quotaChanges are the limits a command line changes: the ones given are
// set, the ones in Unset become unlimited.
type quotaChanges struct {
	VCPUs, MemoryMiB, DiskMiB, VMs *int64
	ImageStorageMiB                *int64
	Networks, Ports, FloatingIPs   *int64
	Unset                          []string
}

// empty tells whether the changes change nothing.
func (ch quotaChanges) empty() bool {
	return ch.VCPUs == nil && ch.MemoryMiB == nil && ch.DiskMiB == nil && ch.VMs == nil && ch.ImageStorageMiB == nil &&
		ch.Networks == nil && ch.Ports == nil && ch.FloatingIPs == nil && len(ch.Unset) == 0
}

// applyQuotaChanges returns q with the changes made, leaving q as it is.
func applyQuotaChanges(q api.Quota, ch quotaChanges) (api.Quota, error) {
	out := api.Quota{VCPUs: clonePtr(q.VCPUs), MemoryMiB: clonePtr(q.MemoryMiB), DiskMiB: clonePtr(q.DiskMiB), VMs: clonePtr(q.VMs),
		ImageStorageMiB: clonePtr(q.ImageStorageMiB), Networks: clonePtr(q.Networks), Ports: clonePtr(q.Ports), FloatingIPs: clonePtr(q.FloatingIPs)}
	fields := map[string]struct {
		val *int64
		dst **int64
	}{
		quotaVCPUs:  {ch.VCPUs, &out.VCPUs},
		quotaMemory: {ch.MemoryMiB, &out.MemoryMiB},
		quotaDisk:   {ch.DiskMiB, &out.DiskMiB},
		quotaVMs:    {ch.VMs, &out.VMs},
		quotaImages: {ch.ImageStorageMiB, &out.ImageStorageMiB},

		quotaNetworks:    {ch.Networks, &out.Networks},
		quotaPorts:       {ch.Ports, &out.Ports},
		quotaFloatingIPs: {ch.FloatingIPs, &out.FloatingIPs},
	}
	for _, name := range quotaResources {
		f := fields[name]
		if f.val == nil {
			continue
		}
		if *f.val < 0 {
			return q, usagef("--%s: must not be negative (use --unset %s for no limit)", name, name)
		}
		*f.dst = clonePtr(f.val)
	}
	for _, raw := range ch.Unset {
		for _, name := range strings.Split(raw, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			targets := []string{name}
			switch name {
			case "":
				continue
			case "all":
				targets = quotaResources
			case "cpus", "cpu", "vcpu":
				targets = []string{quotaVCPUs}
			case "mem":
				targets = []string{quotaMemory}
			case "vm":
				targets = []string{quotaVMs}
			case "images", "image":
				targets = []string{quotaImages}
			case "network", "port", "floating-ip":
				targets = []string{name + "s"}
			}
			for _, t := range targets {
				f, ok := fields[t]
				if !ok {
					return q, usagef("--unset: %q is not one of vcpus, memory, disk, vms, image-storage, networks, ports, floating-ips or all", name)
				}
				if f.val != nil {
					return q, usagef("--unset %s: conflicts with --%s; give one", t, t)
				}
				*f.dst = nil
			}
		}
	}
	return out, nil
}

// clonePtr returns a copy of *p, nil for nil.
func clonePtr(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// quotaFlags are the quota flags of project create and quota set.
type quotaFlags struct {
	vcpus, vms, memoryMiB, diskMiB int64
	imageStorageMiB                int64
	networks, ports, floatingIPs   int64
	unset                          []string
}

func (f *quotaFlags) register(cmd *cobra.Command, withUnset bool) {
	fl := cmd.Flags()
	fl.Int64Var(&f.vcpus, quotaVCPUs, 0, "limit the virtual CPUs of the project's VMs together")
	fl.Var(sizeValue{&f.memoryMiB}, quotaMemory, "limit the memory of the project's VMs together, e.g. 64G")
	fl.Var(sizeValue{&f.diskMiB}, quotaDisk, "limit the disk of the project's VMs together, e.g. 500G")
	fl.Int64Var(&f.vms, quotaVMs, 0, "limit the number of the project's VMs")
	fl.Var(sizeValue{&f.imageStorageMiB}, quotaImages, "limit the storage of the project's images together, e.g. 100G")
	fl.Int64Var(&f.networks, quotaNetworks, 0, "limit the number of the project's networks")
	fl.Int64Var(&f.ports, quotaPorts, 0, "limit the number of the project's ports (its VMs' NICs on networks included)")
	fl.Int64Var(&f.floatingIPs, quotaFloatingIPs, 0, "limit the number of the project's floating IPs")
	if withUnset {
		fl.StringSliceVar(&f.unset, "unset", nil, "remove these limits: vcpus, memory, disk, vms, image-storage, networks, ports, floating-ips or all (comma-separated)")
	}
}

// changes returns the limits given on the command line.
func (f *quotaFlags) changes(cmd *cobra.Command) quotaChanges {
	fl := cmd.Flags()
	var ch quotaChanges
	for _, v := range []struct {
		name string
		val  *int64
		dst  **int64
	}{
		{quotaVCPUs, &f.vcpus, &ch.VCPUs}, {quotaMemory, &f.memoryMiB, &ch.MemoryMiB},
		{quotaDisk, &f.diskMiB, &ch.DiskMiB}, {quotaVMs, &f.vms, &ch.VMs},
		{quotaImages, &f.imageStorageMiB, &ch.ImageStorageMiB},
		{quotaNetworks, &f.networks, &ch.Networks}, {quotaPorts, &f.ports, &ch.Ports},
		{quotaFloatingIPs, &f.floatingIPs, &ch.FloatingIPs},
	} {
		if fl.Changed(v.name) {
			*v.dst = v.val
		}
	}
	ch.Unset = f.unset
	return ch
}

// quotaRows are a quota's limits against usage, one row per resource.
func quotaRows(limits api.Quota, usage api.Usage) [][4]string {
	count := func(n int64) string { return strconv.FormatInt(n, 10) }
	line := func(name string, used int64, limit *int64, format func(int64) string) [4]string {
		if limit == nil {
			return [4]string{name, format(used), "unlimited", "-"}
		}
		free := format(max(0, *limit-used))
		if used > *limit {
			free = "0 (over by " + format(used-*limit) + ")"
		}
		return [4]string{name, format(used), format(*limit), free}
	}
	mib := sizeOrZero
	return [][4]string{
		line(quotaVCPUs, usage.VCPUs, limits.VCPUs, count),
		line(quotaMemory, usage.MemoryMiB, limits.MemoryMiB, mib),
		line(quotaDisk, usage.DiskMiB, limits.DiskMiB, mib),
		line(quotaVMs, usage.VMs, limits.VMs, count),
		line(quotaImages, usage.ImageStorageMiB, limits.ImageStorageMiB, mib),
		line(quotaNetworks, usage.Networks, limits.Networks, count),
		line(quotaPorts, usage.Ports, limits.Ports, count),
		line(quotaFloatingIPs, usage.FloatingIPs, limits.FloatingIPs, count),
	}
}

// sizeOrZero writes a size in MiB, plain 0 for none.
func sizeOrZero(mib int64) string {
	if mib == 0 {
		return "0"
	}
	return formatMiB(mib)
}

// writeQuota writes the quota table.
func writeQuota(tw *tabwriter.Writer, limits api.Quota, usage api.Usage) {
	row(tw, "RESOURCE", "USED", "LIMIT", "AVAILABLE")
	for _, r := range quotaRows(limits, usage) {
		row(tw, r[0], r[1], r[2], r[3])
	}
}

func (a *app) quotaCommand() *cobra.Command {
	cmd := group("quota", "Show and set a project's quota (--project, else the project in force)", "quotas")
	cmd.AddCommand(a.quotaShowCommand(), a.quotaSetCommand())
	return cmd
}

func (a *app) quotaShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Aliases: []string{"get"},
		Short:   "Show a project's limits against its usage",
		Example: "  polyvisor quota show --project web",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			q, err := c.GetQuota(cmd.Context(), projectInForce(cfg))
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), q, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Project %s\n\n", q.Project)
				writeQuota(tw, q.Limits, q.Usage)
			})
		},
	}
}

func (a *app) quotaSetCommand() *cobra.Command {
	var f quotaFlags
	cmd := &cobra.Command{
		Use:   "set [--vcpus N] [--memory SIZE] [--disk SIZE] [--vms N] [--image-storage SIZE] [--unset RESOURCE,...]",
		Short: "Change a project's limits (superadmin); the others stay as they are",
		Example: "  polyvisor quota set --project web --vcpus 32 --memory 64G\n" +
			"  polyvisor quota set --project web --unset disk,vms",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch := f.changes(cmd)
			if ch.empty() {
				return usagef("give --vcpus, --memory, --disk, --vms, --image-storage or --unset")
			}
			// Check the flags before asking the server anything.
			if _, err := applyQuotaChanges(api.Quota{}, ch); err != nil {
				return err
			}
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			project := projectInForce(cfg)
			cur, err := c.GetQuota(cmd.Context(), project)
			if err != nil {
				return err
			}
			limits, err := applyQuotaChanges(cur.Limits, ch)
			if err != nil {
				return err
			}
			q, err := c.SetQuota(cmd.Context(), project, limits)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), q, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Project %s\n\n", q.Project)
				writeQuota(tw, q.Limits, q.Usage)
			})
		},
	}
	f.register(cmd, true)
	return cmd
}
