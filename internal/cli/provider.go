package cli

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// maxSecretFile bounds a password or CA file: neither is large.
const maxSecretFile = 1 << 20

// providerPollInterval is the pause between two looks at a provider that
// is still connecting.
var providerPollInterval = time.Second

func (a *app) providerCommand() *cobra.Command {
	cmd := group("provider", "Connect existing estates: vSphere (vCenter, ESXi) and libvirt hosts", "providers")
	cmd.Long = "A provider is an existing estate Polyvisor connects to: a vCenter or ESXi host,\n" +
		"or a libvirt host. Its hosts and VMs then appear in 'polyvisor host list' and\n" +
		"'polyvisor vm list' (filter them with --provider), with no agent on its hosts."
	cmd.AddCommand(
		a.providerAddCommand(),
		a.providerListCommand(),
		a.providerShowCommand(),
		a.providerRefreshCommand(),
		a.providerRemoveCommand(),
		a.providerInventoryCommand(),
	)
	return cmd
}

// providerAddFlags are the flags of provider add.
type providerAddFlags struct {
	url, username, passwordFile, caFile string
	insecure, noWait                    bool
	timeout                             time.Duration
}

func (a *app) providerAddCommand() *cobra.Command {
	cmd := group("add", "Connect a provider; the server checks the connection first")
	cmd.AddCommand(a.providerAddVSphereCommand(), a.providerAddLibvirtCommand())
	return cmd
}

func (a *app) providerAddVSphereCommand() *cobra.Command {
	var f providerAddFlags
	cmd := &cobra.Command{
		Use:   "vsphere NAME --url URL --username USER --password-file FILE [--ca-file FILE | --insecure]",
		Short: "Connect a vCenter or an ESXi host",
		Long: "Connect a vCenter or an ESXi host. The server logs in before it stores anything:\n" +
			"an unreachable URL, refused credentials or an untrusted certificate is an error\n" +
			"naming what to fix. The password is read from a file (- for standard input),\n" +
			"sent once, stored encrypted by the server and never shown again.\n\n" +
			"Here --ca-file is the PEM of the CA the vCenter's certificate chains to. The\n" +
			"CA of the Polyvisor server then comes from POLYVISOR_CA_FILE or the config file.",
		Example: "  polyvisor provider add vsphere vc1 --url https://vcenter.example.com/sdk \\\n" +
			"      --username administrator@vsphere.local --password-file ./vc1.pw --ca-file ./vc1-ca.pem",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case f.url == "":
				return usagef("--url: required, e.g. https://vcenter.example.com/sdk")
			case !strings.HasPrefix(f.url, "https://") && !strings.HasPrefix(f.url, "http://"):
				return usagef("--url: %q is not an https:// URL", f.url)
			case f.username == "":
				return usagef("--username: required")
			case f.passwordFile == "":
				return usagef("--password-file: required (a file holding the password, or - for standard input)")
			case f.caFile != "" && f.insecure:
				return usagef("--ca-file and --insecure: give one")
			}
			req := api.ProviderCreate{Name: args[0], Type: api.ProviderVSphere, URL: f.url, Username: f.username, Insecure: f.insecure}
			var err error
			if req.Password, err = readPasswordFile(f.passwordFile, cmd.InOrStdin(), cmd.ErrOrStderr()); err != nil {
				return err
			}
			if f.caFile != "" {
				if req.CACert, err = readCAFile(f.caFile); err != nil {
					return err
				}
			}
			if f.insecure {
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: --insecure: the certificate of %s will not be verified\n", f.url)
			}
			return a.addProvider(cmd, req, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.url, "url", "", "the SDK `URL` of the vCenter or ESXi host, e.g. https://vcenter.example.com/sdk")
	fl.StringVar(&f.username, "username", "", "the `user` to log in as, e.g. administrator@vsphere.local")
	fl.StringVar(&f.passwordFile, "password-file", "", "a `file` holding the password (- reads standard input)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM `file` of the CA that signed the vCenter's certificate (default: the server's system roots)")
	fl.BoolVar(&f.insecure, "insecure", false, "do not verify the vCenter's certificate")
	addProviderWaitFlags(cmd, &f)
	return cmd
}

func (a *app) providerAddLibvirtCommand() *cobra.Command {
	var f providerAddFlags
	cmd := &cobra.Command{
		Use:   "libvirt NAME --uri URI",
		Short: "Connect a libvirt host (KVM/QEMU, or Xen through libvirt)",
		Long: "Connect a libvirt host. The server connects to libvirtd before it stores\n" +
			"anything: qemu:///system and xen:/// reach the server machine's own libvirtd,\n" +
			"qemu+tcp://HOST/system a remote one, test:///default libvirt's test driver.",
		Example: "  polyvisor provider add libvirt kvm7 --uri qemu+tcp://kvm7.example.com/system\n" +
			"  polyvisor provider add libvirt local --uri qemu:///system",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.url == "" {
				return usagef("--uri: required, e.g. qemu:///system or qemu+tcp://HOST/system")
			}
			if !strings.Contains(f.url, ":/") {
				return usagef("--uri: %q is not a libvirt URI such as qemu:///system", f.url)
			}
			return a.addProvider(cmd, api.ProviderCreate{Name: args[0], Type: api.ProviderLibvirt, URL: f.url}, f)
		},
	}
	cmd.Flags().StringVar(&f.url, "uri", "", "the libvirt `URI`: qemu:///system, qemu+tcp://HOST/system, test:///default, xen:///")
	addProviderWaitFlags(cmd, &f)
	return cmd
}

func addProviderWaitFlags(cmd *cobra.Command, f *providerAddFlags) {
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "return once the provider is added, without waiting for its first sync")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long to wait for the first sync")
}

// addProvider sends the create and, unless --no-wait, follows the
// provider until its first sync ends.
func (a *app) addProvider(cmd *cobra.Command, req api.ProviderCreate, f providerAddFlags) error {
	if f.timeout <= 0 && !f.noWait {
		return usagef("--timeout: must be positive")
	}
	c, _, err := a.client()
	if err != nil {
		return err
	}
	p, err := c.CreateProvider(cmd.Context(), req)
	if err != nil {
		return err
	}
	var waitErr error
	if !f.noWait {
		p, waitErr = waitProvider(cmd.Context(), c, p, f.timeout, cmd.ErrOrStderr())
	}
	if err := a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describeProvider(tw, p) }); err != nil {
		return err
	}
	return waitErr
}

// waitProvider follows a provider that is connecting until it is connected
// or lost, or timeout passes, printing its state on w as it changes.
func waitProvider(ctx context.Context, c *client.Client, p *api.Provider, timeout time.Duration, w io.Writer) (*api.Provider, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	progress := &opProgress{w: w, tty: isTerminal(w)}
	defer progress.done()
	for p.Status.State == api.ProviderConnecting || p.Status.State == "" {
		line := "provider " + p.Name + ": connecting"
		if p.Status.Message != "" {
			line += " - " + p.Status.Message
		}
		line = termSafe(line, true)
		if line != progress.last {
			progress.last = line
			if progress.tty {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
		t := time.NewTimer(providerPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return p, fmt.Errorf("provider %q was added but has not finished its first sync (follow it with 'polyvisor provider show %s'): %w", p.Name, p.Name, ctx.Err())
		case <-t.C:
		}
		next, err := c.GetProvider(ctx, p.Name)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			return p, err
		}
		p = next
	}
	if p.Status.State == api.ProviderDisconnected {
		return p, fmt.Errorf("provider %q was added but its first sync failed; the server keeps retrying: %s", p.Name, orDash(p.Status.Message))
	}
	return p, nil
}

// readPasswordFile reads a password from a file (or standard input for
// "-"), without its final line break. It warns when every user of the
// machine can read the file. The password is never printed.
func readPasswordFile(path string, stdin io.Reader, errOut io.Writer) (string, error) {
	var b []byte
	switch f, tty := stdin.(*os.File); {
	case path == "-" && tty && term.IsTerminal(int(f.Fd())):
		// Typed at a terminal: prompt, and do not echo it.
		fmt.Fprint(errOut, "Password: ")
		var err error
		b, err = term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errOut)
		if err != nil {
			return "", fmt.Errorf("--password-file: read the password from the terminal: %w", err)
		}
	case path == "-":
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, maxSecretFile)); err != nil {
			return "", fmt.Errorf("--password-file: read standard input: %w", err)
		}
	default:
		st, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		if st.IsDir() {
			return "", fmt.Errorf("--password-file: %s is a directory", path)
		}
		if st.Mode().Perm()&0o004 != 0 {
			fmt.Fprintf(errOut, "Warning: the password file %s can be read by every user of this machine (mode %04o); chmod 600 it\n", path, st.Mode().Perm())
		}
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
		if b, err = io.ReadAll(io.LimitReader(f, maxSecretFile)); err != nil {
			return "", fmt.Errorf("--password-file: read %s: %w", path, err)
		}
	}
	pw := string(b)
	pw = strings.TrimSuffix(pw, "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("--password-file: %s holds no password", passwordSource(path))
	}
	if strings.ContainsAny(pw, "\n\x00") {
		return "", fmt.Errorf("--password-file: %s holds more than one line; put the password alone in it", passwordSource(path))
	}
	return pw, nil
}

func passwordSource(path string) string {
	if path == "-" {
		return "standard input"
	}
	return path
}

// readCAFile reads a PEM file of CA certificates.
func readCAFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--ca-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile))
	if err != nil {
		return "", fmt.Errorf("--ca-file: read %s: %w", path, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return "", fmt.Errorf("--ca-file: %s holds no PEM certificate", path)
	}
	return string(b), nil
}

func (a *app) providerListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List providers",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ps, err := listItems(cmd.Context(), opts, c.ListProviders, c.ListAllProviders)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Provider]{Items: nonNil(ps)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "TYPE", "URL", "STATE", "HOSTS", "VMS", "LAST SYNC", "AGE")
				for _, p := range ps {
					inv := p.Status.Inventory
					row(tw, p.Name, p.Spec.Type, p.Spec.URL, providerState(&p), inv.Hosts, inv.VMs, age(p.Status.LastSync), age(p.CreatedAt))
				}
			})
		},
	}
	cmd.Flags().IntVar(&opts.Limit, "limit", 0, "list at most this many (default: all)")
	return cmd
}

// providerState is the provider's state, marked when its inventory is stale.
func providerState(p *api.Provider) string {
	s := orDash(p.Status.State)
	if p.Status.Stale {
		s += ",stale"
	}
	return s
}

// describeProvider writes a provider's details. A provider holds no
// password: the server never returns it.
func describeProvider(tw *tabwriter.Writer, p *api.Provider) {
	s, st := p.Spec, p.Status
	row(tw, "Name:", p.Name)
	row(tw, "Type:", s.Type)
	row(tw, "URL:", s.URL)
	if s.Username != "" {
		row(tw, "Username:", s.Username)
	}
	if s.Type == api.ProviderVSphere || s.CACert != "" || s.Insecure {
		cert := "verified against the server's system roots"
		switch {
		case s.Insecure:
			cert = "not verified (insecure)"
		case s.CACert != "":
			cert = "verified against the given CA"
		}
		row(tw, "Certificate:", cert)
	}
	row(tw, "State:", providerState(p))
	if st.Message != "" {
		row(tw, "Message:", st.Message)
	}
	if st.Stale {
		row(tw, "Stale:", "yes: the inventory shown is the last one seen before the connection was lost")
	}
	row(tw, "Last sync:", when(st.LastSync))
	inv := st.Inventory
	row(tw, "Inventory:", fmt.Sprintf("%d datacenters, %d clusters, %d hosts, %d datastores, %d networks, %d VMs",
		inv.Datacenters, inv.Clusters, inv.Hosts, inv.Datastores, inv.Networks, inv.VMs))
	var can, cannot []string
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"create", st.Capabilities.Create}, {"suspend", st.Capabilities.Suspend}, {"snapshots", st.Capabilities.Snapshots},
		{"reconfigure", st.Capabilities.Reconfigure}, {"console", st.Capabilities.Console}, {"events", st.Capabilities.Events},
	} {
		if c.ok {
			can = append(can, c.name)
		} else {
			cannot = append(cannot, c.name)
		}
	}
	row(tw, "Capabilities:", orDash(strings.Join(can, ", ")))
	if len(cannot) > 0 {
		row(tw, "Lacks:", strings.Join(cannot, ", "))
	}
	row(tw, "Added:", when(p.CreatedAt))
}

func (a *app) providerShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a provider: its state, last sync, inventory counts and capabilities",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.GetProvider(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describeProvider(tw, p) })
		},
	}
}

func (a *app) providerRefreshCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "refresh NAME",
		Short: "Resync a provider's whole inventory now",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.RefreshProvider(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
				inv := p.Status.Inventory
				fmt.Fprintf(tw, "provider %s refreshed: %s, %d hosts, %d VMs\n", p.Name, providerState(p), inv.Hosts, inv.VMs)
			})
		},
	}
}

func (a *app) providerRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm", "delete"},
		Short:   "Disconnect a provider and drop its hosts and VMs from Polyvisor (nothing changes on the hypervisor)",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.DeleteProvider(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "provider %s removed; its VMs and hosts go on running, outside Polyvisor\n", p.Name)
			})
		},
	}
}

func (a *app) providerInventoryCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inventory NAME",
		Short: "List a provider's datacenters, clusters, datastores, networks and templates",
		Long: "List the parts of a provider's estate that are neither hosts nor VMs (those are\n" +
			"in 'polyvisor host list --provider NAME' and 'polyvisor vm list --provider NAME').",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			inv, err := c.ProviderInventory(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), inv, func(tw *tabwriter.Writer) {
				row(tw, "KIND", "NAME", "ID", "DATACENTER", "CAPACITY", "FREE")
				for _, group := range []struct {
					kind  string
					items []api.InventoryItem
				}{
					{"datacenter", inv.Datacenters}, {"cluster", inv.Clusters}, {"datastore", inv.Datastores},
					{"network", inv.Networks}, {"template", inv.Templates},
				} {
					for _, it := range group.items {
						row(tw, group.kind, it.Name, orDash(it.ID), orDash(it.Datacenter), bytesOrDash(it.CapacityBytes), bytesOrDash(it.FreeBytes))
					}
				}
			})
		},
	}
}

// bytesOrDash formats a byte count, or "-" for none.
func bytesOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return formatBytes(n)
}

// providerName is the name of the provider of a host or VM, or "-" for
// Polyvisor's own.
func providerName(ref *api.ProviderRef) string {
	if ref == nil {
		return "-"
	}
	return ref.Name
}

// describeProviderRef writes where a provider's host or VM lives.
func describeProviderRef(tw *tabwriter.Writer, ref *api.ProviderRef) {
	if ref == nil {
		return
	}
	row(tw, "Provider:", fmt.Sprintf("%s (%s)", ref.Name, orDash(ref.Type)))
	row(tw, "Native ID:", orDash(ref.ID))
	if ref.Path != "" {
		row(tw, "Path:", ref.Path)
	}
	if ref.Datacenter != "" {
		row(tw, "Datacenter:", ref.Datacenter)
	}
	if ref.Cluster != "" {
		row(tw, "Cluster:", ref.Cluster)
	}
	if ref.Template != "" {
		row(tw, "Template:", ref.Template)
	}
	if ref.Datastore != "" {
		row(tw, "Datastore:", ref.Datastore)
	}
	if ref.GuestOS != "" {
		row(tw, "Guest OS:", ref.GuestOS)
	}
	if ref.Stale {
		row(tw, "Stale:", "yes: the provider is disconnected; this is the last state seen")
	}
}
