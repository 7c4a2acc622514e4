package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

func (a *app) vmMigrationCommand() *cobra.Command {
	cmd := group("migration", "Move VMs from other hypervisors (OVA/OVF, disk files, libvirt, vSphere) into Polyvisor hosts", "migrations")
	cmd.AddCommand(a.migrationPlanCommand(), a.migrationRunCommand(), a.migrationListCommand(),
		a.migrationShowCommand(), a.migrationCancelCommand(), a.migrationDeleteCommand())
	return cmd
}

// planFlags are the flags of `migration plan`.
type planFlags struct {
	files       []string
	ova, ovf    string
	provider    string
	vms         []string
	host        string
	networkMap  []string
	name        string
	vcpus       int
	memoryMiB   int64
	firmware    string
	guestOS     string
	diskBus     string
	macs        []string
	maxDiskGiB  int64
	planFile    string
	jobDir      string
	allowNets   []string
	providerURI string
}

func (a *app) migrationPlanCommand() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan (--from-file DISK... | --from-ova FILE|URL | --from-ovf FILE | --from libvirt|vsphere --uri URI --vm NAME...) --to-host HOST",
		Short: "Plan moving VMs: the hardware mapped, sizes, estimated time, what cannot move and why",
		Long: "Reads the source VMs' hardware and writes a plan (--plan-file) that 'polyvisor migration run' carries out.\n" +
			"Nothing is copied or changed. Disk files take their hardware from the flags; an OVA or OVF from its envelope.",
		Example: "  polyvisor migration plan --from-ova web.ova --to-host node1 --network-map 'VM Network=user'\n" +
			"  polyvisor migration plan --from-file hyperv.vhdx --name web --vcpus 2 --memory 2048 --mac 00:15:5d:01:02:03 --network-map '*=user' --to-host node1",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := a.makePlan(cmd, &f)
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(plan, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(f.planFile, append(b, '\n'), 0o600); err != nil {
				return fmt.Errorf("writing the plan: %w", err)
			}
			if err := a.print(cmd.OutOrStdout(), plan, func(tw *tabwriter.Writer) { printPlan(tw, plan) }); err != nil {
				return err
			}
			if !a.structured() {
				fmt.Fprintf(cmd.ErrOrStderr(), "plan written to %s: run it with 'polyvisor migration run %s'\n", f.planFile, f.planFile)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.files, "from-file", nil, "a disk file of the VM: VMDK, VHD, VHDX, VDI, raw or qcow2 (repeat, first is the boot disk)")
	fl.StringVar(&f.ova, "from-ova", "", "an OVA package: a file, or an http(s) URL fetched into the job directory")
	fl.StringVar(&f.ovf, "from-ovf", "", "an unpacked OVF envelope, its disks beside it")
	fl.StringVar(&f.provider, "from", "", "a hypervisor to read VMs from: libvirt or vsphere (with --vm)")
	fl.StringVar(&f.providerURI, "uri", "", "with --from: libvirt's URI (default qemu:///system), or vSphere's SDK URL https://USER@HOST/sdk (password from POLYVISOR_VSPHERE_PASSWORD, never in the URL)")
	fl.StringArrayVar(&f.vms, "vm", nil, "with --from: a VM to move (repeat)")
	fl.StringVar(&f.host, "to-host", "", "the Polyvisor host the VMs move to")
	fl.StringArrayVar(&f.networkMap, "network-map", nil, "SOURCE=NETWORK: a source network onto a Polyvisor network (user or one of the project's); '*=NETWORK' for every other")
	fl.StringVar(&f.name, "name", "", "with --from-file: the VM's name (default: the first file's)")
	fl.IntVar(&f.vcpus, "vcpus", 1, "with --from-file: vCPUs")
	fl.Int64Var(&f.memoryMiB, "memory", 1024, "with --from-file: memory in MiB")
	fl.StringVar(&f.firmware, "firmware", v2v.FirmwareBIOS, "with --from-file: bios or efi")
	fl.StringVar(&f.guestOS, "guest-os", "", "with --from-file: the guest's system (e.g. debian12, windows2019)")
	fl.StringVar(&f.diskBus, "disk-bus", "", "with --from-file: the bus the source attached the disks to (virtio, scsi, sata, ide)")
	fl.StringArrayVar(&f.macs, "mac", nil, "with --from-file: a NIC with this MAC (repeat)")
	fl.Int64Var(&f.maxDiskGiB, "max-disk-gib", v2v.DefaultMaxDiskBytes>>30, "refuse a disk larger than this")
	fl.StringVar(&f.planFile, "plan-file", "migration-plan.json", "where the plan is written")
	fl.StringVar(&f.jobDir, "job-dir", defaultJobDir(), "where fetched sources, copies and checkpoints are kept")
	fl.StringArrayVar(&f.allowNets, "allow-network", nil, "a network (CIDR) an OVA URL may be fetched from although it is not public (repeat)")
	return cmd
}

// defaultJobDir is where migrations keep their copies and checkpoints.
func defaultJobDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "polyvisor", "migrations")
	}
	return filepath.Join(os.TempDir(), "polyvisor-migrations")
}

func (a *app) makePlan(cmd *cobra.Command, f *planFlags) (v2v.Plan, error) {
	ctx := cmd.Context()
	maxDisk := f.maxDiskGiB << 30
	sources := 0
	for _, set := range []bool{len(f.files) > 0, f.ova != "", f.ovf != "", f.provider != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return v2v.Plan{}, errors.New("give one source: --from-file, --from-ova, --from-ovf or --from")
	}
	if f.host == "" {
		return v2v.Plan{}, errors.New("--to-host is required: the Polyvisor host the VMs move to")
	}
	netMap := map[string]string{}
	for _, m := range f.networkMap {
		src, dst, ok := strings.Cut(m, "=")
		if !ok || src == "" || dst == "" {
			return v2v.Plan{}, fmt.Errorf("--network-map %q: want SOURCE=NETWORK", m)
		}
		netMap[src] = dst
	}
	var hws []v2v.Hardware
	var source string
	var running []string // source VMs that run: copied as they are
	switch {
	case len(f.files) > 0:
		source = "file"
		name := f.name
		if name == "" {
			name = strings.TrimSuffix(filepath.Base(f.files[0]), filepath.Ext(f.files[0]))
		}
		hw := v2v.Hardware{Name: name, VCPUs: f.vcpus, MemoryMiB: f.memoryMiB, Firmware: f.firmware, GuestOS: f.guestOS}
		for i, file := range f.files {
			abs, err := filepath.Abs(file)
			if err != nil {
				return v2v.Plan{}, fmt.Errorf("--from-file %s: %w", file, err)
			}
			info, err := images.Inspect(ctx, abs, api.ImageDisk, images.WithMaxVirtualBytes(maxDisk))
			if err != nil {
				return v2v.Plan{}, fmt.Errorf("--from-file %s: %w", file, err)
			}
			hw.Disks = append(hw.Disks, v2v.Disk{Name: fmt.Sprintf("disk%d", i), Bus: f.diskBus, CapacityBytes: info.VirtualSizeBytes,
				Source: v2v.DiskSource{Kind: v2v.SourceFile, Path: abs, Format: info.Format}})
		}
		for _, mac := range f.macs {
			hw.NICs = append(hw.NICs, v2v.NIC{Network: "", MAC: mac})
		}
		hws = append(hws, hw)
	case f.ova != "":
		source = "ova"
		path := f.ova
		if strings.HasPrefix(f.ova, "http://") || strings.HasPrefix(f.ova, "https://") {
			fetched, err := a.fetchOVA(cmd, f)
			if err != nil {
				return v2v.Plan{}, err
			}
			path = fetched
		}
		hw, err := v2v.ReadOVA(path, maxDisk)
		if err != nil {
			return v2v.Plan{}, fmt.Errorf("--from-ova: %w", err)
		}
		hws = append(hws, hw)
	case f.ovf != "":
		source = "ovf"
		hw, err := v2v.ReadOVFFile(f.ovf, maxDisk)
		if err != nil {
			return v2v.Plan{}, fmt.Errorf("--from-ovf: %w", err)
		}
		hws = append(hws, hw)
	default:
		var err error
		if source, hws, running, err = a.providerHardware(cmd, f, maxDisk); err != nil {
			return v2v.Plan{}, err
		}
	}
	virtV2V, _ := exec.LookPath("virt-v2v-in-place")
	plan := v2v.Plan{Version: v2v.PlanVersion, CreatedAt: time.Now().UTC(), Source: source, Host: f.host}
	for _, hw := range hws {
		p := v2v.PlanVM(hw, v2v.Options{Host: f.host, NetworkMap: netMap, MaxDiskBytes: maxDisk, VirtV2V: virtV2V})
		if slices.Contains(running, hw.Name) {
			p.Warnings = append(p.Warnings, "the source VM runs: its disks are copied while it writes to them, which at best is like a crash; shut it down for a consistent copy (the source is never stopped or changed by a migration)")
		}
		plan.VMs = append(plan.VMs, p)
	}
	return plan, nil
}

// fetchOVA downloads an OVA URL into the job directory through the image
// import's guarded fetch (no private or loopback address unless
// --allow-network names it).
func (a *app) fetchOVA(cmd *cobra.Command, f *planFlags) (string, error) {
	var policy images.FetchPolicy
	for _, n := range f.allowNets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return "", fmt.Errorf("--allow-network %q: %w", n, err)
		}
		policy.AllowNetworks = append(policy.AllowNetworks, p)
	}
	dir := filepath.Join(f.jobDir, "sources")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("making job directory: %w", err)
	}
	dst := filepath.Join(dir, fmt.Sprintf("ova-%d.ova", time.Now().UnixNano()))
	if _, err := images.Fetch(cmd.Context(), f.ova, dst, nil, images.WithPolicy(policy)); err != nil {
		return "", fmt.Errorf("--from-ova: %w", err)
	}
	return dst, nil
}

func printPlan(tw *tabwriter.Writer, plan v2v.Plan) {
	row(tw, "VM", "SOURCE", "VCPUS", "MEMORY", "DISKS", "COPY", "ESTIMATE", "STATUS")
	for _, p := range plan.VMs {
		status := "ready"
		if len(p.Blockers) > 0 {
			status = "blocked"
		}
		row(tw, p.Name, p.Source.Name, p.VCPUs, formatMiB(p.MemoryMiB), len(p.Disks), formatMiB(p.CopyBytes>>20),
			(time.Duration(p.EstimatedSeconds) * time.Second).String(), status)
	}
	for _, p := range plan.VMs {
		name := termSafe(p.Name, true)
		for _, c := range p.Conversions {
			fmt.Fprintf(tw, "%s: converts %s\n", name, termSafe(c, true))
		}
		for _, w := range p.Warnings {
			fmt.Fprintf(tw, "%s: warning: %s\n", name, termSafe(w, true))
		}
		for _, b := range p.Blockers {
			fmt.Fprintf(tw, "%s: cannot move: %s\n", name, termSafe(b, true))
		}
	}
}

func (a *app) migrationRunCommand() *cobra.Command {
	var name, jobDir string
	var parallel int
	cmd := &cobra.Command{
		Use:   "run PLAN [--name NAME] [--parallel N]",
		Short: "Carry out a plan: copy the disks, import them, create the VMs on their host, in waves",
		Long: "Copies each VM's disks into verified qcow2 files under --job-dir (checkpointed: a run stopped or cancelled resumes),\n" +
			"imports them as the project's images and creates the VMs. The migration's progress is recorded in the project\n" +
			"('polyvisor migration show NAME'), where 'polyvisor migration cancel NAME' stops it.",
		Args: exactArgs(1, "PLAN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("reading the plan: %w", err)
			}
			var plan v2v.Plan
			if err := json.Unmarshal(b, &plan); err != nil {
				return fmt.Errorf("reading the plan %s: %w", args[0], err)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if name == "" {
				name = "m-" + time.Now().UTC().Format("20060102-150405")
			}
			streams, afterVM, err := a.planStreams(cmd, plan)
			if err != nil {
				return err
			}
			virtV2V, _ := exec.LookPath("virt-v2v-in-place")
			errw := cmd.ErrOrStderr()
			last := map[string]string{}
			r := &v2v.Runner{Client: c, Name: name, Parallel: parallel, Runner: runnerName(),
				Copier: &v2v.Copier{Dir: jobDir, Streams: streams, AfterVM: afterVM, VirtV2V: virtV2V},
				Events: func(s api.VMMigrationVMStatus) { printMigrationEvent(errw, last, s) }}
			fmt.Fprintf(errw, "migration %s: %d VM(s) to host %s\n", termSafe(name, true), len(plan.VMs), termSafe(plan.Host, true))
			m, err := r.Run(cmd.Context(), plan)
			if m != nil {
				if perr := a.printMigration(cmd.OutOrStdout(), m); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the migration's name (default m-DATE-TIME); a run under the name of one not ended takes it over")
	cmd.Flags().IntVar(&parallel, "parallel", 2, "VMs moved at once (a wave)")
	cmd.Flags().StringVar(&jobDir, "job-dir", defaultJobDir(), "where copies and checkpoints are kept")
	return cmd
}

// printMigrationEvent prints a VM's state and phase when they change.
func printMigrationEvent(w io.Writer, last map[string]string, s api.VMMigrationVMStatus) {
	key := s.State + "/" + s.Phase + "/" + s.Disk
	if last[s.Name] == key {
		return
	}
	last[s.Name] = key
	msg := s.State
	if s.Phase != "" {
		msg += ": " + s.Phase
		if s.Disk != "" {
			msg += " " + s.Disk
		}
	}
	if s.ResumedBytes > 0 {
		msg += fmt.Sprintf(" (resumed at %s)", formatMiB(s.ResumedBytes>>20))
	}
	if s.Error != "" {
		msg += ": " + s.Error
	}
	// The error and names come from the source and the server: escaped,
	// so that they cannot drive the terminal.
	fmt.Fprintf(w, "  %s: %s\n", termSafe(s.Name, true), termSafe(msg, true))
}

func runnerName() string {
	host, _ := os.Hostname()
	if u, err := user.Current(); err == nil {
		return u.Username + "@" + host
	}
	return host
}

func (a *app) printMigration(w io.Writer, m *api.VMMigration) error {
	return a.print(w, m, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "migration %s: %s (to host %s, from %s, %d at once)\n", termSafe(m.Name, true), termSafe(m.Status.State, true),
			termSafe(m.Spec.Host, true), termSafe(m.Spec.Source, true), m.Spec.Parallel)
		if m.Status.Error != "" {
			fmt.Fprintf(tw, "error: %s\n", termSafe(m.Status.Error, true))
		}
		row(tw, "VM", "STATE", "PHASE", "DISK", "DONE", "TOTAL", "RATE", "ETA", "ERROR")
		for _, v := range m.Status.VMs {
			rate, eta := "-", "-"
			if v.Rate > 0 {
				rate = fmt.Sprintf("%.1f MB/s", v.Rate/1e6)
				eta = (time.Duration(v.ETASeconds) * time.Second).String()
			}
			row(tw, v.Name, v.State, orDash(v.Phase), orDash(v.Disk), formatMiB(v.DoneBytes>>20), formatMiB(v.TotalBytes>>20), rate, eta, orDash(v.Error))
		}
	})
}

func (a *app) migrationListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project's migrations",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ms, err := c.ListVMMigrations(cmd.Context(), api.ListOptions{})
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.VMMigration]{Items: nonNil(ms)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "STATE", "SOURCE", "HOST", "VMS", "DONE", "AGE")
				for _, m := range ms {
					done := 0
					for _, v := range m.Status.VMs {
						if v.State == api.VMMigrationSucceeded {
							done++
						}
					}
					row(tw, m.Name, m.Status.State, m.Spec.Source, m.Spec.Host, len(m.Spec.VMs), done, age(m.CreatedAt))
				}
			})
		},
	}
}

func (a *app) migrationShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a migration: each VM's state, phase, bytes, rate and ETA",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			m, err := c.GetVMMigration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printMigration(cmd.OutOrStdout(), m)
		},
	}
}

func (a *app) migrationCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel NAME",
		Short: "Stop a migration; what it copied is kept, and a later run of the plan resumes",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			m, err := c.CancelVMMigration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printMigration(cmd.OutOrStdout(), m)
		},
	}
}

func (a *app) migrationDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a migration's record (cancel a running one first); the VMs, images and copies it made stay",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteVMMigration(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "migration", Name: args[0], Result: "deleted"}, "Deleted migration "+termSafe(args[0], true))
		},
	}
}
