package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// The README's first command, for real: it builds and installs Polyvisor,
// starts a server, boots the demo VM and prints a URL that is a URL; and
// when the guest does not boot, it fails loudly with what QEMU said.
func TestQuickstart(t *testing.T) {
	requireQEMU(t)
	peer.Root(t, "the quickstart (it installs packages)")
	run := func(t *testing.T, pathPrefix string, bootTimeout int) (string, string, error) {
		data, bin := t.TempDir(), t.TempDir()
		port := strconv.Itoa(freePort(t))
		cmd := exec.Command("bash", "scripts/quickstart.sh")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(),
			"PATH="+pathPrefix+os.Getenv("PATH"),
			"POLYVISOR_DATA_DIR="+data, "POLYVISOR_LISTEN=127.0.0.1:"+port,
			"POLYVISOR_BIN_DIR="+bin, "POLYVISOR_BOOT_TIMEOUT="+strconv.Itoa(bootTimeout))
		t.Cleanup(func() {
			for _, pid := range pidsWith("--data-dir " + data) {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
			time.Sleep(time.Second)
			for _, pid := range pidsWith("--data-dir " + data) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			killQEMUs(data)
		})
		out, err := cmd.CombinedOutput()
		return string(out), port + " " + bin, err
	}

	t.Run("boots", func(t *testing.T) {
		out, where, err := run(t, "", 60)
		if err != nil {
			t.Fatalf("quickstart failed: %v\n%s", err, out)
		}
		port, bin, _ := strings.Cut(where, " ")
		for _, want := range []string{
			`VM "demo" booted`, marker,
			"The web console is at https://127.0.0.1:" + port + "/ ",
			"polyvisor is installed in " + bin,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("the quickstart's output lacks %q:\n%s", want, out)
			}
		}
		if fi, err := os.Stat(filepath.Join(bin, "polyvisor")); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("polyvisor not installed on PATH: %v", err)
		}
	})

	t.Run("fails loudly", func(t *testing.T) {
		// A QEMU whose guests never run, as on a host whose KVM takes a
		// guest and never runs its vCPU: the probe guest still runs.
		fake := t.TempDir()
		script := "#!/bin/sh\ncase \" $* \" in *\" -bios \"*) exec qemu-system-x86_64.real \"$@\";; esac\nexec qemu-system-x86_64.real \"$@\" -S\n"
		real, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fake, "qemu-system-x86_64"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(fake, "qemu-system-x86_64.real")); err != nil {
			t.Fatal(err)
		}
		out, _, err := run(t, fake+":", 8)
		if err == nil {
			t.Fatalf("the quickstart succeeded with a guest that never ran:\n%s", out)
		}
		for _, want := range []string{"ERROR: VM demo did not boot", "State:       paused", "qemu.log", "polyvisor: starting"} {
			if !strings.Contains(out, want) {
				t.Errorf("the failure does not show %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, `VM "demo" booted`) {
			t.Errorf("it failed and still said the VM booted:\n%s", out)
		}
	})
}

// pidsWith returns the processes whose command line contains needle.
func pidsWith(needle string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(bytes.ReplaceAll(raw, []byte{0}, []byte{' '}), []byte(needle)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
