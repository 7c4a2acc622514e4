package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestMigrationOutputIsTerminalSafe: a migration's record carries names,
// plans and errors from the source and the server (hostile until
// checked); printed, none of them drives the terminal.
func TestMigrationOutputIsTerminalSafe(t *testing.T) {
	var out bytes.Buffer
	printMigrationEvent(&out, map[string]string{}, api.VMMigrationVMStatus{Name: "web" + hostile, State: api.VMMigrationFailed, Phase: "stream", Disk: "root" + hostile, Error: "broke: " + hostile})
	a := &app{}
	m := &api.VMMigration{Meta: api.Meta{Name: "wave1"},
		Spec: api.VMMigrationSpec{Host: "h1" + hostile, Source: api.VMMigrationSource{Kind: "url", URL: "https://x/" + hostile}},
		Status: api.VMMigrationStatus{State: api.VMMigrationFailed, Error: "1 VM(s) failed: " + hostile, VMs: []api.VMMigrationVMStatus{{
			Name: "db" + hostile, SourceName: hostile, State: api.VMMigrationFailed, Notes: []string{hostile}, Error: hostile,
			Plan: &api.VMMigrationVMPlan{Conversions: []string{hostile}, Warnings: []string{hostile}, Blockers: []string{"EFI " + hostile}}}}}}
	if err := a.printMigration(&out, m); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"\x1b", "\x07", "\u009b", "\u202e", "\r", "\x7f"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("output holds %q:\n%s", bad, out.String())
		}
	}
	if !strings.Contains(out.String(), "broke: ") || !strings.Contains(out.String(), "cannot move: EFI") {
		t.Errorf("output lost its text:\n%s", out.String())
	}
}

// TestMigrationFlagsMakeTheRequest: the source flags become the
// migration's request; a local file is listed with its size for upload,
// a URL is the server's to fetch, a provider's VMs are ids with optional
// names; a wrong combination names the flag.
func TestMigrationFlagsMakeTheRequest(t *testing.T) {
	dir := t.TempDir()
	ova := dir + "/web.ova"
	if err := os.WriteFile(ova, make([]byte, 1234), 0o600); err != nil {
		t.Fatal(err)
	}
	f := sourceFlags{ova: ova, parallel: 4, disposition: "keep", networkMap: []string{"VM Network=user"}}
	req, up, err := f.request(true)
	if err != nil || req.Source.Kind != api.MigrationSourceUpload || req.Source.Format != "ova" || len(req.Source.Files) != 1 ||
		req.Source.Files[0].SizeBytes != 1234 || up["web.ova"] != ova || !req.Start || req.NetworkMap["VM Network"] != "user" {
		t.Fatalf("OVA file: %+v %v %v", req, up, err)
	}
	f = sourceFlags{ova: "https://example.com/web.ova"}
	if req, up, err = f.request(false); err != nil || req.Source.Kind != api.MigrationSourceURL || len(up) != 0 {
		t.Fatalf("OVA URL: %+v %v", req, err)
	}
	f = sourceFlags{provider: "vc1", vms: []string{"vm-42", "vm-43=db"}, disposition: "poweroff"}
	if req, _, err = f.request(false); err != nil || req.Source.VMs[1] != (api.VMMigrationSourceVM{ID: "vm-43", Name: "db"}) || req.SourceDisposition != "poweroff" {
		t.Fatalf("provider: %+v %v", req, err)
	}
	for _, bad := range []sourceFlags{{}, {provider: "vc1"}, {ova: ova, provider: "vc1", vms: []string{"x"}}, {ova: ova, networkMap: []string{"nomap"}}, {files: []string{dir}}} {
		if _, _, err := bad.request(false); err == nil {
			t.Errorf("flags %+v: no error", bad)
		}
	}
}
