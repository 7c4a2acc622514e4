package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestImagesShareTheirContent: images with the same bytes, in different
// projects, are one file in the image store, each readable; deleting one
// keeps the file for the other, deleting the last removes it; a file an
// older server kept by the image's UID is served, then moved to the blob
// store.
func TestImagesShareTheirContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	raw := make([]byte, 256<<10)
	rand.Read(raw)
	upload := func(project, name string) *api.Image {
		t.Helper()
		c := e.super.WithProject(project)
		op, err := c.UploadImage(ctx, name, api.ImageDisk, bytes.NewReader(raw), int64(len(raw)), nil)
		if err != nil {
			t.Fatalf("uploading %s/%s: %v", project, name, err)
		}
		if op, err = c.WaitOperation(ctx, op.ID, nil); err != nil || op.Status != api.OpSucceeded {
			t.Fatalf("importing %s/%s: %+v %v", project, name, op, err)
		}
		img, err := c.GetImage(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	var stored []byte // what the store made of raw, the same for each
	read := func(project, name string) error {
		body, _, err := e.super.WithProject(project).ImageContent(ctx, name)
		if err != nil {
			return err
		}
		defer body.Close()
		got, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		if stored == nil {
			stored = got
		} else if !bytes.Equal(got, stored) {
			t.Fatalf("%s/%s reads %d other bytes", project, name, len(got))
		}
		return nil
	}
	a, b := upload("pa", "same-a"), upload("pb", "same-b")
	if a.SHA256 != b.SHA256 || a.UID == b.UID {
		t.Fatalf("two uploads of the same bytes: %s (%s) and %s (%s)", a.SHA256, a.UID, b.SHA256, b.UID)
	}
	blob := filepath.Join(e.s.imageDir, "sha256", a.SHA256)
	for _, uid := range []string{a.UID, b.UID} {
		if _, err := os.Stat(filepath.Join(e.s.imageDir, uid)); err == nil {
			t.Fatalf("an image's file is kept by its UID %s beside its blob", uid)
		}
	}
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("no blob for the content: %v", err)
	}
	for _, r := range [][2]string{{"pa", "same-a"}, {"pb", "same-b"}} {
		if err := read(r[0], r[1]); err != nil {
			t.Fatalf("reading %s/%s: %v", r[0], r[1], err)
		}
	}
	if _, err := e.super.WithProject("pa").DeleteImage(ctx, "same-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the blob went with one of its two images: %v", err)
	}
	if err := read("pb", "same-b"); err != nil {
		t.Fatalf("the other image after the delete: %v", err)
	}

	// The layout of an older server: the file named by the image's UID.
	legacy := filepath.Join(e.s.imageDir, b.UID)
	if err := os.Rename(blob, legacy); err != nil {
		t.Fatal(err)
	}
	if err := read("pb", "same-b"); err != nil {
		t.Fatalf("an image kept by its UID: %v", err)
	}
	e.s.syncImages(ctx)
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the file kept by UID was not moved to the blob store: %v", err)
	}
	if _, err := os.Stat(legacy); err == nil {
		t.Fatal("the file kept by UID is still there")
	}

	if _, err := e.super.WithProject("pb").DeleteImage(ctx, "same-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(blob); err == nil {
		t.Fatal("the blob outlived its last image")
	}
	// A blob no image has (its image was deleted while the server was
	// down) is swept.
	stray := filepath.Join(e.s.imageDir, "sha256", "ab"+a.SHA256[2:])
	if err := os.WriteFile(stray, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	e.s.syncImages(ctx)
	if _, err := os.Stat(stray); err == nil {
		t.Fatal("a blob of no image was kept")
	}
}
