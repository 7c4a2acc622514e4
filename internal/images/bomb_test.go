package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// wrapQemuImg replaces the qemu-img this package runs by a shell script
// whose body (given the real qemu-img as $REAL) decides what each call
// does; it returns a function reading the calls made, one line each.
func wrapQemuImg(t *testing.T, body string) func() []string {
	t.Helper()
	real := peer.Binary(t, "qemu-img", "apt-get install qemu-utils")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "calls.log")
	script := fmt.Sprintf("#!/bin/sh\nREAL=%q\necho \"$*\" >> %q\n%s\n", real, logPath, body)
	wrapper := filepath.Join(dir, "qemu-img")
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := qemuImg
	qemuImg = wrapper
	t.Cleanup(func() { qemuImg = old })
	return func() []string {
		b, _ := os.ReadFile(logPath)
		return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
	}
}

// withoutPrlimit runs the rest of the test with the watcher instead of
// the kernel's file size limit.
func withoutPrlimit(t *testing.T) {
	old := prlimitPath
	prlimitPath = ""
	t.Cleanup(func() { prlimitPath = old })
}

// calledWith tells whether one of the calls starts with verb.
func calledWith(calls []string, verb string) bool {
	for _, c := range calls {
		if strings.HasPrefix(c, verb+"_") {
			return true
		}
	}
	return false
}

// processesOn lists the running processes whose command line names path.
func processesOn(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte(path)) {
			out = append(out, f+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// randomRaw writes a raw disk of size bytes of random data.
func randomRaw(t *testing.T, dir string, size int) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	path := filepath.Join(dir, "random.raw")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestImportRefusesHugeVirtualSize: a tiny qcow2 that declares a 1 PiB
// disk is refused from its header, before qemu-img measures or converts
// anything, by Inspect and by Import.
func TestImportRefusesHugeVirtualSize(t *testing.T) {
	calls := recordQemuImg(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "huge.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", src, "1P")
	dst := filepath.Join(dir, "out", "img")

	_, err := Inspect(context.Background(), src, api.ImageDisk, WithMaxVirtualBytes(256<<30))
	if !IsReject(err) || !strings.Contains(err.Error(), "virtual size") {
		t.Fatalf("Inspect = %v, want the virtual size refused", err)
	}
	_, err = Import(context.Background(), src, dst, api.ImageDisk, nil, WithMaxVirtualBytes(256<<30))
	if !IsReject(err) || !strings.Contains(err.Error(), "virtual size of 1125899906842624 bytes is over the limit of 274877906944") {
		t.Fatalf("Import = %v, want the virtual size refused", err)
	}
	for _, c := range calls() {
		if !strings.HasPrefix(c, "info ") {
			t.Errorf("qemu-img ran %q for an image refused by its header", c)
		}
	}
	assertNothingLeft(t, dst)
}

// TestImportRefusesExpansionBomb: a compressed qcow2 of a few hundred
// KiB that expands to 64 MiB is measured before it is converted: over the
// stored-size limit it is refused without a conversion.
func TestImportRefusesExpansionBomb(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	ones := filepath.Join(dir, "ones.raw")
	if err := os.WriteFile(ones, bytes.Repeat([]byte{1}, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	bomb := filepath.Join(dir, "bomb.qcow2")
	run(t, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", ones, bomb)
	fi, _ := os.Stat(bomb)
	t.Logf("bomb: %d bytes on disk, 64 MiB of data", fi.Size())

	in, err := Inspect(context.Background(), bomb, api.ImageDisk)
	if err != nil {
		t.Fatal(err)
	}
	if in.MaxSizeBytes < 64<<20 || in.VirtualSizeBytes != 64<<20 {
		t.Fatalf("Inspect = %+v: the measure must cover the 64 MiB it expands to", in)
	}
	calls := recordQemuImg(t)
	dst := filepath.Join(dir, "out", "img")
	_, err = Import(context.Background(), bomb, dst, api.ImageDisk, nil, WithMaxStoredBytes(16<<20))
	if !IsReject(err) || !strings.Contains(err.Error(), "once converted, over the limit of 16777216") {
		t.Fatalf("Import = %v, want the expansion refused", err)
	}
	if calledWith(calls(), "convert") {
		t.Errorf("the bomb was converted before it was refused: %v", calls())
	}
	assertNothingLeft(t, dst)

	// Within the limit it imports, and the stored file is within the
	// measure.
	res, err := Import(context.Background(), bomb, dst, api.ImageDisk, nil, WithMaxStoredBytes(in.MaxSizeBytes))
	if err != nil {
		t.Fatal(err)
	}
	if res.SizeBytes > in.MaxSizeBytes {
		t.Fatalf("stored %d bytes, more than the measure %d", res.SizeBytes, in.MaxSizeBytes)
	}
}

// TestConvertStoppedAtOutputLimit: when qemu-img writes more than its
// image was measured at (a measure that lies here), the conversion is
// stopped — by the kernel's file size limit, or without prlimit by the
// watcher — and nothing is left: no file, no qemu-img.
func TestConvertStoppedAtOutputLimit(t *testing.T) {
	for _, mode := range []string{"prlimit", "watcher"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "prlimit" && prlimitPath == "" {
				peer.Missing(t, "prlimit is not installed (apt-get install util-linux)")
			}
			if mode == "watcher" {
				withoutPrlimit(t)
			}
			// The measure claims 64 KiB; the conversion is slowed to
			// 4 MiB/s so that the watcher sees it grow.
			calls := wrapQemuImg(t, `case "$1" in
measure) echo '{"required": 65536, "fully-allocated": 65536}' ;;
convert) shift; exec "$REAL" convert -r 4194304 "$@" ;;
*) exec "$REAL" "$@" ;;
esac`)
			dir := t.TempDir()
			src := randomRaw(t, dir, 8<<20)
			dst := filepath.Join(dir, "out", "img")
			_, err := Import(context.Background(), src, dst, api.ImageDisk, nil)
			if !IsReject(err) || !strings.Contains(err.Error(), "expands to more than") {
				t.Fatalf("Import = %v, want the conversion stopped at its limit", err)
			}
			if !calledWith(calls(), "convert") {
				t.Fatalf("no conversion ran: %v", calls())
			}
			assertNothingLeft(t, dst)
			if ps := processesOn(t, src); len(ps) > 0 {
				t.Fatalf("qemu-img still runs: %v", ps)
			}
		})
	}
}

// TestConvertTimeout: a conversion that runs past its time is killed and
// leaves nothing.
func TestConvertTimeout(t *testing.T) {
	// 8 MiB at 64 KiB/s would take two minutes.
	wrapQemuImg(t, `case "$1" in
convert) shift; exec "$REAL" convert -r 65536 "$@" ;;
*) exec "$REAL" "$@" ;;
esac`)
	dir := t.TempDir()
	src := randomRaw(t, dir, 8<<20)
	dst := filepath.Join(dir, "out", "img")
	_, err := Import(context.Background(), src, dst, api.ImageDisk, nil, WithConvertTimeout(time.Second))
	if !IsReject(err) || !strings.Contains(err.Error(), "took longer than the limit of 1s") {
		t.Fatalf("Import = %v, want the conversion timed out", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the deadline", err)
	}
	assertNothingLeft(t, dst)
	if ps := processesOn(t, src); len(ps) > 0 {
		t.Fatalf("qemu-img still runs: %v", ps)
	}
}

// TestInspectLimits: qemu-img info and measure run under the kernel's
// memory and CPU limits when prlimit is there.
func TestInspectLimits(t *testing.T) {
	if prlimitPath == "" {
		peer.Missing(t, "prlimit is not installed (apt-get install util-linux)")
	}
	calls := wrapQemuImg(t, `grep -E '^Max (address space|cpu time|core file size)' /proc/$$/limits >> "$(dirname "$0")/limits"; exec "$REAL" "$@"`)
	dir := t.TempDir()
	src := baseRaw(t, dir, 1<<20)
	if _, err := Inspect(context.Background(), src, api.ImageDisk); err != nil {
		t.Fatal(err)
	}
	if !calledWith(calls(), "info") || !calledWith(calls(), "measure") {
		t.Fatalf("calls: %v", calls())
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(qemuImg), "limits"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Max address space         1073741824", "Max cpu time              30", "Max core file size        0"} {
		if got := strings.Count(string(b), want); got != 2 {
			t.Errorf("%q in %d of the 2 runs:\n%s", want, got, b)
		}
	}
}

// TestInspectQemuImgKilled: a qemu-img that dies on the image (a crash,
// or a resource limit passed) refuses the image; it is not a server
// error.
func TestInspectQemuImgKilled(t *testing.T) {
	wrapQemuImg(t, `case "$1" in info) kill -SEGV $$ ;; *) exec "$REAL" "$@" ;; esac`)
	dir := t.TempDir()
	src := baseRaw(t, dir, 1<<20)
	_, err := Inspect(context.Background(), src, api.ImageDisk)
	if !IsReject(err) || !strings.Contains(err.Error(), "qemu-img signal: segmentation fault") {
		t.Fatalf("Inspect = %v, want a refusal naming the signal", err)
	}
	if strings.Contains(err.Error(), src) {
		t.Errorf("error %v shows the server's path", err)
	}
}

// TestQemuImgConfined: every qemu-img run of an import (info, measure,
// convert) runs at the lowest CPU priority and in the idle I/O class, so
// that a conversion cannot starve the server; a conversion's memory is
// bounded by the kernel too.
func TestQemuImgConfined(t *testing.T) {
	if nicePath == "" || ionicePath == "" {
		t.Skip("nice (coreutils) or ionice (util-linux) is not installed")
	}
	calls := wrapQemuImg(t, `d=$(dirname "$0")
echo "$1 nice=$(cut -d' ' -f19 /proc/$$/stat) io=$(ionice -p $$ | tr -d ' ') $(grep -E '^Max address space' /proc/$$/limits | tr -s ' ' | cut -d' ' -f4)" >> "$d/seen"
exec "$REAL" "$@"`)
	dir := t.TempDir()
	src := baseRaw(t, dir, 4<<20)
	if _, err := Import(context.Background(), src, filepath.Join(dir, "out.qcow2"), api.ImageDisk, nil); err != nil {
		t.Fatal(err)
	}
	if !calledWith(calls(), "convert") {
		t.Fatalf("calls: %v", calls())
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(qemuImg), "seen"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range lines {
		if !strings.Contains(l, " nice=19 ") || !strings.Contains(l, " io=idle") {
			t.Errorf("qemu-img ran at normal priority: %s", l)
		}
		if strings.HasPrefix(l, "convert ") && prlimitPath != "" && !strings.HasSuffix(l, fmt.Sprint(convertAddressSpace)) {
			t.Errorf("the conversion's address space is not bounded: %s", l)
		}
	}
	if len(lines) < 3 {
		t.Errorf("runs seen: %q", lines)
	}
}
