package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/server"
)

// Local root on the socket is named in whoami as the audit log names it,
// and as the README says.
func TestLocalRootIsNamedAsTheAuditLogNamesIt(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	out, errOut, code := cli(t, "", rs.asRoot("whoami")...)
	if code != ExitOK || !strings.Contains(out, "uid:0 (local root on the server's socket") {
		t.Fatalf("whoami as local root: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli(t, "", rs.asRoot("project", "create", "web")...); code != ExitOK {
		t.Fatalf("project create: %s", errOut)
	}
	out, _, code = cli(t, "", rs.asRoot("audit", "list", "--actor", "uid:0", "--action", "project.create")...)
	if code != ExitOK || !strings.Contains(out, "uid:0") || !strings.Contains(out, "project/web") {
		t.Errorf("audit list --actor uid:0:\n%s", out)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "polyvisor audit list --actor uid:0") || strings.Contains(string(readme), "act as the first superadmin (user `admin`)") {
		t.Errorf("the README does not say that the audit log names local root uid:0")
	}
	// The admin token is user admin.
	out, _, _ = cli(t, "", "--server", rs.url, "--ca-file", rs.caFile, "--token", rs.srv.AdminToken(), "whoami")
	if !regexp.MustCompile(`Name:\s+admin\n`).MatchString(out) {
		t.Errorf("whoami with the admin token:\n%s", out)
	}
}
