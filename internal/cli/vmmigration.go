package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func (a *app) vmMigrationCommand() *cobra.Command {
	cmd := group("migration", "Move VMs from other hypervisors (vSphere, libvirt, OVA, disk files) into Polyvisor hosts", "migrations")
	cmd.AddCommand(a.migrationPlanCommand(), a.migrationRunCommand(), a.migrationListCommand(),
		a.migrationShowCommand(), a.migrationCancelCommand(), a.migrationDeleteCommand())
	return cmd
}

// sourceFlags are the flags that describe a migration.
type sourceFlags struct {
	name        string
	files       []string
	ova         string
	provider    string
	vms         []string
	host        string
	networkMap  []string
	parallel    int
	disposition string
	cutover     string
	vmName      string
	vcpus       int
	memoryMiB   int64
	firmware    string
	guestOS     string
	diskBus     string
	macs        []string
}

func (f *sourceFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "the migration's name (default m-DATE-TIME)")
	fl.StringArrayVar(&f.files, "from-file", nil, "a disk file of the VM, uploaded to the server: VMDK, VHD, VHDX, VDI, raw or qcow2 (repeat, first is the boot disk)")
	fl.StringVar(&f.ova, "from-ova", "", "an OVA package: a file uploaded to the server, or an http(s) URL the server fetches")
	fl.StringVar(&f.provider, "from", "", "a provider of the project (vSphere or libvirt) to move VMs from, with --vm")
	fl.StringArrayVar(&f.vms, "vm", nil, "with --from: the provider's id of a VM to move, optionally =NAME for the Polyvisor VM (repeat)")
	fl.StringVar(&f.host, "to-host", "", "the Polyvisor host the VMs move to (default: the scheduler places each)")
	fl.StringArrayVar(&f.networkMap, "network-map", nil, "SOURCE=NETWORK: a source network onto a Polyvisor network (user or one of the project's); '*=NETWORK' for every other")
	fl.IntVar(&f.parallel, "parallel", 2, "VMs moved at once (a wave)")
	fl.StringVar(&f.disposition, "source-disposition", api.DispositionKeep, "with --from: what to do with each source VM once its target runs: keep, poweroff or delete")
	fl.StringVar(&f.cutover, "cutover", "", "with --from: how a running vSphere VM is switched over: auto (copy while it runs, power it off, copy what changed)")
	fl.StringVar(&f.vmName, "vm-name", "", "with --from-file: the VM's name (default: the first file's)")
	fl.IntVar(&f.vcpus, "vcpus", 1, "with --from-file: vCPUs")
	fl.Int64Var(&f.memoryMiB, "memory", 1024, "with --from-file: memory in MiB")
	fl.StringVar(&f.firmware, "firmware", "bios", "with --from-file: bios or efi")
	fl.StringVar(&f.guestOS, "guest-os", "", "with --from-file: the guest's system (e.g. debian12, windows2019)")
	fl.StringVar(&f.diskBus, "disk-bus", "", "with --from-file: the bus the source attached the disks to (virtio, scsi, sata, ide, nvme)")
	fl.StringArrayVar(&f.macs, "mac", nil, "with --from-file: a NIC with this MAC (repeat; map its network with '*=NETWORK')")
}

// request makes the migration's create request; uploads lists the local
// files to send, by the name the request gives them.
func (f *sourceFlags) request(start bool) (api.VMMigrationCreate, map[string]string, error) {
	req := api.VMMigrationCreate{Name: f.name, Host: f.host, Parallel: f.parallel, SourceDisposition: f.disposition,
		Cutover: f.cutover, Start: start}
	if req.Name == "" {
		req.Name = "m-" + time.Now().UTC().Format("20060102-150405")
	}
	sources := 0
	for _, set := range []bool{len(f.files) > 0, f.ova != "", f.provider != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return req, nil, usagef("give one source: --from-file, --from-ova or --from")
	}
	for _, m := range f.networkMap {
		src, dst, ok := strings.Cut(m, "=")
		if !ok || src == "" || dst == "" {
			return req, nil, usagef("--network-map %q: want SOURCE=NETWORK", m)
		}
		if req.NetworkMap == nil {
			req.NetworkMap = map[string]string{}
		}
		req.NetworkMap[src] = dst
	}
	uploads := map[string]string{}
	addFile := func(path string) error {
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		name := filepath.Base(path)
		if _, dup := uploads[name]; dup {
			return usagef("two files are called %s", name)
		}
		uploads[name] = path
		req.Source.Files = append(req.Source.Files, api.VMMigrationFile{Name: name, SizeBytes: st.Size()})
		return nil
	}
	switch {
	case f.provider != "":
		if len(f.vms) == 0 {
			return req, nil, usagef("--from needs --vm ID (repeat)")
		}
		req.Source = api.VMMigrationSource{Kind: api.MigrationSourceProvider, Provider: f.provider}
		for _, v := range f.vms {
			id, name, _ := strings.Cut(v, "=")
			req.Source.VMs = append(req.Source.VMs, api.VMMigrationSourceVM{ID: id, Name: name})
		}
	case strings.HasPrefix(f.ova, "http://") || strings.HasPrefix(f.ova, "https://"):
		req.Source = api.VMMigrationSource{Kind: api.MigrationSourceURL, URL: f.ova}
	case f.ova != "":
		req.Source = api.VMMigrationSource{Kind: api.MigrationSourceUpload, Format: api.MigrationFormatOVA}
		if err := addFile(f.ova); err != nil {
			return req, nil, fmt.Errorf("--from-ova: %w", err)
		}
	default:
		req.Source = api.VMMigrationSource{Kind: api.MigrationSourceUpload, Format: api.MigrationFormatDisk,
			Hardware: &api.VMMigrationHardware{Name: f.vmName, VCPUs: f.vcpus, MemoryMiB: f.memoryMiB, Firmware: f.firmware,
				GuestOS: f.guestOS, DiskBus: f.diskBus, MACs: f.macs}}
		for _, file := range f.files {
			if err := addFile(file); err != nil {
				return req, nil, fmt.Errorf("--from-file: %w", err)
			}
		}
	}
	return req, uploads, nil
}

// createMigration makes the migration and uploads its files.
func (a *app) createMigration(cmd *cobra.Command, c *client.Client, f *sourceFlags, start bool) (*api.VMMigration, error) {
	req, uploads, err := f.request(start)
	if err != nil {
		return nil, err
	}
	m, err := c.CreateVMMigration(cmd.Context(), req)
	if err != nil {
		return nil, err
	}
	for _, file := range req.Source.Files {
		if m, err = a.uploadMigrationFile(cmd, c, m.Name, file, uploads[file.Name]); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// uploadMigrationFile streams one file to the server, which takes no
// more than its declared size.
func (a *app) uploadMigrationFile(cmd *cobra.Command, c *client.Client, migration string, file api.VMMigrationFile, path string) (*api.VMMigration, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer fh.Close()
	bar := newProgressBar(cmd.ErrOrStderr(), "Uploading "+file.Name, file.SizeBytes)
	m, err := c.UploadVMMigrationFile(cmd.Context(), migration, file.Name, io.LimitReader(fh, file.SizeBytes), file.SizeBytes, bar.set)
	bar.finish(err == nil)
	return m, err
}

// planned tells whether a migration is past its plan.
func planned(m *api.VMMigration) bool {
	switch m.Status.State {
	case api.VMMigrationUploading, api.VMMigrationPlanning:
		return false
	}
	return true
}

func ended(m *api.VMMigration) bool {
	switch m.Status.State {
	case api.VMMigrationSucceeded, api.VMMigrationFailed, api.VMMigrationCancelled:
		return true
	}
	return false
}

func (a *app) migrationPlanCommand() *cobra.Command {
	var f sourceFlags
	cmd := &cobra.Command{
		Use:   "plan (--from-file DISK... | --from-ova FILE|URL | --from PROVIDER --vm ID...) [--to-host HOST]",
		Short: "Plan moving VMs: the server reads the source and says per VM the mapping, sizes, estimated time, what cannot move and why",
		Long: "Makes the migration in the project, planned but not started: local files are uploaded to the server, which reads\n" +
			"the sources (a provider with the project's binding, an OVA URL it fetches). Nothing is copied until\n" +
			"'polyvisor migration run NAME'; 'polyvisor migration delete NAME' drops the plan.",
		Example: "  polyvisor migration plan --name web --from-ova web.ova --to-host node1 --network-map 'VM Network=user'\n" +
			"  polyvisor migration plan --from vc1 --vm vm-42 --vm vm-43=db --network-map '*=user' --source-disposition poweroff",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			m, err := a.createMigration(cmd, c, &f, false)
			if err != nil {
				return err
			}
			if m, err = c.WaitVMMigration(cmd.Context(), m.Name, 500*time.Millisecond, planned, nil); err != nil {
				return err
			}
			if err := a.printMigration(cmd.OutOrStdout(), m); err != nil {
				return err
			}
			if m.Status.State == api.VMMigrationFailed {
				return errors.New("the migration could not be planned: " + termSafe(m.Status.Error, true))
			}
			if !a.structured() {
				fmt.Fprintf(cmd.ErrOrStderr(), "planned: run it with 'polyvisor migration run %s'\n", termSafe(m.Name, true))
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) migrationRunCommand() *cobra.Command {
	var f sourceFlags
	var detach bool
	cmd := &cobra.Command{
		Use:   "run (NAME | --from-file DISK... | --from-ova FILE|URL | --from PROVIDER --vm ID...)",
		Short: "Run a migration: the server copies the disks, imports them, creates the VMs, in waves; this follows it to its end",
		Long: "Starts a planned migration (NAME), or makes one from the source flags and starts it. The server runs it\n" +
			"(checkpointed: a server restart resumes it); this command follows its progress until it ends (--detach: it does not).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			var m *api.VMMigration
			if len(args) == 1 {
				var set []string
				cmd.LocalFlags().Visit(func(fl *pflag.Flag) {
					if fl.Name != "detach" {
						set = append(set, "--"+fl.Name)
					}
				})
				if len(set) > 0 {
					return usagef("give a planned migration's NAME or source flags, not both (%s)", strings.Join(set, " "))
				}
				m, err = c.StartVMMigration(cmd.Context(), args[0])
			} else {
				m, err = a.createMigration(cmd, c, &f, true)
			}
			if err != nil {
				return err
			}
			errw := cmd.ErrOrStderr()
			fmt.Fprintf(errw, "migration %s started\n", termSafe(m.Name, true))
			if detach {
				return a.printMigration(cmd.OutOrStdout(), m)
			}
			last := map[string]string{}
			m, err = c.WaitVMMigration(cmd.Context(), m.Name, time.Second, ended, func(m *api.VMMigration) {
				for _, v := range m.Status.VMs {
					printMigrationEvent(errw, last, v)
				}
			})
			if err != nil {
				return err
			}
			if err := a.printMigration(cmd.OutOrStdout(), m); err != nil {
				return err
			}
			if m.Status.State != api.VMMigrationSucceeded {
				return fmt.Errorf("migration %s %s: %s", termSafe(m.Name, true), m.Status.State, termSafe(m.Status.Error, true))
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&detach, "detach", false, "start it and return; follow it with 'polyvisor migration show NAME'")
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

// sourceText says where a migration's VMs come from.
func sourceText(s api.VMMigrationSource) string {
	switch s.Kind {
	case api.MigrationSourceProvider:
		return fmt.Sprintf("provider %s (%d VMs)", s.Provider, len(s.VMs))
	case api.MigrationSourceURL:
		return s.URL
	case api.MigrationSourceUpload:
		var names []string
		for _, f := range s.Files {
			names = append(names, f.Name)
		}
		return "upload " + strings.Join(names, ", ")
	}
	return s.Kind
}

func (a *app) printMigration(w io.Writer, m *api.VMMigration) error {
	return a.print(w, m, func(tw *tabwriter.Writer) {
		host := m.Spec.Host
		if host == "" {
			host = "(scheduler)"
		}
		fmt.Fprintf(tw, "migration %s: %s (from %s to host %s, %d at once, source: %s)\n", termSafe(m.Name, true), termSafe(m.Status.State, true),
			termSafe(sourceText(m.Spec.Source), true), termSafe(host, true), m.Spec.Parallel, termSafe(m.Spec.SourceDisposition, true))
		if m.Status.Error != "" {
			fmt.Fprintf(tw, "error: %s\n", termSafe(m.Status.Error, true))
		}
		row(tw, "VM", "SOURCE", "VCPUS", "MEMORY", "COPY", "ESTIMATE", "STATE", "PHASE", "DONE", "RATE", "ETA")
		for _, v := range m.Status.VMs {
			vcpus, mem, copyMiB, est := "-", "-", "-", "-"
			if p := v.Plan; p != nil {
				vcpus, mem, copyMiB = fmt.Sprint(p.VCPUs), formatMiB(p.MemoryMiB), formatMiB(p.CopyBytes>>20)
				est = (time.Duration(p.EstimatedSeconds) * time.Second).String()
			}
			rate, eta := "-", "-"
			if v.Rate > 0 {
				rate = fmt.Sprintf("%.1f MB/s", v.Rate/1e6)
				eta = (time.Duration(v.ETASeconds) * time.Second).String()
			}
			done := "-"
			if v.TotalBytes > 0 {
				done = formatMiB(v.DoneBytes>>20) + "/" + formatMiB(v.TotalBytes>>20)
			}
			row(tw, v.Name, orDash(v.SourceName), vcpus, mem, copyMiB, est, v.State, orDash(v.Phase), done, rate, eta)
		}
		for _, v := range m.Status.VMs {
			name := termSafe(v.Name, true)
			if p := v.Plan; p != nil {
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
			for _, n := range v.Notes {
				fmt.Fprintf(tw, "%s: %s\n", name, termSafe(n, true))
			}
			if v.Error != "" {
				fmt.Fprintf(tw, "%s: error: %s\n", name, termSafe(v.Error, true))
			}
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
					row(tw, m.Name, m.Status.State, sourceText(m.Spec.Source), orDash(m.Spec.Host), len(m.Status.VMs), done, age(m.CreatedAt))
				}
			})
		},
	}
}

func (a *app) migrationShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a migration: each VM's plan, state, phase, bytes, rate and ETA",
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
		Short: "Stop a migration; the images and VM it half-made are removed",
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
		Short: "Delete a migration (a running one is stopped first) and its copies; the VMs it finished stay",
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
