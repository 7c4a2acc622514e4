package qemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// onDisk is what the file at path takes on disk.
func onDisk(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// checkLines checks that b, the kept tail of numbered lines, holds
// consecutive lines up to last (the first, cut, aside), and returns the
// first whole line's number.
func checkLines(t *testing.T, b []byte, prefix string, last int) int {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("kept %d lines", len(lines))
	}
	first, want := -1, -1
	for _, l := range lines[1:] { // the first may start mid-line
		l = strings.TrimSuffix(l, "\r")
		n, err := strconv.Atoi(strings.TrimPrefix(l, prefix))
		if err != nil || !strings.HasPrefix(l, prefix) {
			t.Fatalf("line %q is not a whole line of the log", l)
		}
		if want >= 0 && n != want {
			t.Fatalf("line %d follows line %d: the log lost lines", n, want-1)
		}
		if first < 0 {
			first = n
		}
		want = n + 1
	}
	if want-1 != last {
		t.Fatalf("the log ends with line %d, want %d", want-1, last)
	}
	return first
}

// TestTrimLogKeepsTheNewest: a log appended to (O_APPEND, as QEMU and
// passt write) while it is trimmed stays within its bound on disk and
// keeps its newest lines whole and in order, nothing lost, on a file
// system that collapses ranges (ext4, XFS: the temporary directory here)
// and on one that punches holes (tmpfs).
func TestTrimLogKeepsTheNewest(t *testing.T) {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if shm, err := os.MkdirTemp("/dev/shm", "logcap-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	}
	const limit = 64 << 10
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "console.log")
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			done, stop := make(chan struct{}), make(chan struct{})
			hows := map[string]int{}
			worst := int64(0)
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					how, err := trimLog(path, limit)
					if err != nil {
						t.Error(err)
						return
					}
					hows[how]++
					worst = max(worst, onDisk(t, path))
				}
			}()
			last := 0
			for n := range 200000 {
				if _, err := fmt.Fprintf(w, "line %08d\n", n); err != nil {
					t.Fatal(err)
				}
				last = n
			}
			close(stop)
			<-done
			if _, err := trimLog(path, limit); err != nil {
				t.Fatal(err)
			}
			t.Logf("trims: %v; most on disk %d bytes", hows, worst)
			if hows["collapsed"]+hows["punched"] == 0 {
				t.Fatalf("the log was never trimmed in place: %v", hows)
			}
			if d := onDisk(t, path); d > limit+64<<10 {
				t.Errorf("the log takes %d bytes on disk, bound %d", d, limit)
			}
			b, err := readTail(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) > limit+64<<10 || bytes.IndexByte(b, 0) >= 0 {
				t.Errorf("read back %d bytes (zeros: %v)", len(b), bytes.IndexByte(b, 0) >= 0)
			}
			checkLines(t, b, "line ", last)
			// A tail shorter than what is kept.
			b, _ = readTail(path, 1000)
			if len(b) != 1000 {
				t.Errorf("readTail(1000) = %d bytes", len(b))
			}
		})
	}
}

// TestSerialFloodIsBounded: a real guest that writes to its serial port
// as fast as it can does not grow console.log past the driver's bound,
// whose tail keeps the newest output whole; with no driver attached (the
// agent away) the log grows, and a driver that re-attaches trims it at
// once and keeps it bounded.
func TestSerialFloodIsBounded(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	guest.RequireRun(t, g)
	old := logCheckEvery
	logCheckEvery = 100 * time.Millisecond
	t.Cleanup(func() { logCheckEvery = old })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// QEMU's UART sends about 10 KB/s (115200 baud): a small bound, so
	// that the guest passes it many times over in seconds.
	const limit = 16 << 10
	stateDir := t.TempDir()
	newDriver := func() *Driver {
		d := newTestDriver(t, stateDir)
		d.cfg.LogMaxBytes = limit
		return d
	}
	d1 := newDriver()
	uid := "5b0c1d2e-3f4a-4b5c-8d6e-7f8a9b0c1d2e"
	cfg := guestConfig(g, "flood", uid)
	cfg.NICs = nil
	// Numbered lines, as fast as the serial port takes them.
	script := `awk 'BEGIN { for (i = 0; ; i++) print "flood " i }' | cat >/dev/ttyS0`
	cfg.Cmdline = guest.Cmdline + " polyvisor.run=" + base64.StdEncoding.EncodeToString([]byte(script))
	h, err := d1.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cleanupVM(t, d1, h)
	if err := d1.Start(ctx, h, cfg); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(h.Dir, consoleLog)
	// What a guest writes between two checks, and more: on a loaded
	// machine a check comes late (36 KiB were seen once), yet a log that
	// was not capped would hold all ten times the bound.
	slack := int64(2 * limit)
	floodRE := regexp.MustCompile(`flood (\d+)\r?\n`)
	// lastLine is the number of the newest whole line the guest wrote.
	lastLine := func(d *Driver) int {
		b, err := d.ConsoleLog(ctx, h, 4096)
		if err != nil {
			t.Fatal(err)
		}
		m := floodRE.FindAllSubmatch(b, -1)
		if len(m) == 0 {
			return -1
		}
		n, _ := strconv.Atoi(string(m[len(m)-1][1]))
		return n
	}
	// Until the guest wrote ten times the bound, the log stays within it.
	worst := int64(0)
	for {
		worst = max(worst, onDisk(t, logPath))
		if n := lastLine(d1); n > 0 && int64(n)*int64(len("flood 12345\r\n")) > 10*limit {
			t.Logf("the guest wrote %d lines; console.log took at most %d bytes", n, worst)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the guest did not flood its console: last line %d", lastLine(d1))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if worst > limit+slack {
		t.Fatalf("console.log took %d bytes on disk, bound %d", worst, limit)
	}
	b, err := d1.ConsoleLog(ctx, h, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkFlood(t, b)

	// The agent goes away: nobody bounds the log while the guest floods.
	d1.Close()
	grown := onDisk(t, logPath)
	for grown <= limit+slack && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		grown = onDisk(t, logPath)
	}
	t.Logf("with no driver attached console.log grew to %d bytes", grown)
	// A new driver re-attaches and trims it.
	d2 := newDriver()
	defer d2.Close()
	h2, err := LoadHandle(h.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := d2.Recover(ctx, h2); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("Recover = %+v, %v", st, err)
	}
	for onDisk(t, logPath) > limit+slack {
		if ctx.Err() != nil {
			t.Fatalf("console.log still takes %d bytes after the driver re-attached", onDisk(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := lastLine(d2)
	for lastLine(d2) < before+2000 && ctx.Err() == nil {
		if d := onDisk(t, logPath); d > limit+slack {
			t.Fatalf("console.log takes %d bytes after the re-attach, bound %d", d, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err = d2.ConsoleLog(ctx, h2, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkFlood(t, b)
	if err := d2.Stop(ctx, h2, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

// checkFlood checks that the kept serial output holds the newest flood
// lines in order, none missing: the guest's own ticks, written to the
// same console, may break one line now and then, no more.
func checkFlood(t *testing.T, b []byte) {
	t.Helper()
	// Whole lines only: the log may end in the middle of one.
	m := regexp.MustCompile(`(?m)^flood (\d+)\r?\n`).FindAllSubmatch(b, -1)
	if len(m) < 300 {
		t.Fatalf("the kept log holds %d flood lines:\n%s", len(m), tail(b, 500))
	}
	prev, broken := -1, 0
	for _, x := range m[1:] {
		n, _ := strconv.Atoi(string(x[1]))
		switch {
		case prev < 0 || n == prev+1:
		case n == prev+2:
			broken++
		default:
			t.Fatalf("flood line %d follows %d in the kept log", n, prev)
		}
		prev = n
	}
	if broken > len(m)/200 {
		t.Fatalf("%d of %d flood lines are missing from the kept log", broken, len(m))
	}
}
