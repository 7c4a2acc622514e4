package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// fillEnv names the data dir of the helper process that fills its disk.
const fillEnv = "POLYVISOR_TEST_FILL_STORE"

// smallFS mounts a tmpfs of size for the test, or skips where it may not.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	peer.Root(t, "mounting a small tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		peer.Missing(t, "cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func fillKey(i int) string { return fmt.Sprintf("/polyvisor/v1/fill/%06d", i) }

// fillStore is the helper process: it writes to its store until etcd
// gives up, printing each write acknowledged.
func fillStore(dir string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: dir, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	val := strings.Repeat("x", 100<<10)
	for i := 0; ; i++ {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := s.Client().Put(pctx, fillKey(i), val)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "put:", err)
			os.Exit(4)
		}
		fmt.Printf("acked %d\n", i)
	}
}

// When a write of the embedded etcd meets a full disk, etcd gives up; the
// process ends with one last line that names the disk and says what to do,
// not a Go trace, and once space is back a restart finds every write that
// was acknowledged. (It used to end with etcd's own error among others.)
func TestEtcdDiskFull(t *testing.T) {
	if dir := os.Getenv(fillEnv); dir != "" {
		fillStore(dir)
		return
	}
	// Room for two of etcd's 64 MiB write-ahead log files (it allocates the
	// next one ahead, in the background) and then some for the database: on
	// a smaller disk the next log may take the last space before any write.
	mnt := smallFS(t, "200m")
	data := filepath.Join(mnt, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestEtcdDiskFull$")
	cmd.Env = append(os.Environ(), fillEnv+"="+data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("helper ended with %v, want exit status 1\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	want := "FATAL: the embedded etcd in " + filepath.Join(data, "etcd") + " stopped: the disk holding it is full"
	if !strings.Contains(last, want) || !strings.Contains(last, "free space") {
		t.Errorf("last line %q\nwant one saying %q and what to do\nstderr:\n%s", last, want, stderr.String())
	}
	if s := stderr.String(); strings.Contains(s, "goroutine ") || strings.Contains(s, "panic:") {
		t.Errorf("a Go trace in the output:\n%s", s)
	}
	acked := -1
	for _, l := range strings.Split(stdout.String(), "\n") {
		if n, ok := strings.CutPrefix(l, "acked "); ok {
			acked, _ = strconv.Atoi(n)
		}
	}
	if acked < 0 {
		t.Fatalf("no write acknowledged before the disk filled:\n%s", stderr.String())
	}

	// Space comes back: the disk grows.
	if out, err := exec.Command("mount", "-o", "remount,size=400m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v: %s", err, out)
	}
	s, err := Open(testCtx(t), Config{DataDir: data, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("restart with space back: %v", err)
	}
	defer s.Close()
	for i := 0; i <= acked; i++ {
		resp, err := s.Client().Get(testCtx(t), fillKey(i), clientv3.WithCountOnly())
		if err != nil || resp.Count != 1 {
			t.Fatalf("write %d of %d acknowledged is gone after the restart: %v", i, acked, err)
		}
	}
	t.Logf("%d writes acknowledged before the disk filled, all there after the restart", acked+1)
}

// At its quota etcd raises its NOSPACE alarm and refuses writes, even once
// there would be room: ReclaimSpace compacts, defragments and disarms it.
func TestReclaimSpace(t *testing.T) {
	s, err := Open(testCtx(t), Config{DataDir: t.TempDir(), Logger: testLogger(t), QuotaBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := testCtx(t)
	val := strings.Repeat("x", 512<<10)
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		// One key, written again and again: the history fills the quota.
		_, full = s.Client().Put(ctx, "/polyvisor/v1/fill/one", val)
	}
	if !IsNoSpace(full) {
		t.Fatalf("writing past the quota: %v, want etcd's no-space error", full)
	}
	if on, err := s.SpaceAlarm(ctx); err != nil || !on {
		t.Fatalf("SpaceAlarm: %v %v, want raised", on, err)
	}
	ok, size, err := s.ReclaimSpace(ctx)
	if err != nil || !ok || size >= 16<<20 {
		t.Fatalf("ReclaimSpace: %v, size %d, %v", ok, size, err)
	}
	if on, err := s.SpaceAlarm(ctx); err != nil || on {
		t.Errorf("SpaceAlarm after reclaiming: %v %v", on, err)
	}
	if _, err := s.Client().Put(ctx, "/polyvisor/v1/fill/two", "v"); err != nil {
		t.Errorf("a write after reclaiming: %v", err)
	}
}
