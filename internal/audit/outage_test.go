package audit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// smallFS mounts a tmpfs of size bytes for the test, or skips where the
// test may not mount one.
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

// fill writes a file that takes the rest of the filesystem of dir.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// On a full disk the log says it cannot write, counts what it loses, and
// recovers by itself once there is room: the first record after is the
// account of the outage, and the chain has no hole.
func TestFullDiskOutage(t *testing.T) {
	mnt := smallFS(t, "2m")
	dir := filepath.Join(mnt, "audit")
	l := openLog(t, dir, Options{RetryInterval: 20 * time.Millisecond})
	before := appendMsgs(t, l, "before")
	filler := fill(t, mnt)

	// What still fits in the segment's last page is written; then no more.
	lost := 0
	for i := 0; lost < 5; i++ {
		r := newRec("alice", "default", "vm/web", "vm.start", api.AuditSuccess, "tail")
		err := l.Append(t.Context(), r)
		switch {
		case err == nil && lost == 0 && i < 1000:
			before = append(before, r)
		case errors.Is(err, syscall.ENOSPC):
			lost++
		default:
			t.Fatalf("append %d on a full disk: %v, want ENOSPC", i, err)
		}
	}
	if err := l.Writable(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Writable: %v, want ENOSPC", err)
	}
	a := alarmNamed(l.Alarms(), api.AlarmAuditWrite)
	if a == nil || a.Path != dir {
		t.Errorf("alarms %+v: want %s naming %s", l.Alarms(), api.AlarmAuditWrite, dir)
	}
	if st := l.Status(); st.Writable || st.Lost != int64(lost) {
		t.Errorf("status %+v: want not writable, %d lost", st, lost)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Writable(); err != nil {
		t.Fatalf("not writable again after space returned: %v", err)
	}
	after := appendMsgs(t, l, "after")
	recs := queryAll(t, l, api.AuditQuery{})
	n := len(before)
	if len(recs) != n+2 || !slices.Equal(ids(recs[:n]), ids(before)) || recs[n].Action != "audit.outage" || recs[n+1].ID != after[0].ID {
		t.Fatalf("records %v, want the %d before, the outage, after", messages(recs), n)
	}
	if o := recs[n]; o.Count != int64(lost) {
		t.Errorf("outage record counts %d, want %d: %s", o.Count, lost, o.Message)
	}
	if v, err := l.Verify(t.Context()); err != nil || !v.OK || v.LastSeq != uint64(n+2) {
		t.Errorf("Verify: %+v %v; want ok with records 1 to %d", v, err, n+2)
	}
	if len(l.Alarms()) != 0 {
		t.Errorf("alarms left: %+v", l.Alarms())
	}
}
