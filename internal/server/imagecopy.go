package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/blobstore"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Images are replicated to every server: each keeps a copy of every ready
// image's blob (its file, named by its content: internal/blobstore) in its
// own image store, so that any server serves any image to agents and
// users, and an image outlives the server that imported it.
// A server missing a copy (it joined later, or was down when the image
// was imported) fetches it from a peer that has it and keeps it only if
// its size and SHA-256 are the ones the image's record holds; a copy
// whose image is gone is removed. A request for an image whose copy has
// not arrived yet fetches it first.
//
// (A shared pool, such as an NFS mount, would save the copies' disk but
// add a dependency every server's image reads and imports go through,
// and one that fails on its own; copies need nothing but the servers.)

// imageCopies deduplicates concurrent fetches of one image.
type imageCopies struct {
	mu       sync.Mutex
	inflight map[string]chan struct{} // by image UID
}

// replicateImages keeps this server's image store in step with the
// images' records until ctx ends.
func (s *Server) replicateImages(ctx context.Context) {
	changes := s.images.Subscribe(ctx)
	s.syncImages(ctx)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			switch {
			case c.Type == store.Delete:
				s.removeImageCopy(c.Obj)
			case c.Obj.State == api.ImageReady:
				if err := s.ensureImageFile(ctx, c.Obj); err != nil && ctx.Err() == nil {
					s.log.Warn("copying an image from a peer", "image", c.Obj.Key(), "err", err)
				}
			}
		case <-tick.C:
			s.syncImages(ctx)
		}
	}
}

// syncImages fetches the copies this server misses and removes those of
// images that are gone.
func (s *Server) syncImages(ctx context.Context) {
	known := map[string]*api.Image{} // by UID
	for _, img := range listAll(s.images, nil) {
		known[img.UID] = img
		if img.State != api.ImageReady {
			continue
		}
		if err := s.ensureImageFile(ctx, img); err != nil && ctx.Err() == nil {
			s.log.Warn("copying an image from a peer", "image", img.Key(), "err", err)
		}
	}
	entries, err := os.ReadDir(s.imageDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		// Dot files are imports and copies under way.
		if strings.HasPrefix(name, ".") || name == "sha256" {
			continue
		}
		img := known[name]
		switch {
		case img == nil:
			if err := os.Remove(filepath.Join(s.imageDir, name)); err == nil {
				s.log.Info("removed the copy of an image that is gone", "uid", name)
			}
		case img.State == api.ImageReady && blobstore.Valid(img.SHA256):
			// Kept by its UID by an older server: it becomes its blob.
			cur := img
			err := s.ctl.Imports.Blobs().Put(filepath.Join(s.imageDir, name), img.SHA256, func() error {
				if now, ok := s.images.Get(cur.Key()); !ok || now.UID != cur.UID {
					return errImageGone
				}
				return nil
			})
			if err != nil && !errors.Is(err, errImageGone) {
				s.log.Warn("moving an image's file to the blob store", "image", img.Key(), "err", err)
			}
		}
	}
	// Blobs no ready image has any more (their last image was deleted
	// while this server was down) go.
	gone, err := s.ctl.Imports.Blobs().Sweep(func(digest string) bool { return s.ctl.Imports.Shared(digest, "") })
	if err != nil {
		s.log.Warn("sweeping the image blobs", "err", err)
	}
	for _, d := range gone {
		s.log.Info("removed an image blob no image has", "sha256", d)
	}
}

// errImageGone: the image a file was meant for was deleted meanwhile.
var errImageGone = errors.New("the image is gone")

// removeImageCopy removes this server's copy of a deleted image.
func (s *Server) removeImageCopy(img *api.Image) {
	if img == nil || img.UID == "" {
		return
	}
	if err := s.ctl.Imports.Release(img); err != nil {
		s.log.Warn("removing the copy of a deleted image", "image", img.Key(), "err", err)
	}
}

// ensureImageFile makes sure this server holds the file of a ready image,
// fetching it from a peer that has it.
func (s *Server) ensureImageFile(ctx context.Context, img *api.Image) error {
	path := s.ctl.Imports.Path(img)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	s.copies.mu.Lock()
	if s.copies.inflight == nil {
		s.copies.inflight = map[string]chan struct{}{}
	}
	if wait, ok := s.copies.inflight[img.UID]; ok {
		s.copies.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		return fmt.Errorf("image %q: no copy could be fetched from the other servers", img.Name)
	}
	done := make(chan struct{})
	s.copies.inflight[img.UID] = done
	s.copies.mu.Unlock()
	defer func() {
		s.copies.mu.Lock()
		delete(s.copies.inflight, img.UID)
		s.copies.mu.Unlock()
		close(done)
	}()
	peers, err := s.peers(ctx)
	if err != nil {
		return fmt.Errorf("finding a server with a copy of image %q: %w", img.Name, err)
	}
	var errs []error
	for _, p := range peers {
		err := s.copyImageFrom(ctx, p, img)
		if err == nil {
			s.log.Info("copied an image from a peer", "image", img.Key(), "from", p.name, "bytes", img.SizeBytes)
			return nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", p.name, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("image %q: no other server is up to copy it from", img.Name)
	}
	return fmt.Errorf("image %q: no copy could be fetched: %w", img.Name, errors.Join(errs...))
}

// copyImageFrom fetches an image's file from a peer into the blob store,
// keeping it only when its size and SHA-256 match the image's record.
func (s *Server) copyImageFrom(ctx context.Context, p peerServer, img *api.Image) error {
	body, _, err := p.c.PeerImageBlob(ctx, img.UID)
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := s.ctl.Imports.TempFile("copy")
	if err != nil {
		return fmt.Errorf("making a file for the copy: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	// Never more than the record says: a peer cannot fill the disk.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, img.SizeBytes+1))
	if err != nil {
		return fmt.Errorf("receiving the copy: %w", err)
	}
	if n != img.SizeBytes {
		return fmt.Errorf("the copy has %d bytes, the image %d", n, img.SizeBytes)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != img.SHA256 {
		return fmt.Errorf("the copy's sha256 is %s, the image's %s", got, img.SHA256)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("saving the copy: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("saving the copy: %w", err)
	}
	// Stored as the blob of its content, unless the image was deleted
	// meanwhile.
	ok = true // Put takes the file, whatever happens
	err = s.ctl.Imports.Blobs().Put(tmp, img.SHA256, func() error {
		if cur, exists := s.images.Get(img.Key()); !exists || cur.UID != img.UID {
			return errImageGone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errImageGone) {
		return fmt.Errorf("saving the copy: %w", err)
	}
	return nil
}
