package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/version"
)

// versionReport is what `polyvisor version` prints with -o json or yaml.
type versionReport struct {
	Client api.Version `json:"client"`
	// Server is the server's build; nil when it was not asked (--client)
	// or could not be reached, and then ServerError says why.
	Server      *api.Version `json:"server,omitempty"`
	ServerURL   string       `json:"serverURL,omitempty"`
	ServerError string       `json:"serverError,omitempty"`
}

// serverVersionTimeout bounds the wait for the server's answer.
const serverVersionTimeout = 5 * time.Second

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this polyvisor binary and of the server",
		Long: "Print the version, source commit and Go version of this binary, and those\n" +
			"of the server when it is configured and answers (any signed-in user may ask).\n" +
			"An unreachable server is reported, not an error: the exit code is 0.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := versionReport{Client: version.Get()}
			var hint string
			if !clientOnly {
				rep.Server, rep.ServerURL, rep.ServerError, hint = a.serverVersion(cmd.Context())
			}
			return a.print(cmd.OutOrStdout(), rep, func(tw *tabwriter.Writer) {
				row(tw, "Client:", describeVersion(rep.Client))
				switch {
				case clientOnly:
				case rep.Server != nil:
					row(tw, "Server:", describeVersion(*rep.Server)+" at "+rep.ServerURL)
				default:
					row(tw, "Server:", "not known: "+rep.ServerError)
					if hint != "" {
						row(tw, "", "Hint: "+hint)
					}
				}
			})
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only this binary's version; do not ask the server")
	return cmd
}

// serverVersion asks the configured server for its build, and returns it
// with the server's URL, or why it could not and a hint.
func (a *app) serverVersion(ctx context.Context) (v *api.Version, url, why, hint string) {
	c, cfg, err := a.client()
	if err != nil {
		return nil, cfg.Server, err.Error(), ""
	}
	ctx, cancel := context.WithTimeout(ctx, serverVersionTimeout)
	defer cancel()
	v, err = c.ServerVersion(ctx)
	if err != nil {
		return nil, c.URL(), err.Error(), a.hintFor(err)
	}
	return v, c.URL(), "", ""
}

// describeVersion writes a build as "0.1.0 (commit 1a2b3c4d5e6f, go1.26.0,
// linux/amd64)".
func describeVersion(v api.Version) string {
	parts := []string{"commit unknown"}
	if v.Commit != "" {
		rev, dirty := strings.CutSuffix(v.Commit, "-dirty")
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "-dirty"
		}
		parts[0] = "commit " + rev
	}
	parts = append(parts, v.GoVersion, v.Platform)
	return fmt.Sprintf("%s (%s)", v.Version, strings.Join(parts, ", "))
}
