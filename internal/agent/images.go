package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// imageCache keeps the images this host's VMs use, by content: a file is
// named for its SHA-256 and checked against it when fetched from the
// server. Cached files are read-only: they back VM disks.
type imageCache struct {
	c   *client.Client
	dir string
	// shared, when set, names the directory of a shared pool the host's
	// images are kept in instead of dir ("" for none): the other hosts of
	// the pool find there an image one of them fetched.
	shared func() string

	mu       sync.Mutex
	inflight map[string]*sync.Mutex // per digest
	// checked holds the files of a shared pool this host found whole (their
	// SHA-256 the image's), as they were when checked.
	checked map[string]fileStamp
}

// fileStamp is what tells a file changed since it was checked: its
// change time moves with every write and every setting of its times.
type fileStamp struct {
	size  int64
	mtime time.Time
	ctime syscall.Timespec
	ino   uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.ctime = sys.Ino, sys.Ctim
	}
	return st
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func newImageCache(c *client.Client, dir string) *imageCache {
	return &imageCache{c: c, dir: dir, inflight: map[string]*sync.Mutex{}, checked: map[string]fileStamp{}}
}

// path returns the local file of a ready image of the given kind, fetching
// it from the server the first time.
func (ic *imageCache) path(ctx context.Context, name, kind string) (string, error) {
	img, err := ic.c.AgentImage(ctx, name)
	if err != nil {
		return "", fmt.Errorf("looking up image %q: %w", name, err)
	}
	if img.Kind != kind {
		return "", fmt.Errorf("image %q is a %s image, not %s", name, img.Kind, kind)
	}
	if img.State != api.ImageReady || !sha256RE.MatchString(img.SHA256) {
		return "", fmt.Errorf("image %q is not ready", name)
	}
	dir := ic.dir
	if ic.shared != nil {
		if d := ic.shared(); d != "" {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return "", fmt.Errorf("making the pool's image directory: %w", err)
			}
			dir = d
		}
	}
	path := filepath.Join(dir, img.SHA256)
	ic.mu.Lock()
	l, ok := ic.inflight[img.SHA256]
	if !ok {
		l = &sync.Mutex{}
		ic.inflight[img.SHA256] = l
	}
	ic.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if dir == ic.dir {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		if err := ic.fetch(ctx, name, img.SHA256, path); err != nil {
			return "", err
		}
		return path, nil
	}
	// In a shared pool another host may have written the file: it is used
	// once this host found it to be a regular file holding the image's
	// SHA-256 (as it does for what it fetches), and checked again when it
	// changes; one that is not is left there, and the image is fetched
	// into this host's own cache instead.
	if ok, err := ic.checkShared(path, img.SHA256); ok {
		return path, nil
	} else if err != nil {
		slog.Warn("an image in the shared pool is not the image: fetching it into this host's cache", "image", name, "path", path, "err", err)
		local := filepath.Join(ic.dir, img.SHA256)
		if _, err := os.Stat(local); err == nil {
			return local, nil
		}
		if err := ic.fetch(ctx, name, img.SHA256, local); err != nil {
			return "", err
		}
		return local, nil
	}
	if err := ic.fetch(ctx, name, img.SHA256, path); err != nil {
		return "", err
	}
	if fi, err := os.Lstat(path); err == nil {
		ic.mu.Lock()
		ic.checked[path] = stampOf(fi)
		ic.mu.Unlock()
	}
	return path, nil
}

// checkShared tells whether the file at path in a shared pool is a
// regular file holding digest, hashing it unless it is as it was when
// last found so; false with no error when there is no file yet.
func (ic *imageCache) checkShared(path, digest string) (bool, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	st := stampOf(fi)
	ic.mu.Lock()
	seen, ok := ic.checked[path]
	ic.mu.Unlock()
	if ok && seen == st {
		return true, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return false, fmt.Errorf("%s has sha256 %s, want %s", path, got, digest)
	}
	ic.mu.Lock()
	ic.checked[path] = st
	ic.mu.Unlock()
	return true, nil
}

func (ic *imageCache) fetch(ctx context.Context, name, digest, path string) error {
	body, _, err := ic.c.AgentImageContent(ctx, name)
	if err != nil {
		return fmt.Errorf("fetching image %q: %w", name, err)
	}
	defer body.Close()
	f, err := os.CreateTemp(filepath.Dir(path), ".fetch-*")
	if err != nil {
		return fmt.Errorf("fetching image %q: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetching image %q: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("fetching image %q: content has sha256 %s, want %s", name, got, digest)
	}
	if err := os.Chmod(tmp, 0o400); err != nil {
		return fmt.Errorf("fetching image %q: %w", name, err)
	}
	return os.Rename(tmp, path)
}

// vmConfig resolves a VM's spec into what the driver needs on this host.
func (a *Agent) vmConfig(ctx context.Context, vm *api.VM) (hypervisor.VMConfig, error) {
	s := vm.Spec
	cfg := hypervisor.VMConfig{
		Name: vm.Name, UID: vm.UID, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, Cmdline: s.Boot.Cmdline,
		Firmware: s.Boot.Firmware,
	}
	for _, d := range s.Disks {
		dc := hypervisor.DiskConfig{Name: d.Name, SizeMiB: d.SizeMiB, Bus: d.Bus}
		if d.Image != "" {
			p, err := a.cache.path(ctx, d.Image, api.ImageDisk)
			if err != nil {
				return cfg, err
			}
			dc.BackingFile = p
		}
		cfg.Disks = append(cfg.Disks, dc)
	}
	nics, err := a.nicConfigs(vm)
	if err != nil {
		return cfg, err
	}
	cfg.NICs = nics
	if cfg.BootVolume, err = bootVolume(ctx, vm); err != nil {
		return cfg, err
	}
	if s.Boot.Kernel != "" {
		p, err := a.cache.path(ctx, s.Boot.Kernel, api.ImageKernel)
		if err != nil {
			return cfg, err
		}
		cfg.Kernel = p
	}
	if s.Boot.Initrd != "" {
		p, err := a.cache.path(ctx, s.Boot.Initrd, api.ImageInitrd)
		if err != nil {
			return cfg, err
		}
		cfg.Initrd = p
	}
	if ci := s.CloudInit; ci != nil {
		meta := ci.MetaData
		if meta == "" {
			meta = fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", vm.UID, vm.Name)
		}
		cfg.CloudInit = &hypervisor.CloudInitConfig{UserData: ci.UserData, MetaData: meta, NetworkConfig: ci.NetworkConfig}
	}
	return cfg, nil
}
