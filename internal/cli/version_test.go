package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/server"
	"github.com/polyvisor/polyvisor/internal/version"
)

func TestVersionOfClientAndServer(t *testing.T) {
	isolate(t)
	old := version.Commit
	t.Cleanup(func() { version.Commit = old })
	version.Commit = "0123456789abcdef0123456789abcdef01234567"
	rs := startRealServer(t, server.Config{})

	out, errOut, code := cli(t, "", rs.asRoot("version")...)
	want := "0.1.0-dev (commit 0123456789ab, " + version.Get().GoVersion + ", " + version.Get().Platform + ")"
	if code != ExitOK || strings.Count(out, want) != 2 || !strings.Contains(out, "Client:") || !strings.Contains(out, "Server:") ||
		!strings.Contains(out, "at unix://"+rs.socket) {
		t.Errorf("version: exit %d, want %q twice:\n%s%s", code, want, out, errOut)
	}

	// Over TLS, as a signed-in user, in JSON.
	out, errOut, code = cli(t, "", "--server", rs.url, "--ca-file", rs.caFile, "--token", rs.srv.AdminToken(), "-o", "json", "version")
	var rep versionReport
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Server == nil || *rep.Server != version.Get() ||
		rep.Client != version.Get() || rep.ServerURL != rs.url || rep.ServerError != "" {
		t.Errorf("version -o json: exit %d, %+v\n%s%s", code, rep, out, errOut)
	}
	if !strings.Contains(out, `"goVersion"`) || !strings.Contains(out, `"commit": "0123456789abcdef0123456789abcdef01234567"`) {
		t.Errorf("version -o json lacks the Go version or the whole commit:\n%s", out)
	}

	// A server that cannot be asked is reported; the client's version is
	// still printed and the command succeeds.
	out, _, code = cli(t, "", "--server", rs.url, "-o", "json", "version")
	rep = versionReport{}
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Server != nil || !strings.Contains(rep.ServerError, "unknown authority") {
		t.Errorf("version without the CA: exit %d\n%s", code, out)
	}
	out, _, code = cli(t, "", "--server", rs.url, "version")
	if code != ExitOK || !strings.Contains(out, "Server:  not known:") || !strings.Contains(out, "Hint:") || !strings.Contains(out, "--ca-file") {
		t.Errorf("version without the CA: exit %d\n%s", code, out)
	}
	out, _, code = cli(t, "", "--server", "unix://"+filepath.Join(t.TempDir(), "none.sock"), "version", "--client")
	if code != ExitOK || !strings.Contains(out, "Client:") || strings.Contains(out, "Server:") {
		t.Errorf("version --client: exit %d\n%s", code, out)
	}
}
