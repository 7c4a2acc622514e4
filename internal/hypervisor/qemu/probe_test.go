package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/devns"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// The probe guest itself is checked under TCG, which every machine has: it
// must print both markers and leave QEMU through isa-debug-exit.
func TestProbeGuestRunsUnderTCG(t *testing.T) {
	guest.RequireQEMU(t)
	c, _ := runProbe(context.Background(), "qemu-system-x86_64", AccelTCG, 10*time.Second)
	if c.Accel != AccelTCG || !strings.Contains(c.Reason, "real and protected mode") {
		t.Fatalf("the probe guest did not run under tcg: %+v", c)
	}
}

// What the probe decides on this machine must be what boots: when it says
// kvm, the test guest boots under kvm; when it says tcg, it says why.
func TestDecideAccelAgreesWithABoot(t *testing.T) {
	g := guest.Build(t)
	c, err := DecideAccel(context.Background(), ProbeConfig{Want: AccelAuto, QEMUBinary: "qemu-system-x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this machine: %+v", c)
	if c.Reason == "" {
		t.Fatal("no reason given for the accelerator")
	}
	d, err := New(Config{StateDir: t.TempDir(), Accel: c.Accel, RunDir: filepath.Join(os.TempDir(), "polyvisor-test-run")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Accel() != c.Accel {
		t.Fatalf("driver runs %s, asked %s", d.Accel(), c.Accel)
	}
	ctx := context.Background()
	cfg := guestConfig(g, "probe-agrees", "0d6a8f0e-2b1a-4c3e-9d7f-5a6b7c8d9e01")
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cleanupVM(t, d, h)
	t.Cleanup(func() { d.Destroy(context.Background(), h, false) })
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), 60*time.Second)
}

func TestDecideAccelAsked(t *testing.T) {
	c, err := DecideAccel(context.Background(), ProbeConfig{Want: AccelTCG})
	if err != nil || c.Accel != AccelTCG || !strings.Contains(c.Reason, "--accel tcg") {
		t.Fatalf("tcg asked: %+v, %v", c, err)
	}
	if _, err := DecideAccel(context.Background(), ProbeConfig{Want: "hvf"}); err == nil || !strings.Contains(err.Error(), `--accel: unknown accelerator "hvf"`) {
		t.Fatalf("unknown accelerator: %v", err)
	}
}

// probeChildEnv makes the test binary, run again inside a private /dev,
// print what DecideAccel answers there (probeChild) instead of testing.
const probeChildEnv = "POLYVISOR_PROBE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(probeChildEnv) != "" {
		probeChild()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type probeChildResult struct {
	Auto    AccelChoice `json:"auto"`
	KVM     AccelChoice `json:"kvm"`
	KVMErr  string      `json:"kvmErr"`
	Elapsed string      `json:"elapsed"`
}

// probeChild prints, on a line starting PROBE-RESULT, what DecideAccel
// answers with kvm left to it and with kvm asked for.
func probeChild() {
	start := time.Now()
	var r probeChildResult
	r.Auto, _ = DecideAccel(context.Background(), ProbeConfig{Want: AccelAuto, QEMUBinary: "qemu-system-x86_64"})
	var err error
	r.KVM, err = DecideAccel(context.Background(), ProbeConfig{Want: AccelKVM, QEMUBinary: "qemu-system-x86_64"})
	if err != nil {
		r.KVMErr = err.Error()
	}
	r.Elapsed = time.Since(start).String()
	raw, _ := json.Marshal(r)
	os.Stdout.Write(append([]byte("PROBE-RESULT "), append(raw, '\n')...))
}

// On a machine without /dev/kvm, and on one whose /dev/kvm opens but runs
// no guest, the probe must answer tcg and say why; asking for kvm there is
// an error naming the cause.
func TestDecideAccelOnBrokenAndMissingKVM(t *testing.T) {
	guest.RequireQEMU(t)
	for _, tc := range []struct {
		kvm    devns.KVM
		reason string
	}{
		{devns.NoKVM, "/dev/kvm does not exist"},
		{devns.BrokenKVM, "the probe guest did not run under kvm"},
	} {
		t.Run(string(tc.kvm), func(t *testing.T) {
			cmd := devns.Command(t, tc.kvm, os.Args[0])
			cmd.Env = append(cmd.Env, probeChildEnv+"=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("probe in a private /dev: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`PROBE-RESULT (.*)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("no result from the probe:\n%s", out)
			}
			var r probeChildResult
			if err := json.Unmarshal(m[1], &r); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %+v", tc.kvm, r)
			if r.Auto.Accel != AccelTCG || !strings.Contains(r.Auto.Reason, tc.reason) {
				t.Errorf("auto: got %+v, want tcg because %q", r.Auto, tc.reason)
			}
			if !strings.Contains(r.KVMErr, "kvm was asked for (--accel kvm) but does not work on this host: "+tc.reason) {
				t.Errorf("kvm asked: error %q does not name the cause %q", r.KVMErr, tc.reason)
			}
		})
	}
}

// fakeQEMU writes a script that stands in for QEMU to act out the ways a
// broken KVM fails, which this machine's QEMU cannot show.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The decision logic for the failures seen on broken nested KVM: a vCPU
// stuck at the reset vector (QEMU runs and prints nothing), an emulation
// failure, a guest that dies after real mode; and the per-boot cache.
func TestProbeFailuresAndCache(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, script, want string }{
		{"stuck at reset vector", "exec sleep 30", "no answer within 900ms, it never left the reset vector"},
		{"emulation failure", "echo 'KVM internal error. Suberror: 1' >&2; echo 'emulation failure' >&2; exec sleep 30", "KVM internal error (KVM internal error. Suberror: 1; emulation failure)"},
		{"dies after real mode", "printf 'PVPROBE-16\\n'; exec sleep 30", "no answer within 900ms, it stopped after real mode"},
		{"qemu refuses", "echo 'qemu-system-x86_64: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device' >&2; exit 1", "qemu exited with status 1: qemu-system-x86_64: -accel kvm: failed to initialize kvm"},
		{"works", "printf 'PVPROBE-16\\nPVPROBE-32\\n'; exit 33", "a probe guest ran under kvm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, _ := DecideAccel(context.Background(), ProbeConfig{Want: AccelAuto, QEMUBinary: fakeQEMU(t, tc.script), Device: dev, Timeout: 300 * time.Millisecond})
			if !strings.Contains(c.Reason, tc.want) {
				t.Fatalf("reason %q, want it to say %q", c.Reason, tc.want)
			}
			if wantKVM := tc.name == "works"; (c.Accel == AccelKVM) != wantKVM {
				t.Fatalf("accel %s for %s", c.Accel, tc.name)
			}
			// A liveness bound: the fake QEMU sleeps 30 s, the probe's
			// timeout is 300 ms.
			if el := time.Since(start); el > 15*time.Second {
				t.Fatalf("the probe was not bounded: %s", el)
			}
		})
	}

	t.Run("cached per boot and binary", func(t *testing.T) {
		cache := filepath.Join(t.TempDir(), "accel.json")
		counter := filepath.Join(t.TempDir(), "runs")
		bin := fakeQEMU(t, "echo run >>"+counter+"; printf 'PVPROBE-16\\nPVPROBE-32\\n'; exit 33")
		cfg := ProbeConfig{QEMUBinary: bin, Device: dev, CacheFile: cache}
		for range 3 {
			if c, _ := DecideAccel(context.Background(), cfg); c.Accel != AccelKVM {
				t.Fatalf("got %+v", c)
			}
		}
		if runs, _ := os.ReadFile(counter); strings.Count(string(runs), "run") != 1 {
			t.Fatalf("the probe ran %d times, want once", strings.Count(string(runs), "run"))
		}
		// A silent guest is asked a second time, with more time, before
		// the answer is kept; a probe cut short is never kept.
		cfg.QEMUBinary = fakeQEMU(t, "echo run >>"+counter+"; exec sleep 30")
		cfg.Timeout = 100 * time.Millisecond
		os.Remove(counter)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if c, _ := DecideAccel(ctx, cfg); c.Accel != AccelTCG {
			t.Fatalf("an interrupted probe: %+v", c)
		}
		cancel()
		if raw, err := os.ReadFile(cache); err != nil || !strings.Contains(string(raw), `"kvm"`) {
			t.Fatalf("an interrupted probe replaced the kept answer: %s %v", raw, err)
		}
		os.Remove(cache)
		os.Remove(counter)
		if c, _ := DecideAccel(context.Background(), cfg); c.Accel != AccelTCG || !strings.Contains(c.Reason, "no answer within 300ms") {
			t.Fatalf("a silent guest: %+v", c)
		}
		if runs, _ := os.ReadFile(counter); strings.Count(string(runs), "run") != 2 {
			t.Fatalf("a silent guest was asked %d times, want twice", strings.Count(string(runs), "run"))
		}
		if c, _ := DecideAccel(context.Background(), cfg); !strings.Contains(c.Reason, "probed earlier in this boot") {
			t.Fatalf("a second silence was not kept: %+v", c)
		}
		// Another QEMU binary is probed again.
		cfg.QEMUBinary = fakeQEMU(t, "echo run >>"+counter+"; exec sleep 30")
		cfg.Timeout = 200 * time.Millisecond
		if c, _ := DecideAccel(context.Background(), cfg); c.Accel != AccelTCG {
			t.Fatalf("a new binary used the old answer: %+v", c)
		}
	})
}

// A non-root agent's run dir in the shared temp dir is used only when it
// is its own and closed to others: one another user made first (with
// socket links or a probe answer of their choosing) is not.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	mine := filepath.Join(base, "mine")
	if err := privateDir(mine); err != nil {
		t.Fatalf("a new dir: %v", err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(open); err == nil {
		t.Fatal("a dir others may write was accepted")
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(mine, link); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(link); err == nil {
		t.Fatal("a symlink was accepted")
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(base, "theirs")
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := privateDir(theirs); err == nil {
			t.Fatal("a dir of another user was accepted")
		}
	}
}
