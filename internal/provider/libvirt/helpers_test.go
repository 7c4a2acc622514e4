package libvirt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// Tests that need a daemon use the real libvirtd on /var/run/libvirt. When
// its socket does not answer and the test runs as root, the tests start one with
// scripts/libvirtd.sh (with a loopback TCP listener, to test qemu+tcp://)
// and stop it when they end.

var (
	daemonOnce    sync.Once
	daemonSkip    string // why daemon tests skip, "" when they run
	daemonStarted bool   // started by these tests: stop it at the end
)

func TestMain(m *testing.M) {
	code := m.Run()
	if daemonStarted {
		out, err := runScript("stop")
		if err != nil {
			fmt.Fprintf(os.Stderr, "stopping libvirtd: %v\n%s", err, out)
		}
	}
	os.Exit(code)
}

// requireDaemon skips the test when no libvirtd can be had, or fails it
// where peers are required (package peer).
func requireDaemon(t testing.TB) {
	t.Helper()
	daemonOnce.Do(func() {
		if c, err := net.DialTimeout("unix", systemSocket, time.Second); err == nil {
			c.Close()
			return
		} else if os.Geteuid() != 0 {
			daemonSkip = fmt.Sprintf("no usable libvirtd on %s (%v) and not root: cannot start one with scripts/libvirtd.sh", systemSocket, err)
			return
		}
		out, err := runScript("start")
		if err != nil {
			daemonSkip = fmt.Sprintf("scripts/libvirtd.sh start failed (libvirtd cannot be installed or started here): %v\n%s", err, out)
			return
		}
		daemonStarted = true
	})
	if daemonSkip != "" {
		peer.Missing(t, "%s", daemonSkip)
	}
}

// script returns the path of scripts/libvirtd.sh in this repository.
func script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "libvirtd.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/libvirtd.sh not found above the working directory")
		}
		dir = parent
	}
}

func runScript(verb string) ([]byte, error) {
	s, err := script()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("bash", s, verb)
	cmd.Env = append(os.Environ(), "POLYVISOR_LIBVIRTD_TCP=1")
	return cmd.CombinedOutput()
}

// daemonPidFile is where scripts/libvirtd.sh records libvirtd's pid.
func daemonPidFile() string {
	dir := os.Getenv("POLYVISOR_LIBVIRTD_DIR")
	if dir == "" {
		dir = "/var/lib/polyvisor-libvirtd"
	}
	return filepath.Join(dir, "libvirtd.pid")
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// connect returns a connected provider, closed when the test ends.
func connect(t testing.TB, uri string) *Provider {
	t.Helper()
	p := New(provider.Config{Name: "test", URL: uri}, testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// rawConn is a go-libvirt connection of the test's own, for what the
// tests do out of band.
func rawConn(t testing.TB, uri string) *golibvirt.Libvirt {
	t.Helper()
	c, err := net.DialTimeout("unix", systemSocket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l := golibvirt.NewWithDialer(dialers.NewAlreadyConnected(c))
	if err := l.ConnectToURI(golibvirt.ConnectURI(uri)); err != nil {
		t.Fatalf("open %s: %v", uri, err)
	}
	t.Cleanup(func() { l.Disconnect() })
	return l
}

// uniqueName returns a name no other test run uses.
func uniqueName(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// recorder keeps what Watch reports.
type recorder struct {
	mu      sync.Mutex
	changes []provider.Change
	more    chan struct{}
	done    chan error
}

// watch runs p.Watch until the test ends.
func watch(t *testing.T, p *Provider) *recorder {
	t.Helper()
	r := &recorder{more: make(chan struct{}, 1), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		r.done <- p.Watch(ctx, func(c provider.Change) {
			r.mu.Lock()
			r.changes = append(r.changes, c)
			r.mu.Unlock()
			select {
			case r.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(cancel)
	return r
}

// sync waits until the watch is registered with libvirtd (Watch registers
// on its own goroutine): it defines and undefines a probe domain through
// raw until the watch reports it.
func (r *recorder) sync(t *testing.T, raw *golibvirt.Libvirt, domainType string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		name := uniqueName("pv-sync")
		xml := fmt.Sprintf(`<domain type='%s'><name>%s</name><memory unit='MiB'>64</memory>`+
			`<os><type>hvm</type></os></domain>`, domainType, name)
		dom, err := raw.DomainDefineXML(xml)
		if err != nil {
			t.Fatalf("define probe domain: %v", err)
		}
		if err := raw.DomainUndefine(dom); err != nil {
			t.Fatalf("undefine probe domain: %v", err)
		}
		id := uuidString(dom.UUID)
		wait := time.After(200 * time.Millisecond)
	poll:
		for {
			r.mu.Lock()
			for _, c := range r.changes {
				if c.DeletedVM == id {
					r.mu.Unlock()
					return
				}
			}
			r.mu.Unlock()
			select {
			case <-r.more:
			case err := <-r.done:
				t.Fatalf("watch ended: %v", err)
			case <-wait:
				break poll
			}
		}
	}
	t.Fatal("the watch reports no events")
}

// mark is the index the next change will have.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

// wait returns the first change from index since on that matches, failing
// the test after timeout.
func (r *recorder) wait(t *testing.T, since int, timeout time.Duration, what string, match func(provider.Change) bool) provider.Change {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for _, c := range r.changes[since:] {
			if match(c) {
				r.mu.Unlock()
				return c
			}
		}
		since = len(r.changes)
		r.mu.Unlock()
		select {
		case <-r.more:
		case err := <-r.done:
			t.Fatalf("watch ended waiting for %s: %v", what, err)
		case <-deadline:
			t.Fatalf("no change %s within %s", what, timeout)
		}
	}
}

// vmIs matches a change that reports the VM id in power state.
func vmIs(id, power string) func(provider.Change) bool {
	return func(c provider.Change) bool {
		return c.VM != nil && c.VM.ID == id && c.VM.PowerState == power
	}
}

func findVM(inv *provider.Inventory, id string) *provider.VM {
	for i := range inv.VMs {
		if inv.VMs[i].ID == id {
			return &inv.VMs[i]
		}
	}
	return nil
}

// waitFile waits until the file holds n lines that contain substr (that
// are substr, when exact).
func waitFile(t *testing.T, path, substr string, n int, timeout time.Duration) {
	t.Helper()
	waitLines(t, path, substr, false, n, timeout)
}

func waitLines(t *testing.T, path, substr string, exact bool, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if countLines(b, substr, exact) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not show %q %d times within %s; it holds:\n%s", path, substr, n, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countLines(b []byte, substr string, exact bool) int {
	count := 0
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if exact && line == substr || !exact && strings.Contains(line, substr) {
			count++
		}
	}
	return count
}

// vncGreeting dials a VNC server and returns its protocol greeting.
func vncGreeting(t *testing.T, c *provider.Console) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), 5*time.Second)
	if err != nil {
		t.Fatalf("dial vnc: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 12)
	if _, err := conn.Read(buf); err != nil {
		t.Fatalf("read vnc greeting: %v", err)
	}
	return string(buf)
}
