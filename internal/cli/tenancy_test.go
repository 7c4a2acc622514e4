package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                         "0s",
		0:                                    "0s",
		45 * time.Second:                     "45s",
		12*time.Minute + 30*time.Second:      "12m",
		5 * time.Hour:                        "5h",
		72*time.Hour - time.Second:           "71h59m",
		99*time.Hour + 59*time.Minute:        "99h59m",
		100 * time.Hour:                      "4d4h",
		30 * 24 * time.Hour:                  "30d",
		30*24*time.Hour + 12*time.Hour:       "30d12h",
		24*time.Hour + 30*time.Minute:        "24h30m",
		23*time.Hour + 59*time.Minute:        "23h59m",
		time.Hour + 59*time.Second:           "1h",
		59*time.Minute + 59*time.Second:      "59m",
		time.Minute - time.Nanosecond:        "59s",
		2*time.Minute + 999*time.Millisecond: "2m",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestLeaseStatus(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	created := now.Add(-time.Second)
	l := &api.Lease{ExpiresAt: created.Add(72 * time.Hour), DeleteAt: created.Add(96 * time.Hour)}
	if got, want := leaseStatus(l, now), "expires in 71h59m, deleted 24h later"; got != want {
		t.Errorf("running: %q, want %q", got, want)
	}
	// Past the expiry, before the stop was issued.
	if got, want := leaseStatus(l, l.ExpiresAt.Add(time.Minute)), "expired, stopping; deleted in 23h59m"; got != want {
		t.Errorf("expired: %q, want %q", got, want)
	}
	l.StoppedAt = l.ExpiresAt.Add(2 * time.Second)
	if got, want := leaseStatus(l, l.ExpiresAt.Add(time.Hour)), "expired, stopped; deleted in 23h"; got != want {
		t.Errorf("stopped: %q, want %q", got, want)
	}
	if got, want := leaseStatus(l, l.DeleteAt.Add(time.Second)), "expired, stopped; being deleted"; got != want {
		t.Errorf("past deletion: %q, want %q", got, want)
	}
	if got := leaseStatus(nil, now); got != "-" {
		t.Errorf("no lease: %q", got)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"72h": 72 * time.Hour, "90m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "0": 0, "0d": 0, "1h30m": 90 * time.Minute,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "-1d", "3 days", "h"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
	var d time.Duration
	if err := (durationValue{&d}).Set("-1h"); err == nil {
		t.Errorf("a negative duration flag was accepted")
	}
}

func ptr(v int64) *int64 { return &v }

func TestApplyQuotaChanges(t *testing.T) {
	cur := api.Quota{VCPUs: ptr(16), MemoryMiB: ptr(65536), DiskMiB: ptr(1 << 20)}
	got, err := applyQuotaChanges(cur, quotaChanges{VCPUs: ptr(32), VMs: ptr(10), Unset: []string{"disk"}})
	if err != nil {
		t.Fatal(err)
	}
	want := api.Quota{VCPUs: ptr(32), MemoryMiB: ptr(65536), VMs: ptr(10)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", show(got), show(want))
	}
	// The current quota is left alone, and shares nothing with the result.
	if *cur.VCPUs != 16 || cur.DiskMiB == nil || cur.VMs != nil {
		t.Errorf("the current quota changed: %+v", show(cur))
	}
	*got.MemoryMiB = 1
	if *cur.MemoryMiB != 65536 {
		t.Errorf("the result aliases the current quota")
	}

	// --unset takes comma lists, repeats and "all".
	got, err = applyQuotaChanges(cur, quotaChanges{Unset: []string{"vcpus, memory", "VMs"}})
	if err != nil || !reflect.DeepEqual(got, api.Quota{DiskMiB: ptr(1 << 20)}) {
		t.Errorf("unset: %+v, %v", show(got), err)
	}
	got, err = applyQuotaChanges(cur, quotaChanges{Unset: []string{"all"}})
	if err != nil || got != (api.Quota{}) {
		t.Errorf("unset all: %+v, %v", show(got), err)
	}
	// Setting to zero is a limit, not a removal.
	got, err = applyQuotaChanges(api.Quota{}, quotaChanges{VMs: ptr(0)})
	if err != nil || got.VMs == nil || *got.VMs != 0 {
		t.Errorf("zero: %+v, %v", show(got), err)
	}

	for _, tc := range []struct {
		ch   quotaChanges
		flag string
	}{
		{quotaChanges{Unset: []string{"cpu,ram"}}, "--unset"},
		{quotaChanges{VCPUs: ptr(4), Unset: []string{"vcpus"}}, "--vcpus"},
		{quotaChanges{MemoryMiB: ptr(1024), Unset: []string{"all"}}, "--memory"},
		{quotaChanges{VMs: ptr(-1)}, "--vms"},
	} {
		_, err := applyQuotaChanges(cur, tc.ch)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: error %v does not name %s", tc.ch, err, tc.flag)
		}
		if _, ok := err.(*usageError); !ok {
			t.Errorf("%+v: %T is no usage error", tc.ch, err)
		}
	}
	if !(quotaChanges{}).empty() || (quotaChanges{Unset: []string{"disk"}}).empty() {
		t.Errorf("empty() is wrong")
	}
}

// show makes a quota printable.
func show(q api.Quota) map[string]any {
	m := map[string]any{}
	for k, p := range map[string]*int64{"vcpus": q.VCPUs, "memory": q.MemoryMiB, "disk": q.DiskMiB, "vms": q.VMs} {
		if p != nil {
			m[k] = *p
		}
	}
	return m
}

func TestQuotaRows(t *testing.T) {
	rows := quotaRows(api.Quota{VCPUs: ptr(16), MemoryMiB: ptr(8192), VMs: ptr(2), ImageStorageMiB: ptr(1024)},
		api.Usage{VCPUs: 4, MemoryMiB: 2048, DiskMiB: 10240, VMs: 3, ImageStorageMiB: 300})
	want := [][4]string{
		{"vcpus", "4", "16", "12"},
		{"memory", "2G", "8G", "6G"},
		{"disk", "10G", "unlimited", "-"},
		{"vms", "3", "2", "0 (over by 1)"},
		{"image-storage", "300M", "1G", "724M"},
		{"networks", "0", "unlimited", "-"},
		{"ports", "0", "unlimited", "-"},
		{"floating-ips", "0", "unlimited", "-"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
}

func TestAuditFlagsQuery(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	q, err := auditFlags{Since: "1h", Until: "2025-06-01T11:30:00Z", Actor: "alice", Resource: "vm/web1",
		Action: "vm.start", Outcome: "denied", Limit: 50}.query(now)
	if err != nil {
		t.Fatal(err)
	}
	want := api.AuditQuery{Since: now.Add(-time.Hour), Until: time.Date(2025, 6, 1, 11, 30, 0, 0, time.UTC),
		Actor: "alice", Resource: "vm/web1", Action: "vm.start", Outcome: "denied", Limit: 50}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("got %+v\nwant %+v", q, want)
	}
	if q, err := (auditFlags{Since: "7d"}).query(now); err != nil || !q.Since.Equal(now.Add(-7*24*time.Hour)) {
		t.Errorf("7d: %v, %v", q.Since, err)
	}
	if q, err := (auditFlags{Since: "2025-05-31T10:00:00.5+02:00"}).query(now); err != nil ||
		!q.Since.Equal(time.Date(2025, 5, 31, 8, 0, 0, 5e8, time.UTC)) {
		t.Errorf("RFC 3339 with offset: %v, %v", q.Since, err)
	}

	// The project: every project unless --project is given, or
	// --all-projects=false asks for the one in force.
	for _, tc := range []struct {
		f    auditFlags
		want string
	}{
		{auditFlags{Project: "web"}, ""},
		{auditFlags{Project: "web", ProjectGiven: true}, "web"},
		{auditFlags{Project: "web", AllProjectsSet: true}, "web"},
		{auditFlags{AllProjectsSet: true}, api.DefaultProject},
		{auditFlags{Project: "web", AllProjects: true, AllProjectsSet: true}, ""},
	} {
		q, err := tc.f.query(now)
		if err != nil || q.Project != tc.want {
			t.Errorf("%+v: project %q, %v; want %q", tc.f, q.Project, err, tc.want)
		}
	}

	for _, tc := range []struct {
		f    auditFlags
		flag string
	}{
		{auditFlags{Since: "yesterday"}, "--since"},
		{auditFlags{Until: "-1h"}, "--until"},
		{auditFlags{Since: "1h", Until: "2h"}, "--since"},
		{auditFlags{Outcome: "ok"}, "--outcome"},
		{auditFlags{Limit: -1}, "--limit"},
		{auditFlags{Resource: "vm/"}, "--resource"},
		{auditFlags{AllProjects: true, AllProjectsSet: true, ProjectGiven: true, Project: "web"}, "--all-projects"},
	} {
		_, err := tc.f.query(now)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: error %v does not name %s", tc.f, err, tc.flag)
		}
	}
}

func TestEditConfigFileKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "polyvisor", "config.yaml")
	// A missing file and directory are made, private.
	if err := editConfigFile(path, configEdit{set: map[string]string{"token": "tok-1"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, mode %v", err, st.Mode().Perm())
	}
	if cfg, err := loadConfigFile(path, true); err != nil || cfg != (Config{Token: "tok-1"}) {
		t.Errorf("new file: %+v, %v", cfg, err)
	}

	orig := "# Polyvisor\nserver: https://pv.example.com:8443 # prod\nca-file: ca.pem\ntoken: old\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := editConfigFile(path, configEdit{set: map[string]string{"token": "new", "project": "web"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	for _, s := range []string{"# Polyvisor", "server: https://pv.example.com:8443 # prod", "ca-file: ca.pem", "token: new", "project: web"} {
		if !strings.Contains(got, s) {
			t.Errorf("the file lacks %q:\n%s", s, got)
		}
	}
	if strings.Index(got, "server:") > strings.Index(got, "token:") || strings.Contains(got, "old") {
		t.Errorf("keys moved or the old token stayed:\n%s", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	cfg, err := loadConfigFile(path, true)
	want := Config{Server: "https://pv.example.com:8443", CAFile: filepath.Join(filepath.Dir(path), "ca.pem"), Token: "new", Project: "web"}
	if err != nil || cfg != want {
		t.Errorf("read back %+v, %v; want %+v", cfg, err, want)
	}

	// Removing the token keeps the rest; removing a missing key is fine.
	if err := editConfigFile(path, configEdit{unset: []string{"token", "nope"}}); err != nil {
		t.Fatal(err)
	}
	cfg, err = loadConfigFile(path, true)
	want.Token = ""
	if err != nil || cfg != want {
		t.Errorf("after unset: %+v, %v; want %+v", cfg, err, want)
	}

	// A file that is not a mapping is not overwritten.
	if err := os.WriteFile(path, []byte("- a\n- b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := editConfigFile(path, configEdit{set: map[string]string{"token": "x"}}); err == nil {
		t.Errorf("a list was overwritten")
	}
	// Nor one that does not parse.
	if err := os.WriteFile(path, []byte("server: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := editConfigFile(path, configEdit{set: map[string]string{"token": "x"}}); err == nil {
		t.Errorf("a broken file was overwritten")
	}
}

func TestEditConfigFileThroughASymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	if err := os.WriteFile(real, []byte("server: unix:///run/pv.sock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := editConfigFile(link, configEdit{set: map[string]string{"project": "ops"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced")
	}
	if cfg, err := loadConfigFile(real, true); err != nil || cfg.Project != "ops" || cfg.Server != "unix:///run/pv.sock" {
		t.Errorf("target: %+v, %v", cfg, err)
	}
}
