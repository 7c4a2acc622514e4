package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func (a *app) imageSetCommand() *cobra.Command {
	var public, private bool
	cmd := &cobra.Command{
		Use:   "set NAME (--public | --private)",
		Short: "Make an image public or private (superadmin)",
		Long: "Make an image public: VMs of every project may then use it, by its name when\n" +
			"it is in the default project, as PROJECT/NAME otherwise; it shows in every\n" +
			"project's image list. --private makes it its project's own again; VMs of other\n" +
			"projects that already use it keep their disks. Only a superadmin changes this,\n" +
			"and the change is in the audit log.",
		Example: "  polyvisor image set tiny-disk --public\n" +
			"  polyvisor image set golden --project web --private",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if public == private {
				return usagef("give one of --public or --private")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			img, err := c.UpdateImage(cmd.Context(), args[0], api.ImageUpdate{Public: &public})
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), img, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "image %s/%s is now %s\n", img.Project, img.Name, visibilityOf(img))
			})
		},
	}
	cmd.Flags().BoolVar(&public, "public", false, "let VMs of every project use the image")
	cmd.Flags().BoolVar(&private, "private", false, "keep the image to its own project")
	return cmd
}

func visibilityOf(img *api.Image) string {
	if img.Public {
		return "public"
	}
	return "private"
}

func (a *app) imageSettingsCommand() *cobra.Command {
	cmd := group("settings", "Show and set the installation's image import rules (superadmin)")
	cmd.AddCommand(a.imageSettingsShowCommand(), a.imageSettingsSetCommand())
	return cmd
}

// writeImageSettings writes the settings in force.
func writeImageSettings(tw *tabwriter.Writer, set *api.ImageSettings) {
	list := func(v []string) string {
		if len(v) == 0 {
			return "none (public internet addresses only)"
		}
		return strings.Join(v, ", ")
	}
	row(tw, "Max virtual size:", formatBytes(set.MaxVirtualBytes))
	row(tw, "Imports at once per project:", set.MaxImportsPerProject)
	row(tw, "Conversion timeout:", (time.Duration(set.ConvertTimeoutSeconds) * time.Second).String())
	row(tw, "Fetch allowed networks:", list(set.FetchAllowNetworks))
	row(tw, "Fetch allowed hosts:", list(set.FetchAllowHosts))
}

func (a *app) imageSettingsShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Aliases: []string{"get"},
		Short:   "Show the image import rules in force",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			set, err := c.ImageSettings(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), set, func(tw *tabwriter.Writer) { writeImageSettings(tw, set) })
		},
	}
}

func (a *app) imageSettingsSetCommand() *cobra.Command {
	var maxVirtualMiB int64
	var maxImports int
	var timeout time.Duration
	var networks, hosts []string
	cmd := &cobra.Command{
		Use:   "set [flags]",
		Short: "Change image import rules; the others stay as they are",
		Long: "Change the installation's image import rules. URL imports fetch only from public\n" +
			"internet addresses, checked on every connection and redirect after name\n" +
			"resolution; --fetch-allow-networks and --fetch-allow-hosts open networks and\n" +
			"hosts (an internal mirror), replacing the lists (give \"\" to empty one). Cloud\n" +
			"metadata addresses are never fetched from; the server's own addresses only when\n" +
			"allowed one by one (203.0.113.7/32). The change is in the audit log.",
		Example: "  polyvisor image settings set --fetch-allow-networks 10.20.0.0/16 --fetch-allow-hosts mirror.internal\n" +
			"  polyvisor image settings set --max-virtual-size 512G --max-imports 4 --convert-timeout 2h",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			changed := false
			for _, f := range []string{"max-virtual-size", "max-imports", "convert-timeout", "fetch-allow-networks", "fetch-allow-hosts"} {
				changed = changed || fl.Changed(f)
			}
			if !changed {
				return usagef("give at least one of --max-virtual-size, --max-imports, --convert-timeout, --fetch-allow-networks, --fetch-allow-hosts")
			}
			if maxImports < 0 {
				return usagef("--max-imports: must be 1 or more, not %d", maxImports)
			}
			if fl.Changed("convert-timeout") && timeout < time.Second {
				return usagef("--convert-timeout: %s is less than a second", timeout)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			set, err := c.ImageSettings(cmd.Context())
			if err != nil {
				return err
			}
			if fl.Changed("max-virtual-size") {
				set.MaxVirtualBytes = maxVirtualMiB << 20
			}
			if fl.Changed("max-imports") {
				set.MaxImportsPerProject = maxImports
			}
			if fl.Changed("convert-timeout") {
				set.ConvertTimeoutSeconds = int64(timeout / time.Second)
			}
			if fl.Changed("fetch-allow-networks") {
				set.FetchAllowNetworks = nonEmpty(networks)
			}
			if fl.Changed("fetch-allow-hosts") {
				set.FetchAllowHosts = nonEmpty(hosts)
			}
			out, err := c.SetImageSettings(cmd.Context(), *set)
			if err != nil {
				return settingsFlagError(err, map[string]string{
					"maxVirtualBytes": "--max-virtual-size", "maxImportsPerProject": "--max-imports",
					"convertTimeoutSeconds": "--convert-timeout", "fetchAllowNetworks": "--fetch-allow-networks",
					"fetchAllowHosts": "--fetch-allow-hosts",
				})
			}
			return a.print(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { writeImageSettings(tw, out) })
		},
	}
	fl := cmd.Flags()
	fl.Var(sizeValue{&maxVirtualMiB}, "max-virtual-size", "refuse disks with a larger virtual size, e.g. 256G")
	fl.IntVar(&maxImports, "max-imports", 0, "imports running at once in one project")
	fl.DurationVar(&timeout, "convert-timeout", 0, "longest conversion of one disk, e.g. 1h")
	fl.StringSliceVar(&networks, "fetch-allow-networks", nil, "networks (CIDR) URL imports may reach although not public, comma-separated")
	fl.StringSliceVar(&hosts, "fetch-allow-hosts", nil, "host names (or *.domain) URL imports may reach, comma-separated")
	return cmd
}

// nonEmpty drops empty entries, so that "" empties a list.
func nonEmpty(v []string) []string {
	var out []string
	for _, s := range v {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// settingsFlagError names the flag behind the field a settings error
// names.
func settingsFlagError(err error, flags map[string]string) error {
	var se *client.StatusError
	if !errors.As(err, &se) || se.Err == nil || se.Err.Field == "" {
		return err
	}
	field, _, _ := strings.Cut(se.Err.Field, "[")
	if flag, ok := flags[field]; ok {
		return fmt.Errorf("%s: %s", flag, se.Err.Message)
	}
	return err
}
