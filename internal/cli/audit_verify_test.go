package cli

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// audit verify --dir reads a real audit directory and says which segment,
// bytes and records a damaged line cost, exiting 1.
func TestAuditVerifyDir(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	l, err := audit.Open(context.Background(), dir, audit.Options{SegmentBytes: 1024, NoVerify: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := l.Append(context.Background(), &api.AuditRecord{Actor: api.AuditActor{Kind: "user", Name: "alice"},
			Action: "vm.start", Outcome: api.AuditSuccess}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(t, "", "audit", "verify", "--dir", dir)
	if code != 0 || !strings.Contains(out, "20 records") || !strings.Contains(out, "whole") {
		t.Fatalf("verify a sound log: exit %d\n%s%s", code, out, errOut)
	}

	entries, _ := os.ReadDir(dir)
	var segs []string
	for _, e := range entries {
		segs = append(segs, e.Name())
	}
	slices.Sort(segs)
	path := filepath.Join(dir, segs[1])
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := bytes.IndexByte(data, '\n')
	copy(data[:end], bytes.Repeat([]byte("#"), end))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = cli(t, "", "audit", "verify", "--dir", dir)
	if code != ExitFailure || !strings.Contains(errOut, "1 problems") {
		t.Errorf("verify a damaged log: exit %d: %s", code, errOut)
	}
	fields := []string{"unreadable", segs[1], "0-" + strconv.Itoa(end+1), "records"}
	for _, f := range fields {
		if !strings.Contains(out, f) {
			t.Errorf("output lacks %q:\n%s", f, out)
		}
	}
}

// audit status and alarm list show the server's answers for people.
func TestAuditStatusAndAlarms(t *testing.T) {
	isolate(t)
	f := newFake(t)
	alarm := api.Alarm{Name: api.AlarmDiskFull, Message: "the disk holding /var/lib/polyvisor is full", Path: "/var/lib/polyvisor",
		Since: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	f.HandleFunc("GET /v1/audit/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.AuditStatus{Writable: false, Bytes: 3 << 20, MaxBytes: 256 << 20, MaxAgeSeconds: 86400,
			WhenFull: "alarm", FailClosed: true, Lost: 7, Alarms: []api.Alarm{{Name: api.AlarmAuditWrite, Message: "no space left"}}})
	})
	f.HandleFunc("GET /v1/alarms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Alarm]{Items: []api.Alarm{alarm}})
	})
	srv := []string{"--server", f.srv.URL}
	out, errOut, code := cli(t, "", append(srv, "audit", "status")...)
	if code != 0 {
		t.Fatalf("audit status: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Writable:", "no", "3.0 MiB of 256.0 MiB", "Fail closed:", "Records lost:", "7", "audit-write", "no space left"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit status lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = cli(t, "", append(srv, "alarm", "list")...)
	if code != 0 || !strings.Contains(out, "disk-full") || !strings.Contains(out, "/var/lib/polyvisor") {
		t.Errorf("alarm list: exit %d:\n%s%s", code, out, errOut)
	}
}
