package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"

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
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func newImageCache(c *client.Client, dir string) *imageCache {
	return &imageCache{c: c, dir: dir, inflight: map[string]*sync.Mutex{}}
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
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := ic.fetch(ctx, name, img.SHA256, path); err != nil {
		return "", err
	}
	return path, nil
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
