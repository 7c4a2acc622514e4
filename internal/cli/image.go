package cli

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) imageCommand() *cobra.Command {
	cmd := group("image", "Manage disk, kernel and initrd images", "images")
	cmd.AddCommand(a.imageImportCommand(), a.imageListCommand(), a.imageShowCommand(), a.imageDeleteCommand(),
		a.imageSetCommand(), a.imageSettingsCommand())
	return cmd
}

func (a *app) imageImportCommand() *cobra.Command {
	var name, kind string
	var noWait, public bool
	cmd := &cobra.Command{
		Use:   "import FILE|URL",
		Short: "Upload an image file, or have the server fetch an http(s) URL",
		Long: "Import an image. A local FILE is uploaded with a progress bar; an http:// or\n" +
			"https:// URL is fetched by the server. Disk images in qcow2, raw, vmdk, vpc, vhdx\n" +
			"or vdi format are stored as qcow2. The name defaults to the file's name without\n" +
			"its extension.\n\n" +
			"The server fetches only from public internet addresses unless a superadmin\n" +
			"allows networks or hosts ('polyvisor image settings set'). Credentials in a URL\n" +
			"(https://user:password@host/...) are used for the download only: the image's\n" +
			"source is stored and shown without them.",
		Example: "  polyvisor image import debian-12-genericcloud-amd64.qcow2 --name debian-12\n" +
			"  polyvisor image import https://example.com/vmlinuz --name vmlinuz --kind kernel",
		Args: exactArgs(1, "FILE|URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			switch kind {
			case api.ImageDisk, api.ImageKernel, api.ImageInitrd:
			default:
				return usagef("--kind: %q is not disk, kernel or initrd", kind)
			}
			isURL := strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
			if name == "" {
				name = imageName(src, isURL)
				if name == "" {
					return usagef("--name: cannot be derived from %q, give one", src)
				}
			}
			if public && !isURL && noWait {
				return usagef("--public: an uploaded FILE is made public once imported; drop --no-wait, or run 'polyvisor image set %s --public' later", name)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if isURL {
				op, err := c.ImportImageURL(ctx, api.ImageCreate{Name: name, Kind: kind, URL: src, Public: public})
				if err != nil {
					return err
				}
				return a.finish(cmd, c, op, noWait)
			}
			f, err := os.Open(src)
			if err != nil {
				return fmt.Errorf("open image: %w", err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("open image: %w", err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("open image: %s is not a regular file", src)
			}
			bar := newProgressBar(cmd.ErrOrStderr(), "Uploading "+filepath.Base(src), st.Size())
			op, err := c.UploadImage(ctx, name, kind, f, st.Size(), bar.set)
			bar.finish(err == nil)
			if err != nil {
				return err
			}
			if err := a.finish(cmd, c, op, noWait); err != nil || !public {
				return err
			}
			_, err = c.UpdateImage(ctx, name, api.ImageUpdate{Public: &public})
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "image name (default: the file's name without extension)")
	cmd.Flags().StringVar(&kind, "kind", api.ImageDisk, "image kind: disk, kernel or initrd")
	cmd.Flags().BoolVar(&public, "public", false, "let VMs of every project use the image (superadmin)")
	addNoWait(cmd, &noWait)
	return cmd
}

// imageName derives an image name from a file path or URL: its last
// element without the image extensions.
func imageName(src string, isURL bool) string {
	base := filepath.Base(src)
	if isURL {
		u, err := url.Parse(src)
		if err != nil {
			return ""
		}
		base = u.Path[strings.LastIndex(u.Path, "/")+1:]
	}
	for {
		ext := strings.ToLower(filepath.Ext(base))
		switch ext {
		case ".qcow2", ".img", ".raw", ".vmdk", ".vhd", ".vhdx", ".vdi", ".gz", ".xz", ".iso":
			base = strings.TrimSuffix(base, base[len(base)-len(ext):])
			continue
		}
		break
	}
	if base == "." || base == "/" {
		return ""
	}
	return base
}

func (a *app) imageListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			images, err := listItems(cmd.Context(), opts, c.ListImages, c.ListAllImages)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Image]{Items: nonNil(images)}, func(tw *tabwriter.Writer) {
				head := []any{"NAME", "KIND", "FORMAT", "SIZE", "VIRTUAL SIZE", "STATE", "AGE"}
				if opts.AllProjects {
					head = append([]any{"PROJECT"}, head...)
				}
				row(tw, head...)
				for _, img := range images {
					virtual := "-"
					if img.VirtualSizeBytes > 0 {
						virtual = formatBytes(img.VirtualSizeBytes)
					}
					name := img.Name
					if !opts.AllProjects && img.Project != "" && img.Project != projectInForce(cfg) {
						// Another project's public image, named as a VM
						// refers to it.
						name = img.Project + "/" + img.Name
					}
					if img.Public {
						name += " (public)"
					}
					cells := []any{name, img.Kind, orDash(img.Format), formatBytes(img.SizeBytes), virtual, img.State, age(img.CreatedAt)}
					if opts.AllProjects {
						cells = append([]any{orDash(img.Project)}, cells...)
					}
					row(tw, cells...)
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	allProjectsFlag(cmd, &opts, "images")
	return cmd
}

func (a *app) imageShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show an image",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			img, err := c.GetImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), img, func(tw *tabwriter.Writer) {
				row(tw, "Name:", img.Name)
				if img.Project != "" {
					row(tw, "Project:", img.Project)
				}
				if img.Public {
					row(tw, "Visibility:", "public (VMs of every project may use it)")
				} else {
					row(tw, "Visibility:", "private (VMs of its project only)")
				}
				row(tw, "UID:", orDash(img.UID))
				row(tw, "Labels:", labels(img.Labels))
				row(tw, "Kind:", img.Kind)
				row(tw, "State:", img.State)
				if img.Message != "" {
					row(tw, "Message:", img.Message)
				}
				row(tw, "Format:", fmt.Sprintf("%s (imported from %s)", orDash(img.Format), orDash(img.SourceFormat)))
				row(tw, "Size:", formatBytes(img.SizeBytes))
				if img.VirtualSizeBytes > 0 {
					row(tw, "Virtual size:", formatBytes(img.VirtualSizeBytes))
				}
				row(tw, "SHA-256:", orDash(img.SHA256))
				row(tw, "Source:", orDash(img.Source))
				row(tw, "Created:", when(img.CreatedAt))
			})
		},
	}
}

func (a *app) imageDeleteCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an image no VM uses",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.DeleteImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}
