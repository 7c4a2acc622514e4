package guest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BootToMarker runs qemu-system-x86_64 under TCG (which works whatever
// the machine's KVM is) with args and the serial console in a file,
// until the guest prints ReadyMarker there, and returns how long that
// took. It fails t when QEMU exits first or 90 s pass; QEMU is killed
// before it returns.
func BootToMarker(t testing.TB, args ...string) time.Duration {
	t.Helper()
	serial := filepath.Join(t.TempDir(), "serial.log")
	args = append([]string{"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "file:" + serial}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var qlog bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = &qlog, &qlog
	t0 := time.Now()
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
		if bytes.Contains(b, []byte(ReadyMarker)) {
			return time.Since(t0)
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("qemu exited before the marker: %v\n%s\nserial:\n%s", err, qlog.String(), b)
		case <-ctx.Done():
			t.Fatalf("no %s on the serial console within 90s; serial:\n%s", ReadyMarker, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
