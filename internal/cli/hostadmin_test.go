package cli

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestHostAdminCommandsOnARealServer runs `polyvisor host cordon |
// uncordon | revoke | delete` against a real server with a joined host.
func TestHostAdminCommandsOnARealServer(t *testing.T) {
	isolate(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	s, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "https://" + s.Addr().String()
	jt, err := s.MintJoinToken(ctx, "h7")
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(client.Config{URL: url, CAFile: s.CAFile()})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := anon.Register(ctx, api.AgentRegister{JoinToken: jt, Host: "h7", Status: api.HostStatus{CPUs: 4, MemoryMiB: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := client.New(client.Config{URL: url, CAFile: s.CAFile(), Token: creds.Token})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, int) {
		return cli(t, "", append([]string{"--server", url, "--ca-file", filepath.Join(dir, "pki", "ca.crt"), "--token", s.AdminToken()}, args...)...)
	}

	if out, errOut, code := run("host", "cordon", "h7"); code != 0 || !strings.Contains(out, "Cordoned host h7") {
		t.Errorf("cordon: exit %d: %s%s", code, out, errOut)
	}
	if out, _, code := run("host", "list"); code != 0 || !strings.Contains(out, "unschedulable") {
		t.Errorf("host list after cordon: exit %d:\n%s", code, out)
	}
	if out, errOut, code := run("-o", "json", "host", "uncordon", "h7"); code != 0 || !strings.Contains(out, `"result": "uncordoned"`) {
		t.Errorf("uncordon -o json: exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := run("host", "revoke", "h7"); code != 0 || !strings.Contains(out, "must join again") {
		t.Errorf("revoke: exit %d: %s%s", code, out, errOut)
	}
	if _, err := agent.PutHostStatus(ctx, "h7", api.HostStatus{CPUs: 4, MemoryMiB: 4096}); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the revoked host's heartbeat: %v, want its token refused", err)
	}
	if _, errOut, code := run("host", "delete", "h8"); code != ExitFailure || !strings.Contains(errOut, `host "h8" not found`) {
		t.Errorf("delete of an unknown host: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("host", "cordon"); code != ExitUsage || !strings.Contains(errOut, "NAME") {
		t.Errorf("cordon without a name: exit %d: %s", code, errOut)
	}
	if out, errOut, code := run("host", "delete", "h7"); code != 0 || !strings.Contains(out, "Deleted host h7") {
		t.Errorf("delete: exit %d: %s%s", code, out, errOut)
	}
	if _, errOut, code := run("host", "show", "h7"); code != ExitFailure || !strings.Contains(errOut, `host "h7" not found`) {
		t.Errorf("show after delete: exit %d: %s", code, errOut)
	}
}
