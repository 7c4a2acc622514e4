package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
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

// fails runs the CLI and checks that it failed for the reason want names:
// exit 1 (a refused or failed command, not a usage error) and want in its
// output. Any other error is not the refusal the test is about.
func (c *cliEnv) fails(want string, stdin string, args ...string) {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, want) {
		c.t.Errorf("polyvisor %s: %v, want exit 1 saying %q:\n%s", strings.Join(args, " "), err, want, out)
	}
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
// the CLI against a real server, as written: after the quickstart's
// images are imported into the default project, a superadmin sets up a
// project with a quota and a user and makes those images public; the
// user logs in over TLS, boots a VM from the public images in her
// project within its quota and lease, and the superadmin reads the audit
// trail.
func TestTenancyWalkthrough(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	// Clipped, so that each user's appends get their own copy.
	base := slices.Clip(append(os.Environ(), "HOME="+t.TempDir(), "POLYVISOR_CONFIG=", "POLYVISOR_TOKEN=", "POLYVISOR_PROJECT="))
	root := &cliEnv{t, append(base, "POLYVISOR_SERVER=unix://"+srv.socket, "XDG_CONFIG_HOME="+t.TempDir())}
	// What scripts/quickstart.sh imports.
	for _, im := range []struct{ name, kind, file string }{
		{"tiny-kernel", "kernel", "vmlinuz"}, {"tiny-initrd", "initrd", "initrd.img"}, {"tiny-disk", "disk", "disk.qcow2"},
	} {
		root.must("", "image", "import", filepath.Join(guestDir, im.file), "--name", im.name, "--kind", im.kind)
	}

	// The superadmin's part of the README.
	root.must("", "project", "create", "web", "--description", "Web shop", "--vcpus", "16", "--memory", "32GiB", "--vms", "20",
		"--image-storage", "100GiB", "--max-lease", "720h")
	root.must("a-long-passphrase\n", "user", "create", "alice", "--password-stdin")
	root.must("", "role", "grant", "alice", "member", "--project", "web")
	if out := root.must("", "role", "list"); !strings.Contains(out, "vm.create") {
		t.Errorf("role list does not show permissions:\n%s", out)
	}
	for _, img := range []string{"tiny-disk", "tiny-kernel", "tiny-initrd"} {
		if out := root.must("", "image", "set", img, "--public"); !strings.Contains(out, "now public") {
			t.Errorf("image set %s --public:\n%s", img, out)
		}
	}

	aliceHome := t.TempDir()
	cfg := filepath.Join(aliceHome, "polyvisor", "config.yaml")
	alice := &cliEnv{t, append(base,
		"POLYVISOR_SERVER=https://127.0.0.1:"+strconv.Itoa(srv.port),
		"POLYVISOR_CA_FILE="+filepath.Join(srv.dataDir, "pki", "ca.crt"),
		"XDG_CONFIG_HOME="+aliceHome)}
	alice.fails("invalid user name or password", "wrong-password\n", "login", "--user", "alice", "--password-stdin")
	alice.must("a-long-passphrase\n", "login", "--user", "alice", "--password-stdin")
	if b, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(b), "pvs_") {
		t.Fatalf("config after login: %v\n%s", err, b)
	}
	alice.must("", "project", "use", "web")
	if out := alice.must("", "whoami"); !strings.Contains(out, "alice") || !strings.Contains(out, "member") {
		t.Errorf("whoami:\n%s", out)
	}
	// The public images show in her project's list, marked.
	if out := alice.must("", "image", "list"); !strings.Contains(out, "default/tiny-disk (public)") {
		t.Errorf("image list in web:\n%s", out)
	}
	// Only a superadmin shares images.
	alice.fails("superadmin only", "", "image", "set", "tiny-disk", "--private", "--project", "default")

	// The README's VM, booted from the public images of the default
	// project.
	alice.must("", "vm", "create", "shop-1", "--vcpus", "2", "--memory", "1G", "--image", "tiny-disk",
		"--kernel", "tiny-kernel", "--initrd", "tiny-initrd", "--cmdline", guest.Cmdline, "--lease", "72h")
	web := srv.c.WithProject("web")
	waitConsole(t, web, "shop-1", marker, 1)
	vm, err := web.GetVM(context.Background(), "shop-1")
	if err != nil || vm.Spec.Disks[0].Image != "default/tiny-disk" || vm.Spec.Boot.Kernel != "default/tiny-kernel" {
		t.Fatalf("shop-1: %+v %v", vm, err)
	}
	if out := alice.must("", "vm", "show", "shop-1"); !strings.Contains(out, "expires in") {
		t.Errorf("vm show has no lease countdown:\n%s", out)
	}
	alice.must("", "vm", "lease", "shop-1", "168h")
	alice.fails("720", "", "vm", "lease", "shop-1", "2000h")
	if out := alice.must("", "quota", "show"); !strings.Contains(out, "vms") || !strings.Contains(out, "image-storage") {
		t.Errorf("quota show:\n%s", out)
	}
	// A create that would pass the quota is refused, naming the limit.
	root.must("", "quota", "set", "--project", "web", "--vms", "1")
	alice.fails("quota", "", "vm", "create", "shop-2", "--vcpus", "1", "--memory", "256M", "--image", "tiny-disk",
		"--kernel", "tiny-kernel", "--initrd", "tiny-initrd", "--stopped")
	// Alice sees nothing of the default project: to her it does not exist.
	alice.fails(`project "default" not found`, "", "vm", "list", "--project", "default")
	tok := alice.must("a-long-passphrase\n", "token", "create", "ci", "--role", "operator", "--expires", "720h", "--password-stdin")
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
	if out := root.must("", "audit", "list", "--since", "1h", "--action", "image.update"); strings.Count(out, "image.update") < 3 {
		t.Errorf("audit list --action image.update:\n%s", out)
	}
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	root.must("", "audit", "export", "--since", "1h", "--file", export)
	if b, err := os.ReadFile(export); err != nil || bytes.Count(b, []byte("\n")) < 10 {
		t.Errorf("audit export: %v, %d lines", err, bytes.Count(b, []byte("\n")))
	}
}
