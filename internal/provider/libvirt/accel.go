package libvirt

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// A host may offer kvm domains that cannot run a guest: /dev/kvm opens
// (so libvirt lists kvm) but its vCPUs never leave the reset vector, or
// QEMU stops with a KVM internal error. The provider creates kvm domains
// only when libvirt's domain capabilities accept kvm for the architecture
// AND a probe domain ran under it; otherwise it creates qemu (TCG) domains.

// accelProbeTimeout bounds the probe domain. Under a working KVM its vCPU
// leaves the reset vector at once.
const accelProbeTimeout = 1500 * time.Millisecond

// virtDecision is the domain type chosen for creates, and why.
type virtDecision struct {
	virtType, reason string
}

// decideVirtType chooses among the domain types the capabilities list for
// arch.
func decideVirtType(l *golibvirt.Libvirt, arch string, types map[string]bool) virtDecision {
	fallback := func(why string) virtDecision {
		if types["qemu"] {
			return virtDecision{"qemu", why}
		}
		for name := range types {
			return virtDecision{name, why}
		}
		return virtDecision{"", why}
	}
	if !types["kvm"] {
		return fallback("libvirt offers no kvm domains for " + arch + " on this host")
	}
	if _, err := l.ConnectGetDomainCapabilities(nil, golibvirt.OptString{arch}, nil, golibvirt.OptString{"kvm"}, 0); err != nil {
		return fallback("libvirt's domain capabilities refuse kvm: " + firstLine(err.Error()))
	}
	if err := probeDomain(l, arch, "kvm"); err != nil {
		return fallback("a probe domain did not run under kvm: " + err.Error())
	}
	return virtDecision{"kvm", "a probe domain ran under kvm"}
}

// probeDomain starts a small transient domain of virtType with no disks
// (its firmware starts and finds nothing to boot) and checks that its vCPU
// ran: QEMU must not report an internal error, and the instruction
// pointer must leave the reset vector. The domain is destroyed after; it
// is also marked to go with the connection should Polyvisor die first.
func probeDomain(l *golibvirt.Libvirt, arch, virtType string) error {
	if !archRE.MatchString(arch) || !archRE.MatchString(virtType) {
		return fmt.Errorf("not probing odd names %q/%q", arch, virtType)
	}
	name := "polyvisor-accel-probe-" + randomHex(4)
	dom, err := l.DomainCreateXML(probeDomainXML(name, arch, virtType), golibvirt.DomainStartAutodestroy)
	if err != nil {
		return fmt.Errorf("starting it: %s", firstLine(classify(err).Error()))
	}
	defer l.DomainDestroy(dom)
	deadline := time.Now().Add(accelProbeTimeout)
	for {
		state, reason, err := l.DomainGetState(dom, 0)
		if err != nil {
			return fmt.Errorf("reading its state: %s", firstLine(classify(err).Error()))
		}
		if golibvirt.DomainState(state) != golibvirt.DomainRunning {
			return fmt.Errorf("it stopped running (%s)", describeState(golibvirt.DomainState(state), reason))
		}
		status, regs, err := probeMonitor(l, dom)
		if err != nil {
			return err
		}
		if status != "" && status != "running" {
			return fmt.Errorf("QEMU says its status is %s", status)
		}
		if regs != "" && !atResetVector(regs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("its vCPU did not leave the reset vector within %s", accelProbeTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// probeMonitor asks the domain's QEMU for its run status and the first
// vCPU's registers. A driver without a QEMU monitor yields empty strings.
func probeMonitor(l *golibvirt.Libvirt, dom golibvirt.Domain) (status, regs string, err error) {
	raw, err := l.QEMUDomainMonitorCommand(dom, `{"execute":"query-status"}`, 0)
	if err != nil {
		if isCode(err, golibvirt.ErrNoSupport) || isCode(err, golibvirt.ErrOperationUnsupported) {
			return "", "", nil
		}
		return "", "", fmt.Errorf("asking its QEMU for its status: %s", firstLine(classify(err).Error()))
	}
	var st struct {
		Return struct {
			Status string `json:"status"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return "", "", fmt.Errorf("reading its QEMU status %q: %w", raw, err)
	}
	regs, err = l.QEMUDomainMonitorCommand(dom, "info registers", 1) // 1: a human monitor command
	if err != nil {
		return "", "", fmt.Errorf("asking its QEMU for the vCPU's registers: %s", firstLine(classify(err).Error()))
	}
	return st.Return.Status, regs, nil
}

var (
	archRE = regexp.MustCompile(`^[a-z0-9_]+$`)
	eipRE  = regexp.MustCompile(`\bEIP=([0-9a-fA-F]+)`)
	csRE   = regexp.MustCompile(`\bCS =([0-9a-fA-F]+) ([0-9a-fA-F]+)`)
)

// atResetVector tells whether QEMU's "info registers" shows the first
// vCPU still at the x86 reset vector (CS base 0xffff0000, IP 0xfff0), or
// shows no registers it can read.
func atResetVector(regs string) bool {
	eip, cs := eipRE.FindStringSubmatch(regs), csRE.FindStringSubmatch(regs)
	if eip == nil || cs == nil {
		return true
	}
	return strings.EqualFold(strings.TrimLeft(eip[1], "0"), "fff0") && strings.EqualFold(strings.TrimLeft(cs[2], "0"), "ffff0000")
}

func probeDomainXML(name, arch, virtType string) string {
	machine := ""
	if arch == "x86_64" || arch == "i686" {
		machine = " machine='q35'"
	}
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='%s'%s>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>preserve</on_crash>
  <devices><memballoon model='none'/></devices>
</domain>`, virtType, name, arch, machine)
}

func describeState(s golibvirt.DomainState, reason int32) string {
	switch s {
	case golibvirt.DomainPaused:
		if golibvirt.DomainPausedReason(reason) == golibvirt.DomainPausedCrashed {
			return "paused after a crash"
		}
		return fmt.Sprintf("paused, reason %d", reason)
	case golibvirt.DomainCrashed:
		return "crashed"
	case golibvirt.DomainShutoff:
		return "shut off"
	}
	return fmt.Sprintf("state %d", s)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// accelOf names a domain type as Polyvisor's hosts name accelerators.
func accelOf(virtType string) string {
	if virtType == "qemu" {
		return "tcg"
	}
	return virtType
}
