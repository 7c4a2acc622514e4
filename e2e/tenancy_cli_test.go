package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cliEnv runs the polyvisor CLI with its own config file.
type cliEnv struct {
	t   *testing.T
	env []string
}

func (c *cliEnv) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cliEnv) must(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		c.t.Fatalf("polyvisor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestTenancyWalkthrough runs the README's multi-tenant walk-through with
// the CLI against a real server: a superadmin sets up a project with a
// quota and a user; the user logs in over TLS, works in the project within
// its quota and lease, and the superadmin reads the audit trail.
func TestTenancyWalkthrough(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	// Clipped, so that each user's appends get their own copy.
	base := slices.Clip(append(os.Environ(), "HOME="+t.TempDir(), "POLYVISOR_CONFIG=", "POLYVISOR_TOKEN=", "POLYVISOR_PROJECT="))
	root := &cliEnv{t, append(base, "POLYVISOR_SERVER=unix://"+srv.socket, "XDG_CONFIG_HOME="+t.TempDir())}
	root.must("", "project", "create", "web", "--description", "Web shop", "--vcpus", "2", "--memory", "1GiB", "--vms", "2", "--max-lease", "720h")
	root.must("a-long-passphrase\n", "user", "create", "alice", "--password-stdin")
	root.must("", "role", "grant", "alice", "member", "--project", "web")
	if out := root.must("", "role", "list"); !strings.Contains(out, "vm.create") {
		t.Errorf("role list does not show permissions:\n%s", out)
	}

	aliceHome := t.TempDir()
	cfg := filepath.Join(aliceHome, "polyvisor", "config.yaml")
	alice := &cliEnv{t, append(base,
		"POLYVISOR_SERVER=https://127.0.0.1:"+strconv.Itoa(srv.port),
		"POLYVISOR_CA_FILE="+filepath.Join(srv.dataDir, "pki", "ca.crt"),
		"XDG_CONFIG_HOME="+aliceHome)}
	if out, err := alice.run("wrong-password\n", "login", "--user", "alice", "--password-stdin"); err == nil || !strings.Contains(out, "invalid user name or password") {
		t.Errorf("login with a wrong password: %v\n%s", err, out)
	}
	alice.must("a-long-passphrase\n", "login", "--user", "alice", "--password-stdin")
	if b, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(b), "pvs_") {
		t.Fatalf("config after login: %v\n%s", err, b)
	}
	alice.must("", "project", "use", "web")
	if out := alice.must("", "whoami"); !strings.Contains(out, "alice") || !strings.Contains(out, "member") {
		t.Errorf("whoami:\n%s", out)
	}
	// Images of the default project are not alice's: she imports her own.
	for _, im := range []struct{ name, kind, file string }{
		{imgKernel, "kernel", "vmlinuz"}, {imgInitrd, "initrd", "initrd.img"}, {imgDisk, "disk", "disk.qcow2"},
	} {
		alice.must("", "image", "import", filepath.Join(guestDir, im.file), "--name", im.name, "--kind", im.kind)
	}
	create := func(name string) (string, error) {
		return alice.run("", "vm", "create", name, "--vcpus", "1", "--memory", "256M", "--image", imgDisk,
			"--kernel", imgKernel, "--initrd", imgInitrd, "--cmdline", "console=ttyS0 quiet", "--lease", "72h", "--stopped")
	}
	if out, err := create("shop-1"); err != nil {
		t.Fatalf("vm create: %v\n%s", err, out)
	}
	if out := alice.must("", "vm", "show", "shop-1"); !strings.Contains(out, "expires in") {
		t.Errorf("vm show has no lease countdown:\n%s", out)
	}
	alice.must("", "vm", "lease", "shop-1", "168h")
	if out, err := alice.run("", "vm", "lease", "shop-1", "2000h"); err == nil || !strings.Contains(out, "720") {
		t.Errorf("a lease over the project's maximum: %v\n%s", err, out)
	}
	if out, err := create("shop-2"); err != nil {
		t.Fatalf("second vm: %v\n%s", err, out)
	}
	// A third VM passes the quota of 2 VMs.
	if out, err := create("shop-3"); err == nil || !strings.Contains(out, "quota") {
		t.Errorf("third vm over the quota: %v\n%s", err, out)
	}
	if out := alice.must("", "quota", "show"); !strings.Contains(out, "vms") {
		t.Errorf("quota show:\n%s", out)
	}
	// Alice sees nothing of the default project.
	if out, err := alice.run("", "vm", "list", "--project", "default"); err == nil {
		t.Errorf("alice listing the default project: %s", out)
	}
	tok := alice.must("", "token", "create", "ci", "--role", "operator", "--expires", "720h")
	if !strings.Contains(tok, "pva_") || !strings.Contains(tok, "not shown again") {
		t.Errorf("token create:\n%s", tok)
	}
	alice.must("", "logout")

	out := root.must("", "audit", "list", "--since", "1h", "--actor", "alice")
	for _, want := range []string{"auth.login", "vm.create", "vm.lease", "denied", "token.create"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list --actor alice lacks %s:\n%s", want, out)
		}
	}
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	root.must("", "audit", "export", "--since", "1h", "--file", export)
	if b, err := os.ReadFile(export); err != nil || bytes.Count(b, []byte("\n")) < 10 {
		t.Errorf("audit export: %v, %d lines", err, bytes.Count(b, []byte("\n")))
	}
}
