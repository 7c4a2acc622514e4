package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/polyvisor/polyvisor/client"
)

// explainErrors makes the errors of cmd and its subcommands speak of the
// command line: an invalid API field is named by its flag, and a TLS or
// connection failure says what to do about it.
func (a *app) explainErrors(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			return a.explain(c, run(c, args))
		}
	}
	for _, sub := range cmd.Commands() {
		a.explainErrors(sub)
	}
}

// explain rewrites or annotates err, the error of cmd.
func (a *app) explain(cmd *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	err = withFieldSource(cmd, err)
	if commandKey(cmd) == "login" && client.HTTPStatus(err) == http.StatusUnauthorized {
		return err // a wrong password, not missing credentials
	}
	if hint := a.hintFor(err); hint != "" {
		return &hintedError{err: err, hint: hint}
	}
	return err
}

// hintedError is an error with a hint on what to do about it.
type hintedError struct {
	err  error
	hint string
}

func (e *hintedError) Error() string { return e.err.Error() + "\nHint: " + e.hint }
func (e *hintedError) Unwrap() error { return e.err }

// dataDirCA is where a server started with the default data dir keeps
// its CA certificate.
const dataDirCA = "<data-dir>/pki/ca.crt (/var/lib/polyvisor/pki/ca.crt by default)"

// hintFor says what to do about a failure to reach or trust the server,
// or "" when err is no such failure.
func (a *app) hintFor(err error) string {
	cfg, _ := a.config()
	cfgPath, _ := a.resolvedConfigPath()
	if cfgPath == "" {
		cfgPath = "~/.config/polyvisor/config.yaml"
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		if cfg.CAFile != "" {
			return fmt.Sprintf("the server's certificate is not signed by the CA in %s (given by --ca-file, POLYVISOR_CA_FILE or ca-file: in %s). "+
				"Give this server's CA certificate instead: the server keeps it in %s.", cfg.CAFile, cfgPath, dataDirCA)
		}
		return fmt.Sprintf("the server's certificate is signed by its own CA, which this machine does not trust. "+
			"Copy the CA certificate from the server, where it is %s, and give it with --ca-file FILE, "+
			"POLYVISOR_CA_FILE=FILE or ca-file: FILE in %s.", dataDirCA, cfgPath)
	case errors.As(err, &hostErr):
		hint := hostnameHint(&hostErr, cfg.Server)
		if cfg.CAFile == "" {
			hint += fmt.Sprintf(" Unless a CA of this machine signed it, give the server's CA too: --ca-file FILE, where FILE is a copy of the server's %s.", dataDirCA)
		}
		return hint
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the server's certificate has expired or is not valid yet: check the clocks of this machine and of the server."
	}
	if client.HTTPStatus(err) == http.StatusUnauthorized {
		if cfg.Token == "" {
			return fmt.Sprintf("the server wants to know who you are: log in with 'polyvisor login --user NAME', "+
				"or give an API token with --token, POLYVISOR_TOKEN or token: in %s.", cfgPath)
		}
		return "the server refused the token in force (expired, revoked or mistyped): log in again with " +
			"'polyvisor login --user NAME', or give another token."
	}
	var dial *net.OpError
	if !errors.As(err, &dial) || dial.Op != "dial" {
		return ""
	}
	sock := socketOf(cfg.Server)
	switch {
	case sock != "" && errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("only root (or the server's own user) may use the socket %s: run the command as root, "+
			"or reach the TLS API with --server https://HOST:7443, --ca-file and a token ('polyvisor login').", sock)
	case sock != "" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)):
		return fmt.Sprintf("no server listens on the socket %s: is 'polyvisor server' running, with this data dir?", sock)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: is the server running, and is that its --listen port?", cfg.Server)
	}
	return ""
}

// hostnameHint says which names the server's certificate holds.
func hostnameHint(e *x509.HostnameError, server string) string {
	var names []string
	if e.Certificate != nil {
		names = append(names, e.Certificate.DNSNames...)
		for _, ip := range e.Certificate.IPAddresses {
			names = append(names, ip.String())
		}
	}
	port := "7443"
	if u, err := url.Parse(server); err == nil && u.Port() != "" {
		port = u.Port()
	}
	msg := fmt.Sprintf("the server's certificate is not valid for %q", e.Host)
	if len(names) > 0 {
		msg += fmt.Sprintf("; it names %s: use one of them in --server (e.g. https://%s:%s)", strings.Join(names, ", "), names[0], port)
	}
	return msg + fmt.Sprintf(", or restart the server with --advertise-address %s so that its certificate names it too.", e.Host)
}

// socketOf returns the socket path of a unix:// server, or "" when the
// server is reached over TCP. With no server configured the CLI uses the
// default socket.
func socketOf(server string) string {
	switch {
	case server == "":
		return DefaultSocket
	case strings.HasPrefix(server, "/"):
		return server
	case strings.HasPrefix(server, "unix://"):
		return strings.TrimPrefix(server, "unix://")
	}
	return ""
}

// flagError is the FlagErrorFunc of every command: a usage error that, for
// an unknown flag, suggests the closest flag of the command.
func flagError(cmd *cobra.Command, err error) error {
	var missing interface {
		GetSpecifiedName() string
		GetSpecifiedShortnames() string
	}
	if errors.As(err, &missing) {
		typed := missing.GetSpecifiedName()
		if short := missing.GetSpecifiedShortnames(); short != "" {
			// -memory is read as the shorthands m, e, m, o...: the user
			// meant a long flag.
			typed = short
		}
		if s := closestFlag(cmd, typed); s != "" {
			err = fmt.Errorf("%w (did you mean --%s?)", err, s)
		}
	}
	return &usageError{err: err}
}

// closestFlag returns the name of the flag of cmd nearest to typed, or ""
// when none is near: within two edits, or the only one it begins.
func closestFlag(cmd *cobra.Command, typed string) string {
	typed = strings.ToLower(strings.TrimLeft(typed, "-"))
	if typed == "" {
		return ""
	}
	type cand struct {
		name string
		dist int
	}
	var cands, prefixed []cand
	visit := func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		if d := editDistance(typed, f.Name); d <= maxEdits(typed) {
			cands = append(cands, cand{f.Name, d})
		}
		if len(typed) >= 3 && strings.HasPrefix(f.Name, typed) {
			prefixed = append(prefixed, cand{f.Name, 0})
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	if len(cands) == 0 && len(prefixed) == 1 {
		return prefixed[0].name
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].dist != cands[j].dist {
			return cands[i].dist < cands[j].dist
		}
		return cands[i].name < cands[j].name
	})
	if len(cands) == 0 {
		return ""
	}
	return cands[0].name
}

// maxEdits is how many edits away from typed a flag may be to be
// suggested: fewer for short names, whose every name is a few edits away.
func maxEdits(typed string) int {
	switch {
	case len(typed) <= 2:
		return 0
	case len(typed) <= 4:
		return 1
	default:
		return 2
	}
}

// editDistance is the optimal string alignment distance of a and b:
// insertions, deletions, substitutions and swaps of adjacent letters
// ("memroy" is one edit from "memory").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
