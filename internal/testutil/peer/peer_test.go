package peer

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how the test was ended. Skip and
// Fatalf end the calling goroutine as the real ones do, so that code
// after them never runs.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder in its own goroutine, as the testing
// package runs a test, and returns the recorder once f has ended.
func run(f func(t testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestMissingSkipsByDefault(t *testing.T) {
	t.Setenv(Env, "")
	after := false
	r := run(func(tb testing.TB) {
		Missing(tb, "qemu-img is not installed (%s)", "apt-get install qemu-utils")
		after = true
	})
	if r.failed != "" || r.skipped != "qemu-img is not installed (apt-get install qemu-utils)" || after {
		t.Errorf("skipped %q, failed %q, went on %v; want a skip with the reason and nothing after it", r.skipped, r.failed, after)
	}
}

func TestMissingFailsWhereRequired(t *testing.T) {
	t.Setenv(Env, "1")
	after := false
	r := run(func(tb testing.TB) {
		Missing(tb, "no libvirtd on %s", "/var/run/libvirt/libvirt-sock")
		after = true
	})
	if r.skipped != "" || !strings.HasPrefix(r.failed, "no libvirtd on /var/run/libvirt/libvirt-sock") ||
		!strings.Contains(r.failed, Env+"=1") || after {
		t.Errorf("skipped %q, failed %q, went on %v; want a failure naming the peer and %s", r.skipped, r.failed, after, Env)
	}
}

func TestBinary(t *testing.T) {
	t.Setenv(Env, "1")
	var path string
	r := run(func(tb testing.TB) { path = Binary(tb, "sh", "a shell") })
	if r.failed != "" || r.skipped != "" || path == "" {
		t.Errorf("Binary(sh) = %q, skipped %q, failed %q; want its path", path, r.skipped, r.failed)
	}
	r = run(func(tb testing.TB) { Binary(tb, "polyvisor-no-such-tool", "apt-get install nothing") })
	if !strings.Contains(r.failed, "polyvisor-no-such-tool is not installed (apt-get install nothing;") {
		t.Errorf("Binary of a missing tool: skipped %q, failed %q; want a failure saying how to install it", r.skipped, r.failed)
	}
	t.Setenv(Env, "0")
	r = run(func(tb testing.TB) { Binary(tb, "polyvisor-no-such-tool", "apt-get install nothing") })
	if r.failed != "" || !strings.Contains(r.skipped, "polyvisor-no-such-tool is not installed") {
		t.Errorf("Binary of a missing tool, not required: skipped %q, failed %q; want a skip", r.skipped, r.failed)
	}
}

func TestWithout(t *testing.T) {
	t.Setenv(Env, "1")
	r := run(func(tb testing.TB) { Without(tb, "no libvirtd: the provider page is not checked") })
	if !strings.HasPrefix(r.failed, "no libvirtd: the provider page is not checked") {
		t.Errorf("Without where required: failed %q; want a failure", r.failed)
	}
}
