// Package e2e runs Polyvisor end to end: the real binary as server and
// agents, real embedded etcd, real QEMU (TCG) booting a tiny Debian-kernel
// guest, talking through the public client.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor/qemu"
	"github.com/polyvisor/polyvisor/internal/testutil/devns"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

var (
	binary   string // the polyvisor binary built for this run
	guestDir string // vmlinuz, initrd.img and disk.qcow2 of the test guest
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	tmp, err := os.MkdirTemp("", "polyvisor-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binary = filepath.Join(tmp, "polyvisor")
	build := exec.Command("go", "build", "-o", binary, "./cmd/polyvisor")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building polyvisor:", err)
		return 1
	}
	guestDir = os.Getenv("POLYVISOR_GUEST_DIR")
	if guestDir == "" {
		guestDir = filepath.Join(repoRoot, ".cache", "guest")
	}
	if _, err := os.Stat(filepath.Join(guestDir, "initrd.img")); err != nil {
		cmd := exec.Command(filepath.Join(repoRoot, "scripts", "build-guest.sh"), guestDir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the test guest:", err)
			return 1
		}
	}
	return m.Run()
}

func requireQEMU(t *testing.T) {
	t.Helper()
	peer.Binary(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
}

// serverProc is a `polyvisor server` process.
type serverProc struct {
	t       *testing.T
	dataDir string
	socket  string
	port    int
	args    []string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	c       *client.Client // over the unix socket, as local root
	rec     *auditRecorder // the mutations c made
	done    chan struct{}
	// kvm, when set, runs the server with a private /dev holding that kind
	// of /dev/kvm (none, or one that opens but runs no guest).
	kvm devns.KVM
	// noAgent: the server runs no built-in agent (--no-agent); it is ready
	// once it answers.
	noAgent bool
}

func freePort(t *testing.T) int {
	t.Helper()
	// Below the kernel's ephemeral range (32768 and up here), which a
	// busy machine's outgoing connections take and free all the time,
	// and free on every address: some servers listen on 0.0.0.0.
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", ":"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

// startServer runs a server with its built-in agent on dataDir.
func startServer(t *testing.T, dataDir string, args ...string) *serverProc {
	t.Helper()
	port := freePort(t)
	return startServerOn(t, dataDir, port, append([]string{"--listen", "127.0.0.1:" + strconv.Itoa(port)}, args...)...)
}

// startServerOn runs a server whose TLS port is port; args must say where
// it listens.
func startServerOn(t *testing.T, dataDir string, port int, args ...string) *serverProc {
	t.Helper()
	return startServerWith(t, &serverProc{t: t, dataDir: dataDir, port: port, args: args})
}

// startServerWith runs the server s describes, with its built-in agent.
func startServerWith(t *testing.T, s *serverProc) *serverProc {
	t.Helper()
	dataDir := s.dataDir
	s.socket = filepath.Join(dataDir, "polyvisor.sock")
	s.start()
	t.Cleanup(func() {
		s.stop()
		killQEMUs(dataDir)
	})
	return s
}

func (s *serverProc) start() {
	t := s.t
	t.Helper()
	args := append([]string{"server", "--data-dir", s.dataDir, "--host-name", "local", "--log-level", "debug"}, s.args...)
	if s.kvm != "" {
		s.cmd = devns.Command(t, s.kvm, binary, args...)
	} else {
		s.cmd = exec.Command(binary, args...)
	}
	s.log = &bytes.Buffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting server: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	if s.rec == nil {
		s.rec = &auditRecorder{}
	}
	c, err := client.New(client.Config{URL: "unix://" + s.socket, WrapTransport: s.rec.wrap})
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	eventually(t, 30*time.Second, "the server answers and its host is ready", func() error {
		select {
		case <-s.done:
			t.Fatalf("server exited early:\n%s", s.log)
		default:
		}
		if s.noAgent {
			_, err := c.ListHosts(context.Background(), api.ListOptions{})
			return err
		}
		h, err := c.GetHost(context.Background(), "local")
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady {
			return fmt.Errorf("host is %s", h.Status.State)
		}
		return nil
	})
}

// stop ends the server gracefully, once its audit log was checked.
func (s *serverProc) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.checkAudit(s.t)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.t.Failed() {
		s.t.Logf("server log:\n%s", s.log)
	}
	s.cmd = nil
}

// kill9 kills the server (and so its built-in agent) with SIGKILL.
func (s *serverProc) kill9() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// adminClient returns a TLS client with the admin token.
func (s *serverProc) adminClient(t *testing.T) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{
		URL:    "https://127.0.0.1:" + strconv.Itoa(s.port),
		Token:  strings.TrimSpace(string(tok)),
		CAFile: filepath.Join(s.dataDir, "pki", "ca.crt"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// vmDir is where the built-in agent keeps a VM's files.
func (s *serverProc) vmDir(uid string) string {
	return filepath.Join(s.dataDir, "agent", "vms", uid)
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, d, err)
}

// qemuPIDs returns the QEMU processes whose command line contains needle.
func qemuPIDs(needle string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("qemu-system")) || !bytes.Contains(cmdline, []byte(needle)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// killQEMUs kills what a test left behind under dir, and removes the
// cgroups the QEMU driver made for those VMs (it removes them itself only
// for VMs it stops or deletes).
func killQEMUs(dir string) {
	pids := qemuPIDs(dir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "handle.json" {
			if h, err := qemu.LoadHandle(filepath.Dir(path)); err == nil {
				_ = qemu.RemoveCgroups(h)
			}
		}
		return nil
	})
}

func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// The guest images, as imported by importGuest.
const (
	imgKernel = "guest-kernel"
	imgInitrd = "guest-initrd"
	imgDisk   = "guest-disk"
	marker    = "POLYVISOR-GUEST-READY"
)

func importGuest(t *testing.T, c *client.Client) {
	t.Helper()
	ctx := context.Background()
	for _, im := range []struct{ name, kind, file string }{
		{imgKernel, api.ImageKernel, "vmlinuz"},
		{imgInitrd, api.ImageInitrd, "initrd.img"},
		{imgDisk, api.ImageDisk, "disk.qcow2"},
	} {
		f, err := os.Open(filepath.Join(guestDir, im.file))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		op, err := c.UploadImage(ctx, im.name, im.kind, f, fi.Size(), nil)
		f.Close()
		if err != nil {
			t.Fatalf("uploading %s: %v", im.name, err)
		}
		waitOK(t, c, op)
	}
}

// guestVM is a create request for the test guest.
func guestVM(name string) api.VMCreate {
	return api.VMCreate{
		Name: name, VCPUs: 1, MemoryMiB: 256,
		Disks: []api.Disk{{Name: "root", Image: imgDisk}},
		Boot:  api.Boot{Kernel: imgKernel, Initrd: imgInitrd, Cmdline: guest.Cmdline},
	}
}

// waitOK waits for an operation and fails the test unless it succeeded.
func waitOK(t *testing.T, c *client.Client, op *api.Operation) *api.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		t.Fatalf("waiting for %s %s: %v", op.Kind, op.ID, err)
	}
	if done.Status != api.OpSucceeded {
		t.Fatalf("%s of %s %s: %s: %+v", done.Kind, done.Target.Kind, done.Target.Name, done.Status, done.Error)
	}
	return done
}

// waitConsole waits until the VM's recorded console holds text n times.
func waitConsole(t *testing.T, c *client.Client, vm, text string, n int) string {
	t.Helper()
	var log string
	eventually(t, 90*time.Second, fmt.Sprintf("console of %s shows %q %d times", vm, text, n), func() error {
		b, err := c.ConsoleLog(context.Background(), vm, 1<<20)
		if err != nil {
			return err
		}
		log = string(b)
		if got := strings.Count(log, text); got < n {
			return fmt.Errorf("seen %d times", got)
		}
		return nil
	})
	return log
}
