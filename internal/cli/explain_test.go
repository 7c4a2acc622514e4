package cli

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// findCommand returns the command at a path below the root ("vm create").
func findCommand(t *testing.T, root *cobra.Command, path string) *cobra.Command {
	t.Helper()
	cmd, rest, err := root.Find(strings.Fields(path))
	if err != nil || len(rest) > 0 || commandKey(cmd) != path {
		t.Fatalf("no command %q (found %q, rest %v, %v)", path, commandKey(cmd), rest, err)
	}
	return cmd
}

// Every exception to the naming convention names a command, and a flag or
// an argument of that command, that exist.
func TestFieldSourcesNameRealFlagsAndArguments(t *testing.T) {
	root := NewRootCommand()
	for path, sources := range fieldSources {
		cmd := findCommand(t, root, path)
		for _, fs := range sources {
			if name, ok := strings.CutPrefix(fs.source, "--"); ok {
				if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil {
					t.Errorf("%s: field %s maps to %s, which the command does not have", path, fs.pattern, fs.source)
				}
			} else if !hasArg(cmd, fs.source) {
				t.Errorf("%s: field %s maps to argument %s, not in %q", path, fs.pattern, fs.source, cmd.Use)
			}
		}
	}
}

func TestConventionalFlag(t *testing.T) {
	for field, want := range map[string]string{
		"memoryMiB": "memory", "vcpus": "vcpus", "stopTimeoutSeconds": "stop-timeout", "quota.diskMiB": "disk",
		"cloudInit.userData": "user-data", "boot.kernel": "kernel", "disks[0].image": "image", "ttlSeconds": "ttl",
		"Idempotency-Key": "idempotency-key", "keepDisks": "keep-disks", "maxLeaseSeconds": "max-lease",
		"Seconds": "seconds", "nics[2]": "nics",
	} {
		if got := conventionalFlag(field); got != want {
			t.Errorf("conventionalFlag(%q) = %q, want %q", field, got, want)
		}
	}
}

func TestPositionalArgs(t *testing.T) {
	for use, want := range map[string]string{
		"create NAME": "NAME",
		"create NAME [--user NAME] [--project P]": "NAME",
		"grant USER ROLE [--project P]":           "USER ROLE",
		"import FILE|URL":                         "FILE|URL",
		"show [NAME]":                             "",
		"vsphere NAME --url URL --username USER --password-file FILE [--ca-file FILE | --insecure]": "NAME",
		"lease NAME DURATION": "NAME DURATION",
	} {
		if got := strings.Join(positionalArgs(&cobra.Command{Use: use}), " "); got != want {
			t.Errorf("positionalArgs(%q) = %q, want %q", use, got, want)
		}
	}
}

// The flag a field maps to depends on the flags given: a VM's first disk
// is --image's, or the first --blank-disk when there is no --image.
func TestSourceOfFieldFollowsTheFlagsGiven(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		field string
		want  string
	}{
		{[]string{"--memory", "8M"}, "memoryMiB", "--memory"},
		{nil, "memoryMiB", "--memory"}, // the default value is still the flag's
		{[]string{"--image", "d", "--disk-size", "1G"}, "disks[0].sizeMiB", "--disk-size"},
		{[]string{"--blank-disk", "1G"}, "disks[0].sizeMiB", "--blank-disk"},
		{[]string{"--image", "d", "--blank-disk", "1G"}, "disks[1].sizeMiB", "--blank-disk"},
		{[]string{"--image", "d"}, "disks[0].image", "--image"},
		{nil, "disks", "--image or --blank-disk"},
		{[]string{"--blank-disk", "1G"}, "disks", "--blank-disk"},
		{[]string{"--nic", "br0"}, "nics[0].network", "--nic"},
		{[]string{"--network", "n1", "--nic", "br0"}, "nics[0].network", "--network"},
		{[]string{"--network", "n1", "--nic", "br0"}, "nics[1].network", "--nic"},
		{[]string{"--label", "a=b"}, "labels.a", "--label"},
		{nil, "cloudInit.userData", "--user-data"},
		{nil, "stopTimeoutSeconds", "--stop-timeout"},
		{nil, "name", "NAME"},
		{nil, "project", "--project"},
		{nil, "disks[0].name", ""},
		{nil, "body", ""},
	} {
		cmd := findCommand(t, NewRootCommand(), "vm create")
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := sourceOfField(cmd, tc.field); got != tc.want {
			t.Errorf("vm create %v: field %s is %q, want %q", tc.args, tc.field, got, tc.want)
		}
	}
	if got := sourceOfField(findCommand(t, NewRootCommand(), "vm lease"), "leaseSeconds"); got != "DURATION" {
		t.Errorf("vm lease: leaseSeconds is %q, want DURATION", got)
	}
	if got := sourceOfField(findCommand(t, NewRootCommand(), "image import"), "name"); got != "--name" {
		t.Errorf("image import: name is %q, want --name", got)
	}
}

// Against a real server, a refused field is named by the flag or argument
// the user typed, never by the API's name for it.
func TestServerFieldErrorsNameTheFlag(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	for _, tc := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"vm", "create", "web-1", "--memory", "8M"}, "--memory: must be at least 16 MiB", "memoryMiB"},
		{[]string{"vm", "create", "web-1", "--image", "nope"}, `--image: image "nope" not found`, "disks[0]"},
		{[]string{"vm", "create", "web-1", "--blank-disk", "100000T"}, "--blank-disk: must be from 1 to", "sizeMiB"},
		{[]string{"vm", "create", "web-1", "--blank-disk", "1G", "--stop-timeout", "2h"}, "--stop-timeout: must be from 1 to 3600", "stopTimeoutSeconds"},
		{[]string{"vm", "create", "Web_1"}, `NAME: "Web_1" is not a valid name`, `"Web_1": name:`},
		{[]string{"vm", "create", "web-1"}, "--image or --blank-disk: a VM that boots through firmware needs a disk", "disks:"},
		{[]string{"host", "join-token", "--ttl", "30s"}, "--ttl: must be from 60", "ttlSeconds"},
		{[]string{"project", "create", "p1", "--max-lease", "200000h"}, "--max-lease: must be from 0", "maxLeaseSeconds"},
		{[]string{"project", "create", "p1", "--label", "Bad Key=x"}, "--label:", "labels."},
		{[]string{"vm", "list", "--selector", "a b"}, `--selector: selector key "a b"`, ": selector:"},
	} {
		_, errOut, code := cli(t, "", rs.asRoot(tc.args...)...)
		if code != ExitFailure && code != ExitUsage || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, tc.not) {
			t.Errorf("polyvisor %s: exit %d\n%s\nwant %q, not %q", strings.Join(tc.args, " "), code, errOut, tc.want, tc.not)
		}
	}
}

func TestUnknownFlagSuggestsTheClosest(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "x", "--memroy", "1G"}, "unknown flag: --memroy (did you mean --memory?)"},
		{[]string{"vm", "create", "x", "--cpus", "2"}, "(did you mean --vcpus?)"},
		{[]string{"vm", "create", "x", "-memory", "1G"}, "(did you mean --memory?)"},
		{[]string{"vm", "create", "x", "--user-dat", "f"}, "(did you mean --user-data?)"},
		{[]string{"vm", "list", "--selecter", "a=b"}, "(did you mean --selector?)"},
		{[]string{"vm", "list", "--servr", "https://h:1"}, "(did you mean --server?)"},
		{[]string{"vm", "stop", "x", "--timout", "3s"}, "(did you mean --timeout?)"},
		{[]string{"op", "list", "--lim", "3"}, "(did you mean --limit?)"},
		{[]string{"vm", "lst"}, `(did you mean "list"?)`},
	} {
		_, errOut, code := cli(t, "", tc.args...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("polyvisor %s: exit %d\n%s\nwant %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	// Nothing near: no guess.
	_, errOut, code := cli(t, "", "vm", "create", "x", "--zzzzzzzz")
	if code != ExitUsage || !strings.Contains(errOut, "unknown flag: --zzzzzzzz") || strings.Contains(errOut, "did you mean") {
		t.Errorf("a flag like no other: exit %d\n%s", code, errOut)
	}
}

// A server whose CA the CLI does not trust, or which it names by a name its
// certificate lacks, gets a hint saying which CA file to pass and where the
// server keeps it.
func TestTLSErrorsSayWhichCAToPass(t *testing.T) {
	dir := isolate(t)
	rs := startRealServer(t, server.Config{})

	_, errOut, code := cli(t, "", "--server", rs.url, "vm", "list")
	for _, want := range []string{"x509: certificate signed by unknown authority", "Hint:", "--ca-file FILE", "POLYVISOR_CA_FILE",
		"ca-file: FILE in " + filepath.Join(dir, "polyvisor", "config.yaml"), "<data-dir>/pki/ca.crt", "/var/lib/polyvisor/pki/ca.crt"} {
		if code != ExitFailure || !strings.Contains(errOut, want) {
			t.Errorf("no CA: exit %d, want %q in\n%s", code, want, errOut)
		}
	}

	// A CA file that is not this server's.
	other := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(other, testCAPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = cli(t, "", "--server", rs.url, "--ca-file", other, "vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "not signed by the CA in "+other) || !strings.Contains(errOut, "pki/ca.crt") {
		t.Errorf("another CA: exit %d\n%s", code, errOut)
	}

	// A name the certificate does not hold: it holds 127.0.0.1, not
	// 127.0.0.2.
	other2 := "https://" + tcpProxy(t, "127.0.0.2:0", "127.0.0.1:"+strconv.Itoa(rs.port))
	for _, ca := range []string{rs.caFile, ""} {
		_, errOut, code = cli(t, "", "--server", other2, "--ca-file", ca, "vm", "list")
		for _, want := range []string{`not valid for "127.0.0.2"`, "127.0.0.1", "localhost", "--advertise-address 127.0.0.2"} {
			if code != ExitFailure || !strings.Contains(errOut, want) {
				t.Errorf("wrong name (CA %q): exit %d, want %q in\n%s", ca, code, want, errOut)
			}
		}
		// Without a CA the next hurdle is the CA: say so now.
		if got := strings.Contains(errOut, "--ca-file"); got != (ca == "") {
			t.Errorf("wrong name (CA %q): --ca-file named: %v\n%s", ca, got, errOut)
		}
	}

	// The address a server listens on is in its certificate, and a bare
	// HOST:PORT is https.
	rs3 := startRealServer(t, server.Config{Listen: "127.0.0.2:0"})
	out, errOut, code := cli(t, "", "--server", "127.0.0.2:"+strconv.Itoa(rs3.port), "--ca-file", rs3.caFile, "--token", rs3.srv.AdminToken(), "vm", "list")
	if code != ExitOK || !strings.HasPrefix(out, "NAME") {
		t.Errorf("host:port with the CA: exit %d\n%s%s", code, out, errOut)
	}
}

// A socket nobody listens on, and a port nothing answers, say so.
func TestConnectionErrorsSayWhatIsWrong(t *testing.T) {
	isolate(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, errOut, code := cli(t, "", "--server", "unix://"+sock, "vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "no server listens on the socket "+sock) {
		t.Errorf("no socket: exit %d\n%s", code, errOut)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, errOut, code = cli(t, "", "--server", "https://"+addr, "vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "nothing listens at https://"+addr) {
		t.Errorf("closed port: exit %d\n%s", code, errOut)
	}
	// A missing user-data file is not a missing socket.
	_, errOut, _ = cli(t, "", "--server", "unix://"+sock, "vm", "create", "x", "--user-data", filepath.Join(t.TempDir(), "nope.yaml"))
	if strings.Contains(errOut, "Hint:") {
		t.Errorf("a missing file got a hint about the server:\n%s", errOut)
	}
}

// A server that wants credentials says how to give them; a wrong password
// at login gets no such hint.
func TestUnauthorizedSaysHowToSignIn(t *testing.T) {
	dir := isolate(t)
	rs := startRealServer(t, server.Config{})
	tls := []string{"--server", rs.url, "--ca-file", rs.caFile}
	_, errOut, code := cli(t, "", append(tls, "vm", "list")...)
	for _, want := range []string{"authentication required", "Hint:", "polyvisor login --user NAME", "--token", "POLYVISOR_TOKEN",
		"token: in " + filepath.Join(dir, "polyvisor", "config.yaml")} {
		if code != ExitFailure || !strings.Contains(errOut, want) {
			t.Errorf("no token: exit %d, want %q in\n%s", code, want, errOut)
		}
	}
	_, errOut, code = cli(t, "", append(tls, "--token", "pva_000000000000_00", "vm", "list")...)
	if code != ExitFailure || !strings.Contains(errOut, "refused the token in force") {
		t.Errorf("a bad token: exit %d\n%s", code, errOut)
	}
	_, errOut, code = cli(t, "wrong\n", append(tls, "login", "--user", "admin", "--password-stdin")...)
	if code != ExitFailure || strings.Contains(errOut, "Hint:") {
		t.Errorf("a wrong password: exit %d\n%s", code, errOut)
	}
}

// The daemons' errors are their own: no hint about the CLI's flags.
func TestDaemonErrorsGetNoCLIHints(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	daemonCmd := &cobra.Command{Use: "agent", RunE: func(*cobra.Command, []string) error {
		c, err := client.New(client.Config{URL: rs.url, CAFile: rs.caFile})
		if err != nil {
			return err
		}
		_, err = c.WhoAmI(t.Context())
		return err
	}}
	var out, errOut strings.Builder
	code := run(t.Context(), NewRootCommand(daemonCmd), []string{"agent"}, strings.NewReader(""), &out, &errOut)
	if code != ExitFailure || !strings.Contains(errOut.String(), "authentication required") || strings.Contains(errOut.String(), "Hint:") {
		t.Errorf("a daemon's error: exit %d\n%s", code, errOut.String())
	}
}
