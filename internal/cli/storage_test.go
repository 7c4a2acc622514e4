package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestPoolAndVolumeCommands drives the pool and volume verbs against a
// real server with one registered host (no agent makes the files: the
// volume stays pending).
func TestPoolAndVolumeCommands(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	ctx := context.Background()
	jt, err := rs.srv.MintJoinToken(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: rs.url, CAFile: rs.caFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, api.AgentRegister{JoinToken: jt, Host: "h1", Status: api.HostStatus{State: api.HostReady, CPUs: 4, MemoryMiB: 4096}}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return cli(t, "", rs.asRoot(args...)...)
	}
	_, errOut, code := run("pool", "create", "p1", "--kind", "nfs", "--path", "/srv/p1", "--host", "h1")
	if code != ExitFailure || !strings.Contains(errOut, "--kind") {
		t.Fatalf("a bad kind: exit %d, stderr %q", code, errOut)
	}
	out, errOut, code := run("pool", "create", "p1", "--path", "/srv/p1", "--host", "h1", "--grant", "default")
	if code != 0 || !strings.Contains(out, "Path:") || !strings.Contains(out, "/srv/p1") {
		t.Fatalf("pool create: exit %d, %q %q", code, out, errOut)
	}
	if out, _, _ = run("pool", "list"); !strings.Contains(out, "p1") || !strings.Contains(out, "dir") {
		t.Fatalf("pool list: %q", out)
	}
	for _, c := range []struct {
		args []string
		text string
	}{
		{[]string{"pool", "create", "n1", "--kind", "nbd", "--path", "/srv/n1", "--host", "h1"}, "address"},
		{[]string{"pool", "images", "p1", "on"}, "shared pools only"},
		{[]string{"pool", "images", "p1", "maybe"}, "on or off"},
		{[]string{"vm", "create", "v1", "--root-pool", "p1"}, "--root-pool: needs --image"},
		{[]string{"vm", "create", "v1", "--root-volume", "d1", "--image", "img"}, "--root-volume"},
		{[]string{"vm", "create", "v1", "--image", "img", "--delete-root-volume"}, "--delete-root-volume"},
	} {
		if _, errOut, code := run(c.args...); code == 0 || !strings.Contains(errOut, c.text) {
			t.Fatalf("%v: exit %d, stderr %q, want %q", c.args, code, errOut, c.text)
		}
	}
	if out, errOut, code := run("pool", "create", "n1", "--kind", "nbd", "--path", "/srv/n1", "--host", "h1", "--address", "127.0.0.1:10809"); code != 0 || !strings.Contains(out, "nbd") {
		t.Fatalf("nbd pool create: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := run("pool", "delete", "n1"); code != 0 {
		t.Fatalf("nbd pool delete: exit %d, %q", code, errOut)
	}
	_, errOut, code = run("volume", "create", "d1", "--pool", "p1")
	if code != ExitFailure || !strings.Contains(errOut, "--size") {
		t.Fatalf("a blank volume without a size: exit %d, stderr %q", code, errOut)
	}
	if out, errOut, code = run("volume", "create", "d1", "--pool", "p1", "--size", "1G", "--no-wait"); code != 0 || !strings.Contains(out, "1G") {
		t.Fatalf("volume create: exit %d, %q %q", code, out, errOut)
	}
	if out, _, _ = run("volume", "list"); !strings.Contains(out, "d1") || !strings.Contains(out, api.VolumePending) {
		t.Fatalf("volume list: %q", out)
	}
	_, errOut, code = run("volume", "attach", "d1", "ghost")
	if code != ExitFailure || !strings.Contains(errOut, "not ready") && !strings.Contains(errOut, "pending") && !strings.Contains(errOut, "ghost") {
		t.Fatalf("attach to a missing vm: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run("pool", "delete", "p1")
	if code != ExitFailure || !strings.Contains(errOut, "holds 1 volumes") {
		t.Fatalf("deleting a pool with a volume: exit %d, stderr %q", code, errOut)
	}
	if out, errOut, code = run("volume", "delete", "d1"); code != 0 || !strings.Contains(out, "being deleted") {
		t.Fatalf("volume delete: exit %d, %q %q", code, out, errOut)
	}
}
