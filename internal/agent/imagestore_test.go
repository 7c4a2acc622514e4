package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestImagesInASharedPool: two hosts of a shared pool with images on keep
// their images in the pool: the first fetches an image from the server
// into it, the second finds it there and fetches nothing; a host of no
// such pool keeps its own cache. A file another host of the pool wrote
// in place of the image (a hostile host can: the pool is shared) is not
// used: a host that did not find it whole fetches the image into its own
// cache, and one that did notices the change.
func TestImagesInASharedPool(t *testing.T) {
	content := []byte("a disk image's bytes")
	sum := sha256.Sum256(content)
	var fetches atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/images/{project}/{name}", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Image{Meta: api.Meta{Name: "img", Project: "p"}, Kind: api.ImageDisk, State: api.ImageReady, SHA256: hex.EncodeToString(sum[:])})
	})
	mux.HandleFunc("GET /v1/agent/images/{project}/{name}/content", func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(content)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := client.New(client.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	poolDir := t.TempDir()
	shared := &api.Pool{Meta: api.Meta{Name: "nfs", Generation: 1}, Spec: api.PoolSpec{Kind: api.PoolShared, Path: poolDir, Hosts: []string{"h1", "h2"}, Images: true}}
	host := func(name string, pools ...*api.Pool) *imageCache {
		a := &Agent{cfg: Config{Host: name}, c: c, log: slog.Default()}
		a.cache = newImageCache(c, filepath.Join(t.TempDir(), "images"))
		if err := os.MkdirAll(a.cache.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		a.vols = newVolumes(a)
		a.cache.shared = a.vols.imageDir
		for _, p := range pools {
			a.vols.pool(p)
		}
		return a.cache
	}
	dirPool := &api.Pool{Meta: api.Meta{Name: "local", Generation: 1}, Spec: api.PoolSpec{Kind: api.PoolDir, Path: t.TempDir(), Hosts: []string{"h1"}}}
	h1, h2, h3 := host("h1", dirPool, shared), host("h2", shared), host("h3", dirPool)
	ctx := context.Background()
	p1, err := h1.path(ctx, "p/img", api.ImageDisk)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(poolDir, ".images", hex.EncodeToString(sum[:])); p1 != want {
		t.Fatalf("h1 keeps the image at %s, want %s", p1, want)
	}
	p2, err := h2.path(ctx, "p/img", api.ImageDisk)
	if err != nil || p2 != p1 {
		t.Fatalf("h2 reads the image at %s (%v), want %s", p2, err, p1)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1: the second host reads the pool's copy", n)
	}
	p3, err := h3.path(ctx, "p/img", api.ImageDisk)
	if err != nil || filepath.Dir(p3) != h3.dir {
		t.Fatalf("h3, of no image pool, keeps the image at %s (%v), want in %s", p3, err, h3.dir)
	}
	if b, err := os.ReadFile(p1); err != nil || string(b) != string(content) {
		t.Fatalf("the pool's copy: %q %v", b, err)
	}

	// A hostile host of the pool rewrites the copy, the same size, and
	// puts its times back; then makes it a symlink to one of h2's files.
	fi, _ := os.Stat(p1)
	if err := os.Chmod(p1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p1, []byte("a hostile image's bytes"[:len(content)]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p1, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	h4 := host("h4", shared)
	for _, h := range []*imageCache{h2, h4} {
		p, err := h.path(ctx, "p/img", api.ImageDisk)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != string(content) || filepath.Dir(p) != h.dir {
			t.Errorf("after the pool's copy was rewritten a host uses %s: %q %v, want the image in its own cache", p, b, err)
		}
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p1); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, p1); err != nil {
		t.Fatal(err)
	}
	if p, err := host("h5", shared).path(ctx, "p/img", api.ImageDisk); err != nil || p == p1 {
		t.Errorf("a symlink in the pool is used as the image: %s %v", p, err)
	}
}
