package diskspace

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// smallFS mounts a tmpfs of size for the test, or skips where it may not.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	peer.Root(t, "mounting a small tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		peer.Missing(t, "cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

// writeFile writes n bytes to path, or fewer if the disk fills.
func writeFile(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, n)); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
}

// On a real small filesystem: below the reserve the guard says which disk
// and how full; with space back (and some to spare) it clears by itself.
func TestGuardOnARealDisk(t *testing.T) {
	mnt := smallFS(t, "8m")
	data := filepath.Join(mnt, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var changes []error
	g := NewGuard(2<<20, nil, func(err error) {
		mu.Lock()
		changes = append(changes, err)
		mu.Unlock()
	}, data)
	if err := g.Check(); err != nil {
		t.Fatalf("empty disk: %v", err)
	}
	big := filepath.Join(data, "big")
	writeFile(t, big, 7<<20)
	err := g.Check()
	var low *LowError
	if !errors.As(err, &low) || !errors.Is(err, ErrLow) || low.Path != data || low.Free >= 2<<20 {
		t.Fatalf("Check on a full disk: %v, want a LowError naming %s", err, data)
	}
	if !strings.Contains(err.Error(), data) || !strings.Contains(err.Error(), "reserve") {
		t.Errorf("message %q does not name the path and the reserve", err)
	}
	if a := g.Alarm(); a == nil || a.Path != data {
		t.Errorf("alarm %+v, want one naming %s", a, data)
	}
	// Just above the reserve is not enough to leave read-only.
	if err := os.Truncate(big, 5<<20+850<<10); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(); err == nil {
		t.Errorf("left read-only with barely the reserve free")
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(); err != nil || g.Err() != nil || g.Alarm() != nil {
		t.Errorf("space back: %v %v %+v", err, g.Err(), g.Alarm())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || changes[0] == nil || changes[1] != nil {
		t.Errorf("changes %v, want low then back", changes)
	}
}

func TestGuardOff(t *testing.T) {
	g := NewGuard(0, nil, nil, "/nonexistent")
	if err := g.Check(); err != nil {
		t.Errorf("a guard with no reserve: %v", err)
	}
}
