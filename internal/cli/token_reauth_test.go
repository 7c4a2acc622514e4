package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// Logged in with a password, token create asks for it again (here on
// standard input), as the server wants for a token made with a session;
// without it the command fails saying what it needs.
func TestTokenCreateAsksForThePassword(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	root, err := client.New(client.Config{URL: "unix://" + rs.socket})
	if err != nil {
		t.Fatal(err)
	}
	const pw = "alice-Password-9"
	if _, err := root.CreateUser(context.Background(), api.UserCreate{Name: "alice", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, pw+"\n", "--server", rs.url, "--ca-file", rs.caFile, "login", "--user", "alice", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cli(t, "", "token", "create", "ci"); code == 0 || !strings.Contains(errOut, "password") {
		t.Errorf("token create with a session and no password to read: exit %d, %q: want a failure asking for the password", code, errOut)
	}
	out, errOut, code := cli(t, pw+"\n", "token", "create", "ci", "--password-stdin")
	if code != 0 || !strings.Contains(out, "pva_") {
		t.Fatalf("token create with the password on standard input: exit %d: %s %s", code, out, errOut)
	}
}
