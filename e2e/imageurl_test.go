package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestImageImportFromURL: the server fetches an image over http, detects
// its format (a vmdk here), stores qcow2 with its sha256, and serves it back
// byte for byte. The web server is on loopback, which the server fetches
// from only once a superadmin allows it.
func TestImageImportFromURL(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	vmdk := filepath.Join(dir, "disk.vmdk")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", filepath.Join(guestDir, "disk.qcow2"), vmdk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	web := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer web.Close()

	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()
	refused := mustOp(t)(c.ImportImageURL(ctx, api.ImageCreate{Name: "from-url", URL: web.URL + "/disk.vmdk"}))
	if done, err := c.WaitOperation(ctx, refused.ID, nil); err != nil || done.Status != api.OpFailed ||
		!strings.Contains(done.Error.Message, "a loopback address") {
		t.Fatalf("import from loopback by default: %+v %v, want it refused", done, err)
	}
	if _, err := c.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, mustOp(t)(c.ImportImageURL(ctx, api.ImageCreate{Name: "from-url", URL: web.URL + "/disk.vmdk"})))
	img, err := c.GetImage(ctx, "from-url")
	if err != nil {
		t.Fatal(err)
	}
	if img.SourceFormat != "vmdk" || img.Format != "qcow2" || img.VirtualSizeBytes != 64<<20 || img.State != api.ImageReady {
		t.Fatalf("image: %+v", img)
	}
	body, _, err := c.ImageContent(ctx, "from-url")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	h := sha256.New()
	f, _ := os.Create(filepath.Join(dir, "back.qcow2"))
	defer f.Close()
	buf := make([]byte, 1<<16)
	for {
		n, err := body.Read(buf)
		h.Write(buf[:n])
		f.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != img.SHA256 {
		t.Fatalf("content sha256 %s, image says %s", got, img.SHA256)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", vmdk, filepath.Join(dir, "back.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("stored image differs from the source: %v: %s", err, out)
	}

	// A URL that answers 404 fails the import and leaves nothing.
	op := mustOp(t)(c.ImportImageURL(ctx, api.ImageCreate{Name: "missing", URL: web.URL + "/nope.qcow2"}))
	done, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil || done.Status != api.OpFailed || done.Error == nil {
		t.Fatalf("import of a missing URL: %+v %v", done, err)
	}
	if _, err := c.GetImage(ctx, "missing"); !client.IsNotFound(err) {
		t.Fatalf("a failed import left its image behind: GET answers %v, want 404", err)
	}
	// Ready images are blobs under images/sha256; an import under way is
	// a file beside it.
	if files := listDir(t, filepath.Join(srv.dataDir, "images")); len(files) != 1 || files[0] != "sha256" {
		t.Fatalf("image dir holds %v, want only the blob store", files)
	}
	if blobs := listDir(t, filepath.Join(srv.dataDir, "images", "sha256")); len(blobs) != 1 {
		t.Fatalf("blob store holds %v, want only the imported image", blobs)
	}
}
