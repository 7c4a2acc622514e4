package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// smallFS mounts a tmpfs of size for the test, or skips where it may not
// (package peer).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	peer.Root(t, "mounting a small tmpfs")
	dir, err := os.MkdirTemp("", "polyvisor-fs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		peer.Missing(t, "cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// Registered first, so it runs after the server's cleanup.
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}

// fillTo writes a file in dir until the disk has at most leave bytes free
// (0: until it is full), and returns its path.
func fillTo(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := st.Bavail * uint64(st.Bsize)
		if leave > 0 && free <= leave {
			return path
		}
		n := len(buf)
		if leave > 0 {
			n = int(min(uint64(n), free-leave))
		}
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// auditRecords returns every record of the server's audit log.
func auditRecords(t *testing.T, s *Server) []api.AuditRecord {
	t.Helper()
	var out []api.AuditRecord
	if err := s.audit.Query(context.Background(), api.AuditQuery{}, func(r *api.AuditRecord) bool {
		out = append(out, *r)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// A flood of requests with a bogus token is limited by address before
// authentication, and its refusals are folded into a few counted records:
// a record made before the flood stays, and every refusal is accounted
// for. (Authentication used to run first, so bad tokens skipped the limit,
// and each refusal was a record of its own: 150k of them pushed real
// records out of a size-bounded log.)
func TestBogusTokenFlood(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{
		AddressRateLimit: 20, AddressRateBurst: 50,
		AuditFold: audit.AggregateOptions{Window: time.Hour},
		Audit:     audit.Options{SegmentBytes: 4 << 10, MaxBytes: 32 << 10},
	})
	ctx := context.Background()
	if _, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "evidence"}); err != nil {
		t.Fatal(err)
	}
	hc := e.super.HTTPClient()
	const workers, each = 8, 250
	var unauthorized, limited, other atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/vms/x%d-%d", e.url, w, i), nil)
				req.Header.Set("Authorization", "Bearer pvt_bogus.bogus")
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusUnauthorized:
					unauthorized.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := int64(workers * each)
	// The limiter lets the burst through, then its rate.
	if most := int64(50 + 20*elapsed.Seconds() + 20); unauthorized.Load() > most || limited.Load() == 0 || other.Load() != 0 {
		t.Errorf("%d unauthorized, %d limited, %d other in %v: want at most %d past the address limit, the rest 429",
			unauthorized.Load(), limited.Load(), other.Load(), elapsed, most)
	}

	// End the window: the counts are written.
	e.s.auditFold.Close()
	var counted int64
	var flood []api.AuditRecord
	for _, r := range auditRecords(t, e.s) {
		if r.Outcome == api.AuditDenied && strings.HasPrefix(r.Path, "/v1/vms/x") {
			flood = append(flood, r)
			counted += max(r.Count, 1)
		}
	}
	if counted != total {
		t.Fatalf("the audit log accounts for %d refusals of %d", counted, total)
	}
	// One address, caller and route; two statuses (401, 429).
	if len(flood) > 2*(audit.DefaultAggregateEach+1) {
		t.Errorf("%d audit records for %d refusals: want a few per address, route and status", len(flood), total)
	}
	found := false
	for _, r := range auditRecords(t, e.s) {
		found = found || (r.Action == "project.create" && r.Resource.Name == "evidence")
	}
	if !found {
		t.Errorf("the record of the project created before the flood is gone")
	}
	if st := e.s.audit.Status(); st.Bytes > 32<<10 {
		t.Logf("audit log at %d bytes after the flood", st.Bytes)
	}
}

// auditFS starts a server whose audit log is on a small disk of its own.
func auditFS(t *testing.T, failClosed bool) (*env, string) {
	mnt := smallFS(t, "1m")
	e := newEnv(t, Config{AuditDir: filepath.Join(mnt, "audit"), AuditFailClosed: failClosed,
		Audit: audit.Options{RetryInterval: 50 * time.Millisecond}})
	return e, mnt
}

// createUntil creates projects until one answers what stop accepts, and
// returns that error; a project whose record could not be written makes
// the log not writable.
func createUntil(t *testing.T, c *client.Client, stop func(error) bool) error {
	t.Helper()
	for i := range 2000 {
		_, err := c.CreateProject(context.Background(), api.ProjectCreate{Name: fmt.Sprintf("p%d", i)})
		if stop(err) {
			return err
		}
		if err != nil {
			t.Fatalf("creating project %d: %v", i, err)
		}
	}
	t.Fatal("no creation gave the answer waited for")
	return nil
}

// With the audit log's disk full and the server failing closed, changes
// are refused with 503 and a message that says why, reads go on, the
// alarm is raised; with space back, changes are taken again and the log
// counts what it could not write.
func TestAuditFailClosed(t *testing.T) {
	t.Parallel()
	e, mnt := auditFS(t, true)
	filler := fillTo(t, mnt, 0)
	err := createUntil(t, e.super, func(err error) bool { return statusOfErr(err) == http.StatusServiceUnavailable })
	if !strings.Contains(err.Error(), "audit log cannot record") || !strings.Contains(err.Error(), "fails closed") {
		t.Errorf("refusal %q does not say why", err)
	}
	if _, err := e.super.ListProjects(context.Background(), api.ListOptions{}); err != nil {
		t.Errorf("reading while the audit log is full: %v", err)
	}
	checkAuditAlarm(t, e, api.AlarmAuditWrite, filepath.Join(mnt, "audit"))
	st, err := e.super.AuditStatus(context.Background())
	if err != nil || st.Writable || !st.FailClosed || st.Lost == 0 {
		t.Errorf("audit status %+v %v: want not writable, fail closed, records lost", st, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.s.audit.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.super.CreateProject(context.Background(), api.ProjectCreate{Name: "after"}); err != nil {
		t.Fatalf("creating a project with space back: %v", err)
	}
	var outage *api.AuditRecord
	for _, r := range auditRecords(t, e.s) {
		if r.Action == "audit.outage" {
			outage = &r
		}
	}
	if outage == nil || outage.Count == 0 {
		t.Errorf("no record of the outage: %+v", outage)
	}
	if alarms, err := e.super.ListAlarms(context.Background()); err != nil || len(alarms) != 0 {
		t.Errorf("alarms with space back: %+v %v", alarms, err)
	}
}

// By default the server fails open: changes go on while the audit log
// cannot write, with the alarm raised.
func TestAuditFailOpen(t *testing.T) {
	t.Parallel()
	e, mnt := auditFS(t, false)
	fillTo(t, mnt, 0)
	createUntil(t, e.super, func(error) bool { return e.s.audit.Writable() != nil })
	if _, err := e.super.CreateProject(context.Background(), api.ProjectCreate{Name: "unrecorded"}); err != nil {
		t.Errorf("a change while the audit log cannot write, failing open: %v", err)
	}
	checkAuditAlarm(t, e, api.AlarmAuditWrite, filepath.Join(mnt, "audit"))
}

// checkAuditAlarm expects the alarm in /v1/alarms, naming path, and as a
// metric.
func checkAuditAlarm(t *testing.T, e *env, name, path string) {
	t.Helper()
	alarms, err := e.super.ListAlarms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var a *api.Alarm
	for i := range alarms {
		if alarms[i].Name == name {
			a = &alarms[i]
		}
	}
	if a == nil || a.Path != path {
		t.Errorf("alarms %+v: want %s naming %s", alarms, name, path)
	}
	// /metrics answers a superadmin (or the metrics token); read it whole.
	want := fmt.Sprintf("polyvisor_alarm{name=%q} 1", name)
	{
		req, err := http.NewRequest("GET", e.url+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["superadmin"])
		resp, err := e.super.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		all, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics as superadmin: %d %.200s", resp.StatusCode, all)
		}
		if !strings.Contains(string(all), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// startOn starts a bare server (no hosts, no users) on dataDir.
func startOn(t *testing.T, dataDir string, cfg Config) (*Server, *client.Client) {
	t.Helper()
	cfg.DataDir = dataDir
	cfg.Listen = "127.0.0.1:0"
	cfg.Socket = filepath.Join(dataDir, "polyvisor.sock")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.New(client.Config{URL: "https://" + s.Addr().String(), Token: s.AdminToken(), CAFile: s.CAFile()})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// On a real small data disk (the embedded etcd on it too): below the
// reserve the server is read-only, answering changes with 507 naming the
// disk, reads keep working, nothing writes to the store; with space back
// it takes changes again by itself. (A full disk used to make the server
// exit with no word of why.)
func TestReadOnlyOnFullDataDisk(t *testing.T) {
	t.Parallel()
	mnt := smallFS(t, "200m")
	data := filepath.Join(mnt, "data")
	const reserve = 40 << 20
	s, c := startOn(t, data, Config{MinFreeBytes: reserve})
	ctx := context.Background()
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	filler := fillTo(t, mnt, reserve-10<<20)

	_, err := c.CreateProject(ctx, api.ProjectCreate{Name: "refused"})
	var ae *api.Error
	if statusOfErr(err) != http.StatusInsufficientStorage || !errors.As(err, &ae) || ae.Code != api.CodeInsufficientStorage {
		t.Fatalf("a change on a full disk: %v, want 507 insufficient_storage", err)
	}
	if !strings.Contains(err.Error(), data) || !strings.Contains(err.Error(), "reads keep working") {
		t.Errorf("refusal %q does not name the disk's path and say what still works", err)
	}
	if ps, err := c.ListProjects(ctx, api.ListOptions{}); err != nil || len(ps) == 0 {
		t.Errorf("reading on a full disk: %v", err)
	}
	alarms, err := c.ListAlarms(ctx)
	if err != nil || len(alarms) != 1 || alarms[0].Name != api.AlarmDiskFull || alarms[0].Path != data {
		t.Errorf("alarms %+v %v: want %s naming %s", alarms, err, api.AlarmDiskFull, data)
	}
	// Nothing inside the server writes to the store either.
	p := &api.Project{Meta: api.Meta{Name: "internal"}}
	if _, err := s.projects.Create(ctx, "internal", p); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("a store write on a full disk: %v, want ErrReadOnly", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "after"}); err != nil {
		t.Fatalf("a change with space back: %v", err)
	}
	if alarms, err := c.ListAlarms(ctx); err != nil || len(alarms) != 0 {
		t.Errorf("alarms with space back: %+v %v", alarms, err)
	}
}

// At its quota the embedded etcd refuses writes (its NOSPACE alarm): the
// server goes read-only with the store-quota alarm, answering changes with
// 507, and once the space can be reclaimed (history compacted, database
// defragmented, alarm disarmed) it takes changes again by itself.
func TestStoreQuota(t *testing.T) {
	t.Parallel()
	s, c := startOn(t, t.TempDir(), Config{StoreQuotaBytes: 16 << 20})
	reclaimEvery := func(d time.Duration) {
		s.guards.mu.Lock()
		s.guards.reclaimAt, s.guards.reclaimEvery = time.Now(), d
		s.guards.mu.Unlock()
	}
	reclaimEvery(time.Hour) // not yet: first see the server read-only
	ctx := context.Background()
	val := strings.Repeat("x", 512<<10)
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		_, full = s.st.Client().Put(ctx, fmt.Sprintf("/test-fill/%04d", i), val)
	}
	if !store.IsNoSpace(full) {
		t.Fatalf("filling the store: %v, want etcd's no-space error", full)
	}
	var alarms []api.Alarm
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if alarms, _ = c.ListAlarms(ctx); len(alarms) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(alarms) != 1 || alarms[0].Name != api.AlarmStoreQuota {
		t.Fatalf("alarms %+v, want %s", alarms, api.AlarmStoreQuota)
	}
	_, err := c.CreateProject(ctx, api.ProjectCreate{Name: "at-quota"})
	if statusOfErr(err) != http.StatusInsufficientStorage || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("a change at the quota: %v, want 507 saying so", err)
	}
	if _, err := c.ListProjects(ctx, api.ListOptions{}); err != nil {
		t.Errorf("reading at the quota: %v", err)
	}

	// Deletes are what etcd still takes; then the guard reclaims.
	if _, err := s.st.Client().Delete(ctx, "/test-fill/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	reclaimEvery(0)
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err = c.CreateProject(ctx, api.ProjectCreate{Name: "after"}); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no change taken once space could be reclaimed: %v", err)
	}
	if alarms, err := c.ListAlarms(ctx); err != nil || len(alarms) != 0 {
		t.Errorf("alarms once reclaimed: %+v %v", alarms, err)
	}
}
