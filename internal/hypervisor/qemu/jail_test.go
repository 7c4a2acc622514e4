package qemu

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

func TestParseQEMUHelp(t *testing.T) {
	// Excerpts of qemu-system-x86_64 -help.
	v72 := `-chroot dir     chroot to dir just before starting the VM
-runas user     change to user id user just before starting the VM
                user can be numeric uid:gid instead
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
          [,spawn=allow|deny][,resourcecontrol=allow|deny]
`
	v91 := `-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]
                Set miscellaneous QEMU process lifecycle options:
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
`
	if got, want := parseQEMUHelp(v72), (qemuOptions{sandbox: true, runas: true, chroot: true}); got != want {
		t.Errorf("QEMU 7.2: %+v, want %+v", got, want)
	}
	if got, want := parseQEMUHelp(v91), (qemuOptions{sandbox: true, runWithUser: true, runWithChroot: true}); got != want {
		t.Errorf("QEMU 9.1: %+v, want %+v", got, want)
	}
	if got := parseQEMUHelp("-name string\n"); got != (qemuOptions{}) {
		t.Errorf("no confinement options: %+v", got)
	}
}

// TestQEMUStaysRootWhenItMust: a driver told to keep root, or given a user
// that does not exist, runs QEMU as root, still under its seccomp filter
// with set*id calls denied, and says why in its notes and its log.
func TestQEMUStaysRootWhenItMust(t *testing.T) {
	guest.RequireQEMU(t)
	requireConfinable(t)
	g := guest.Build(t)
	for _, tc := range []struct{ user, note string }{
		{"root", "QEMU runs as root: the driver was configured so"},
		{"pv-no-such-user", "QEMU runs as root: looking up user pv-no-such-user"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			if _, err := user.Lookup(tc.user); tc.user != "root" && err == nil {
				t.Fatalf("user %s exists", tc.user)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var logs bytes.Buffer
			d, err := New(Config{
				StateDir: t.TempDir(), User: tc.user,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				RunDir: filepath.Join(os.TempDir(), "polyvisor-test-run"),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			info, err := d.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c := info.Confinement
			if c.User != "" || !strings.Contains(strings.Join(c.Notes, "\n"), tc.note) || !strings.Contains(logs.String(), tc.note) {
				t.Fatalf("confinement %+v; log:\n%s\nwant no user and the note %q", c, logs.String(), tc.note)
			}
			if !strings.Contains(strings.Join(c.Notes, "\n"), "loopback is not closed") {
				t.Errorf("notes do not say the loopback stays open: %q", c.Notes)
			}
			uid := "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b" + strconv.Itoa(10+len(tc.user))
			cfg := guestConfig(g, "rooted", uid)
			cfg.NICs = nil
			h, err := d.Create(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cleanupVM(t, d, h)
			if err := d.Start(ctx, h, cfg); err != nil {
				t.Fatalf("Start: %v", err)
			}
			waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), time.Minute)
			st := procStatus(t, h.PID)
			if f := strings.Fields(st["Uid"]); len(f) == 0 || f[0] != "0" || st["Seccomp"] != "2" {
				t.Errorf("qemu: Uid %q Seccomp %s; want root under its seccomp filter", st["Uid"], st["Seccomp"])
			}
			cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/cmdline")
			if !bytes.Contains(cmdline, []byte("elevateprivileges=deny")) || bytes.Contains(cmdline, []byte("-runas")) {
				t.Errorf("command line: %q", cmdline)
			}
			if err := d.Destroy(ctx, h, false); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStartFailsWithoutPasst: a VM with a NIC does not start, and says why,
// when passt is missing; nothing is left running. One without a NIC does
// not need it.
func TestStartFailsWithoutPasst(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx := context.Background()
	d, err := New(Config{
		StateDir: t.TempDir(), PasstBinary: "/nonexistent/passt",
		RunDir: filepath.Join(os.TempDir(), "polyvisor-test-run"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	uid := "1d2c3b4a-5f6e-4a7b-8c9d-0e1f2a3b4c5d"
	cfg := guestConfig(g, "nonet", uid)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cleanupVM(t, d, h)
	err = d.Start(ctx, h, cfg)
	if err == nil || !strings.Contains(err.Error(), "passt is not installed") {
		t.Fatalf("Start without passt: %v", err)
	}
	if h.PID != 0 || qemuProcesses(t, uid) != 0 || h.Extra[extraCgroup] != "" {
		t.Fatalf("a failed start left pid %d, %d processes, cgroup %q", h.PID, qemuProcesses(t, uid), h.Extra[extraCgroup])
	}
	cfg.NICs = nil
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start without a NIC: %v", err)
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatal(err)
	}
}

// TestStartFailsWhenPasstExits: a passt that exits at once (here a binary
// that only fails) fails the start with what it said; QEMU does not stay.
func TestStartFailsWhenPasstExits(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx := context.Background()
	fake := filepath.Join(t.TempDir(), "passt")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'External interface not usable' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{StateDir: t.TempDir(), PasstBinary: fake, RunDir: filepath.Join(os.TempDir(), "polyvisor-test-run")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	uid := "2e3d4c5b-6a7f-4b8c-9d0e-1f2a3b4c5d6e"
	cfg := guestConfig(g, "deadnet", uid)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cleanupVM(t, d, h)
	err = d.Start(ctx, h, cfg)
	if err == nil || !strings.Contains(err.Error(), "passt of nic 0 exited") || !strings.Contains(err.Error(), "External interface not usable") {
		t.Fatalf("Start with a failing passt: %v", err)
	}
	if h.PID != 0 || qemuProcesses(t, uid) != 0 || h.Extra[extraCgroup] != "" {
		t.Fatalf("a failed start left pid %d, %d processes, cgroup %q", h.PID, qemuProcesses(t, uid), h.Extra[extraCgroup])
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatal(err)
	}
}
