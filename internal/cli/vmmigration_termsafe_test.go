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

// TestVSphereURLTakesNoPassword: a vSphere URL holding a password is
// refused (a plan stores its URL; an old plan stored it as xxxxx, which
// then logged in with that), and the password comes from
// POLYVISOR_VSPHERE_PASSWORD, an error naming it when it is not set.
func TestVSphereURLTakesNoPassword(t *testing.T) {
	t.Setenv("POLYVISOR_VSPHERE_PASSWORD", "")
	for _, tc := range []struct{ uri, want string }{
		{"https://admin:s3cret@vc1/sdk", "holds a password"},
		{"https://admin:xxxxx@vc1/sdk", "holds a password"},
		{"https://vc1/sdk", "names no user"},
		{"https://admin@vc1/sdk", "POLYVISOR_VSPHERE_PASSWORD is not set"},
	} {
		_, err := vsphereURL(tc.uri)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("vsphereURL(%s): %v, want an error saying %q (and no password)", tc.uri, err, tc.want)
		}
	}
	t.Setenv("POLYVISOR_VSPHERE_PASSWORD", "from-env")
	u, err := vsphereURL("https://admin@vc1/sdk")
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); pw != "from-env" || u.User.Username() != "admin" {
		t.Errorf("URL %s: want admin with the password of POLYVISOR_VSPHERE_PASSWORD", u.Redacted())
	}
}
