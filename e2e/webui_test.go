package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestWebConsole runs the browser test (web/e2e/console.mjs) in Debian's
// Chromium against a real server with real TCG VMs. Its screenshots stay
// in web/test-results/screenshots for every run.
func TestWebConsole(t *testing.T) {
	requireQEMU(t)
	webDir := filepath.Join(repoRoot, "web")
	required := os.Getenv("POLYVISOR_BROWSER_TESTS") == "1"
	for _, need := range []string{"/usr/bin/chromium", filepath.Join(webDir, "node_modules", "playwright-core"), filepath.Join(webDir, "dist", "index.html")} {
		if _, err := os.Stat(need); err != nil {
			if required {
				t.Fatalf("the browser test needs %s: %v", need, err)
			}
			t.Skipf("the browser test needs %s (scripts/test.sh installs and builds it)", need)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.c.CreateProject(ctx, api.ProjectCreate{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"alice": api.RoleMember, "vic": api.RoleViewer}
	for u, role := range users {
		if _, err := srv.c.CreateUser(ctx, api.UserCreate{Name: u, Password: "pw-" + u + "-long-enough"}); err != nil {
			t.Fatal(err)
		}
		if err := srv.c.SetMember(ctx, "shop", u, role); err != nil {
			t.Fatal(err)
		}
	}
	shop := srv.c.WithProject("shop")
	importGuest(t, shop)
	keep := guestVM("keep")
	keep.PowerState = api.PowerStopped
	waitOK(t, shop, mustOp(t)(shop.CreateVM(ctx, keep, client.CreateOptions{})))

	shots := filepath.Join(webDir, "test-results", "screenshots")
	_ = os.RemoveAll(shots)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(webDir, "e2e", "console.mjs"))
	cmd.Dir = webDir
	cmd.Env = append(os.Environ(),
		"PV_URL=https://127.0.0.1:"+strconv.Itoa(srv.port),
		"PV_USER=alice", "PV_PASSWORD=pw-alice-long-enough",
		"PV_VIEWER=vic", "PV_VIEWER_PASSWORD=pw-vic-long-enough",
		"PV_PROJECT=shop", "PV_DISK="+imgDisk, "PV_KERNEL="+imgKernel, "PV_INITRD="+imgInitrd,
		"PV_KEEP_VM=keep", "PV_SHOTS="+shots,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("browser test:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed: %v", err)
	}
	for _, f := range []string{"dashboard.png", "vm.png", "serial.png", "console.png", "viewer.png"} {
		if fi, err := os.Stat(filepath.Join(shots, f)); err != nil || fi.Size() < 1000 {
			t.Errorf("screenshot %s: %v", f, err)
		}
	}
	// What the browser deleted is gone from the API too.
	if _, err := shop.GetVM(context.Background(), "web-e2e"); !client.IsNotFound(err) {
		t.Errorf("vm web-e2e after the browser deleted it: %v", err)
	}
}
