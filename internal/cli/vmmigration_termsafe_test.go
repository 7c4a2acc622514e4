package cli

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// TestMigrationOutputIsTerminalSafe: a run's events, a migration's record
// and a plan carry names and errors from the source and the server
// (hostile until checked); printed, none of them drives the terminal.
func TestMigrationOutputIsTerminalSafe(t *testing.T) {
	var out bytes.Buffer
	printMigrationEvent(&out, map[string]string{}, api.VMMigrationVMStatus{Name: "web" + hostile, State: api.VMMigrationFailed, Phase: "stream", Disk: "root" + hostile, Error: "broke: " + hostile})
	a := &app{}
	m := &api.VMMigration{Meta: api.Meta{Name: "wave1"}, Spec: api.VMMigrationSpec{Host: "h1" + hostile, Source: "ova" + hostile},
		Status: api.VMMigrationStatus{State: api.VMMigrationFailed, Error: "1 VM(s) failed: " + hostile}}
	if err := a.printMigration(&out, m); err != nil {
		t.Fatal(err)
	}
	plan := v2v.Plan{VMs: []v2v.VMPlan{{Name: "db" + hostile, Conversions: []string{hostile}, Warnings: []string{hostile}, Blockers: []string{"EFI " + hostile}}}}
	a.print(&out, nil, func(tw *tabwriter.Writer) { printPlan(tw, plan) })
	for _, bad := range []string{"\x1b", "\x07", "\u009b", "\u202e", "\r", "\x7f"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("output holds %q:\n%s", bad, out.String())
		}
	}
	if !strings.Contains(out.String(), "broke: ") || !strings.Contains(out.String(), "cannot move: EFI") {
		t.Errorf("output lost its text:\n%s", out.String())
	}
}
