package libvirt

import (
	"strings"
	"testing"
)

// The probe itself, on the real libvirtd: a qemu (TCG) domain runs on every
// machine, so the probe must see its vCPU leave the reset vector, and
// leave no domain behind.
func TestProbeDomainRunsUnderTCG(t *testing.T) {
	requireDaemon(t)
	l := rawConn(t, systemURI)
	if err := probeDomain(l, "x86_64", "qemu"); err != nil {
		t.Fatalf("the probe domain did not run under qemu: %v", err)
	}
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range doms {
		if strings.HasPrefix(d.Name, "polyvisor-accel-probe-") {
			t.Fatalf("the probe left its domain %s behind", d.Name)
		}
	}
}

// What the provider decides on this machine comes with a reason, and kvm
// only with the evidence of a probe domain that ran.
func TestDecideVirtTypeOnThisHost(t *testing.T) {
	requireDaemon(t)
	l := rawConn(t, systemURI)
	for _, types := range []map[string]bool{{"kvm": true, "qemu": true}, {"qemu": true}} {
		d := decideVirtType(l, "x86_64", types)
		t.Logf("offered %v: %s because %s", types, d.virtType, d.reason)
		switch {
		case d.reason == "":
			t.Errorf("offered %v: no reason for %s", types, d.virtType)
		case d.virtType == "kvm" && d.reason != "a probe domain ran under kvm":
			t.Errorf("kvm chosen without a probe: %s", d.reason)
		case !types["kvm"] && d.virtType != "qemu":
			t.Errorf("offered only qemu, chose %s", d.virtType)
		case !types["kvm"] && !strings.Contains(d.reason, "offers no kvm domains"):
			t.Errorf("reason %q", d.reason)
		}
	}
	// A domain type libvirt cannot run here fails the probe with the
	// daemon's own words, and the decision falls back to qemu.
	if err := probeDomain(l, "x86_64", "xen"); err == nil || !strings.Contains(err.Error(), "starting it") {
		t.Fatalf("a xen probe on a qemu daemon: %v", err)
	}
}

// The registers QEMU shows for a vCPU stuck at the reset vector (what a
// broken nested KVM leaves) and for one that ran its firmware.
func TestAtResetVector(t *testing.T) {
	stuck := "CPU#0\nEAX=00000000 EBX=00000000 ECX=00000000 EDX=000806f8\nEIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\nES =0000 00000000 0000ffff 00009300\nCS =f000 ffff0000 0000ffff 00009b00\n"
	ran := "CPU#0\nEIP=0000b7b9 EFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\nCS =f000 000f0000 0000ffff 00009b00\n"
	jumped := "EIP=0000fff0 EFL=00000002\nCS =f000 000f0000 0000ffff 00009b00\n" // same IP, other base: it ran
	for regs, want := range map[string]bool{stuck: true, ran: false, jumped: false, "": true, "garbage": true} {
		if got := atResetVector(regs); got != want {
			t.Errorf("atResetVector(%q) = %v, want %v", regs, got, want)
		}
	}
	if accelOf("qemu") != "tcg" || accelOf("kvm") != "kvm" {
		t.Fatal("accelerator names")
	}
}
