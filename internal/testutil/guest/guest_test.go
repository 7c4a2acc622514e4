package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuildIsCachedAndComplete(t *testing.T) {
	p := Build(t)
	for _, f := range []string{p.Kernel, p.Initrd, p.Disk, p.Boot} {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if q := Build(t); q != p {
		t.Errorf("second Build = %+v, want %+v", q, p)
	}
	if os.Getenv("POLYVISOR_GUEST_DIR") == "" {
		script, err := findScript()
		if err != nil {
			t.Fatal(err)
		}
		if !builtBy(p.Dir, script) {
			t.Errorf("%s is not stamped as built by %s", p.Dir, script)
		}
	}
}

// TestBootDiskBootsThroughSeaBIOS boots boot.qcow2 with no -kernel, as a
// firmware-booted VM does, from a virtio-blk disk, from a SATA disk on
// q35's AHCI controller and from an IDE disk on the pc machine, and waits
// for the marker on the serial console.
func TestBootDiskBootsThroughSeaBIOS(t *testing.T) {
	RequireQEMU(t)
	p := Build(t)

	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", "qcow2", p.Boot).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", p.Boot, err)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
		BackingFile string `json:"backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize < 64<<20 || info.BackingFile != "" {
		t.Fatalf("boot disk: %+v, want a standalone qcow2 of at least 64 MiB", info)
	}

	// disk attaches the overlay as the boot disk on a given bus.
	disk := func(overlay, dev string) []string {
		return []string{
			"-blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename=" + strings.ReplaceAll(overlay, ",", ",,"),
			"-device", dev + ",drive=d0,bootindex=1",
		}
	}
	for _, tc := range []struct {
		name, machine, dev string
	}{
		{"virtio-blk", "q35", "virtio-blk-pci"},
		{"sata", "q35", "ide-hd,bus=ide.0"},  // q35's ICH9 AHCI
		{"pc-ide", "pc", "ide-hd,bus=ide.0"}, // PIIX IDE
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			overlay := filepath.Join(dir, "boot.qcow2")
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2",
				"-b", p.Boot, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
				t.Fatalf("making overlay: %v: %s", err, out)
			}
			took := BootToMarker(t, append([]string{"-machine", tc.machine, "-m", "256"}, disk(overlay, tc.dev)...)...)
			t.Logf("marker %v after starting qemu", took.Round(10*time.Millisecond))
		})
	}
}

// TestRunCmdline boots the guest with a script on its kernel command line:
// the script's output and its exit status reach the serial console, and
// the guest's usual markers are still there.
func TestRunCmdline(t *testing.T) {
	RequireQEMU(t)
	p := Build(t)
	RequireRun(t, p)
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var qlog bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "file:"+serial,
		"-kernel", p.Kernel, "-initrd", p.Initrd,
		"-append", RunCmdline("echo \"hello from $(uname -s)\"\nexit 3\n"))
	cmd.Stdout, cmd.Stderr = &qlog, &qlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	for {
		b, _ := os.ReadFile(serial)
		if bytes.Contains(b, []byte(RunExitPrefix)) {
			s := string(b)
			for _, want := range []string{ReadyMarker, "hello from Linux\r\n", RunExitPrefix + "3\r\n", TickPrefix} {
				if !strings.Contains(s, want) {
					t.Errorf("console lacks %q:\n%s", want, s)
				}
			}
			if strings.Index(s, ReadyMarker) > strings.Index(s, "hello from") {
				t.Errorf("the script ran before the guest was ready:\n%s", s)
			}
			return
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("qemu exited before the script's exit status: %v\n%s\nserial:\n%s", err, qlog.String(), b)
		case <-ctx.Done():
			t.Fatalf("no %s on the serial console within 90s; serial:\n%s", RunExitPrefix, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestExecOnConsole types two scripts on the running guest's serial
// console: each one's output and exit status come back under its tag.
func TestExecOnConsole(t *testing.T) {
	RequireQEMU(t)
	p := Build(t)
	RequireExec(t, p)
	dir := t.TempDir()
	serial, sock := filepath.Join(dir, "serial.log"), filepath.Join(dir, "serial.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var qlog bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-chardev", "socket,id=s0,path="+sock+",server=on,wait=off,logfile="+serial,
		"-serial", "chardev:s0", "-kernel", p.Kernel, "-initrd", p.Initrd, "-append", Cmdline)
	cmd.Stdout, cmd.Stderr = &qlog, &qlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	wait := func(what string) string {
		t.Helper()
		for {
			b, _ := os.ReadFile(serial)
			if bytes.Contains(b, []byte(what)) {
				return string(b)
			}
			select {
			case err := <-done:
				done <- err
				t.Fatalf("qemu exited: %v\n%s", err, qlog.String())
			case <-ctx.Done():
				t.Fatalf("no %q on the serial console; serial:\n%s", what, b)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	wait(CommandsLine)
	var con net.Conn
	for con == nil {
		c, err := net.Dial("unix", sock)
		if err == nil {
			con = c
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	defer con.Close()
	go io.Copy(io.Discard, con)
	fmt.Fprint(con, ExecLine("t1", "echo one; echo two\nexit 4\n"))
	fmt.Fprint(con, ExecLine("t2", "echo \"$((6*7))\"\n"))
	s := wait(ExecExitPrefix("t1"))
	s = wait(ExecExitPrefix("t2"))
	for _, want := range []string{ExecOutputPrefix("t1") + "one", ExecOutputPrefix("t1") + "two", ExecExitPrefix("t1") + "4", ExecOutputPrefix("t2") + "42", ExecExitPrefix("t2") + "0"} {
		if !strings.Contains(s, want) {
			t.Errorf("console lacks %q:\n%s", want, s)
		}
	}
}
