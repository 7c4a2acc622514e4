package e2e

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestWebConsole runs the browser test (web/e2e/console.mjs) in Debian's
// Chromium against a real server with real TCG VMs, a real libvirtd where
// one runs, and three users: a member, a viewer and a superadmin. Its
// screenshots stay in web/test-results/screenshots for every run. What the
// browser did is then checked through the API.
func TestWebConsole(t *testing.T) {
	requireQEMU(t)
	webDir := filepath.Join(repoRoot, "web")
	for _, need := range []string{"/usr/bin/chromium", filepath.Join(webDir, "node_modules", "playwright-core"), filepath.Join(webDir, "dist", "index.html")} {
		if _, err := os.Stat(need); err != nil {
			peer.Missing(t, "the browser test needs %s (scripts/test.sh installs and builds it): %v", need, err)
		}
	}
	node := peer.Binary(t, "node", "apt-get install nodejs")
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
	if _, err := srv.c.CreateUser(ctx, api.UserCreate{Name: "sam", Password: "pw-sam-long-enough", Superadmin: true}); err != nil {
		t.Fatal(err)
	}
	shop := srv.c.WithProject("shop")
	importGuest(t, shop)
	keep := guestVM("keep")
	keep.PowerState = api.PowerStopped
	waitOK(t, shop, mustOp(t)(shop.CreateVM(ctx, keep, client.CreateOptions{})))

	// What the page must show of the host is what the API says of it.
	host, err := srv.c.GetHost(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	if host.Status.Accel == "" || host.Status.AccelReason == "" || host.Status.Capacity.VCPUs == 0 {
		t.Fatalf("the host reports accel %q, reason %q, capacity %+v: the page would have nothing to show", host.Status.Accel, host.Status.AccelReason, host.Status.Capacity)
	}
	upload := filepath.Join(t.TempDir(), "web-upload.img")
	if err := os.WriteFile(upload, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ova := webOVA(t, t.TempDir())
	libvirt := ""
	if c, err := net.DialTimeout("unix", libvirtSocket, time.Second); err == nil {
		c.Close()
		libvirt = "qemu:///system"
	} else {
		peer.Without(t, "no libvirtd (%v): the browser checks only that the API's refusal of a provider is shown", err)
	}

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
		"PV_ADMIN=sam", "PV_ADMIN_PASSWORD=pw-sam-long-enough",
		"PV_PROJECT=shop", "PV_DISK="+imgDisk, "PV_KERNEL="+imgKernel, "PV_INITRD="+imgInitrd,
		"PV_KEEP_VM=keep", "PV_SHOTS="+shots, "PV_UPLOAD="+upload,
		"PV_HOST=local", "PV_ACCEL="+host.Status.Accel, "PV_ACCEL_REASON="+host.Status.AccelReason,
		"PV_VCPU_CAPACITY="+strconv.Itoa(host.Status.Capacity.VCPUs), "PV_LIBVIRT="+libvirt,
		"PV_OVA="+ova, "PV_OVA_NAME="+webOVAName,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("browser test:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed: %v", err)
	}
	for _, f := range []string{"dashboard", "vm", "serial", "console", "images", "hosts", "host", "token-secret", "account",
		"project", "quota", "providers", "users", "viewer", "theme", "capacity", "import", "migrations", "migration-succeeded"} {
		checkScreenshot(t, filepath.Join(shots, f+".png"))
	}
	if libvirt != "" {
		checkScreenshot(t, filepath.Join(shots, "provider.png"))
	}

	// What the browser did is what the API holds.
	bg := context.Background()
	if _, err := shop.GetVM(bg, "web-e2e"); !client.IsNotFound(err) {
		t.Errorf("vm web-e2e after the browser deleted it: %v", err)
	}
	if _, err := shop.GetImage(bg, "web-upload"); !client.IsNotFound(err) {
		t.Errorf("image web-upload after the browser deleted it: %v", err)
	}
	if p, err := srv.c.GetProject(bg, "web-proj"); err != nil {
		t.Errorf("the project made in the browser: %v", err)
	} else {
		if p.Spec.Members["alice"] != api.RoleViewer {
			t.Errorf("alice in web-proj: %q, want viewer (added as operator, then changed)", p.Spec.Members["alice"])
		}
		if p.Spec.MaxLeaseSeconds != 86400 || p.Spec.Description != "made in the browser" {
			t.Errorf("web-proj: lease %d, description %q", p.Spec.MaxLeaseSeconds, p.Spec.Description)
		}
	}
	if q, err := srv.c.GetQuota(bg, "shop"); err != nil {
		t.Error(err)
	} else if q.Limits.VCPUs == nil || *q.Limits.VCPUs != 8 || q.Limits.MemoryMiB == nil || *q.Limits.MemoryMiB != 4096 {
		t.Errorf("the quota of shop set in the browser: %+v", q.Limits)
	}
	if toks, err := srv.c.ListTokens(bg, "alice"); err != nil {
		t.Error(err)
	} else {
		for _, tk := range toks {
			if tk.Name == "web-token" {
				t.Errorf("token web-token after the browser revoked it: %+v", tk)
			}
		}
	}
	if _, err := srv.c.GetUser(bg, "web-user"); !client.IsNotFound(err) {
		t.Errorf("user web-user after the browser deleted it: %v", err)
	}
	if _, err := shop.GetVMMigration(bg, "web-import"); !client.IsNotFound(err) {
		t.Errorf("migration web-import after the browser deleted it: %v", err)
	}
	if m, err := shop.GetVMMigration(bg, "web-moved"); err != nil || m.Status.State != api.VMMigrationSucceeded ||
		len(m.Status.VMs) != 1 || m.Status.VMs[0].Host != "local" {
		t.Errorf("migration web-moved, started in the browser: %+v %v", m, err)
	} else if vm, err := shop.GetVM(bg, m.Status.VMs[0].Name); err == nil && vm.Spec.Deletion == nil {
		t.Errorf("vm %s, moved and deleted in the browser, is not being deleted", vm.Name)
	} else if err != nil && !client.IsNotFound(err) {
		t.Error(err)
	}
	if _, err := srv.c.GetProvider(bg, "web-libvirt"); !client.IsNotFound(err) {
		t.Errorf("provider web-libvirt after the browser removed it: %v", err)
	}
	if h, err := srv.c.GetHost(bg, "local"); err != nil || h.Spec.Unschedulable {
		t.Errorf("host local after the browser cordoned and uncordoned it: %+v %v", h, err)
	}
}

// checkScreenshot holds a screenshot to showing a page: a PNG as large
// as the browser's window, with the many colours of rendered text, and
// below the top bar (whose 64 pixels every page has) more than one colour:
// content, not a blank or half-loaded page.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	if err := screenshotShowsAPage(path); err != nil {
		t.Errorf("screenshot %s: %v", filepath.Base(path), err)
	}
}

func screenshotShowsAPage(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return fmt.Errorf("not a PNG: %w", err)
	}
	b := img.Bounds()
	if b.Dx() < 1000 || b.Dy() < 500 {
		return fmt.Errorf("%dx%d, smaller than the browser's window", b.Dx(), b.Dy())
	}
	colours := map[[3]uint32]int{}
	below := map[[3]uint32]int{}
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			c := [3]uint32{r >> 8, g >> 8, bl >> 8}
			colours[c]++
			if y-b.Min.Y >= 64 {
				below[c]++
				n++
			}
		}
	}
	top := 0
	for _, c := range below {
		top = max(top, c)
	}
	if other := 1 - float64(top)/float64(n); len(colours) < 50 || other < 0.05 {
		return fmt.Errorf("%d colours, and below the top bar %.1f%% is not its commonest colour: a blank page", len(colours), 100*other)
	}
	return nil
}

// TestScreenshotCheckRefusesBlankPages: the check of the browser test's
// screenshots fails a blank page and one that shows only the top bar.
func TestScreenshotCheckRefusesBlankPages(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, paint func(x, y int) color.RGBA) string {
		img := image.NewRGBA(image.Rect(0, 0, 1400, 900))
		for y := range 900 {
			for x := range 1400 {
				img.SetRGBA(x, y, paint(x, y))
			}
		}
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	bg := color.RGBA{0xf6, 0xf7, 0xf9, 0xff}
	blank := write("blank.png", func(int, int) color.RGBA { return bg })
	// A top bar with "text" of many shades, and nothing under it.
	barOnly := write("bar.png", func(x, y int) color.RGBA {
		if y < 48 {
			return color.RGBA{uint8(x % 200), uint8(y * 5), uint8((x + y) % 256), 0xff}
		}
		return bg
	})
	// A page: the same bar, and a card of text under it.
	page := write("page.png", func(x, y int) color.RGBA {
		if y < 48 || (y > 100 && y < 400 && x > 16 && x < 1384) {
			return color.RGBA{uint8(x % 200), uint8(y % 250), uint8((x + y) % 256), 0xff}
		}
		return bg
	})
	for _, p := range []string{blank, barOnly} {
		if err := screenshotShowsAPage(p); err == nil {
			t.Errorf("%s passes for a page", filepath.Base(p))
		}
	}
	if err := screenshotShowsAPage(page); err != nil {
		t.Errorf("a page with content: %v", err)
	}
}
